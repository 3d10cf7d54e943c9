"""Models out: hf (a merged Hugging Face checkpoint) and gguf_file (llama.cpp, Ollama)."""
