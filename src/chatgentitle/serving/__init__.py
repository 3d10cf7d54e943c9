"""`chatgentitle serve`: jobs (bounded queues, deadlines), api (/v1/titles), openai_routes, web
(Gradio), app (all of it on one server)."""
