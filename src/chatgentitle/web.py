"""The Gradio web UI: the seed project's Instruction and Input boxes, options, streaming, candidates.

    demo = build_demo(TitleGenerator.load())
"""

from __future__ import annotations

from dataclasses import replace

import gradio as gr

from chatgentitle.generate import GenerationOptions
from chatgentitle.prompt import SEED_INSTRUCTION
from chatgentitle.ranking import Ranker

EXAMPLE_ABSTRACT = (
    "Large language models are increasingly used to draft scientific text, yet choosing a title that "
    "is faithful, concise and distinctive remains hard. We fine-tune small open models with low-rank "
    "adapters on abstract-title pairs from arXiv and rank several candidates by their semantic "
    "similarity to the abstract, their length and their use of worn phrases."
)


def build_demo(generator, ranker: Ranker | None = None) -> gr.Blocks:
    instruction = getattr(getattr(generator, "template", None), "instruction", SEED_INSTRUCTION)
    default = GenerationOptions()

    def write_titles(instruction, abstract, max_new_tokens, num_beams, do_sample, temperature, top_p,
                     top_k, repetition_penalty, no_repeat_ngram_size, num_candidates):
        if not abstract or not abstract.strip():
            raise gr.Error("Paste an abstract into the Input box.")
        options = GenerationOptions(
            max_new_tokens=int(max_new_tokens), num_beams=int(num_beams), do_sample=bool(do_sample),
            temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
            repetition_penalty=float(repetition_penalty), no_repeat_ngram_size=int(no_repeat_ngram_size),
            num_candidates=int(num_candidates),
        )
        title = ""
        if not options.beam_search and hasattr(generator, "stream"):
            for title in generator.stream(abstract, replace(options, num_candidates=1), instruction):
                yield title, []
        candidates = generator.generate([abstract], options, instruction)[0]
        if ranker:
            rows = [[c.title, c.score, c.faithfulness, c.words, ", ".join(c.cliches), c.known_match or ""]
                    for c in ranker.rank(abstract, candidates)]
        else:
            rows = [[t, None, None, len(t.split()), "", ""] for t in candidates]
        yield (rows[0][0] if rows else title), rows

    with gr.Blocks(title="ChatGenTitle") as demo:
        gr.Markdown("# ChatGenTitle\nWrite a title for a paper from its abstract.")
        with gr.Row():
            with gr.Column(scale=3):
                instruction_box = gr.Textbox(label="Instruction", value=instruction, lines=2)
                input_box = gr.Textbox(label="Input", placeholder="Paste the abstract here", lines=10,
                                       elem_id="abstract-input")
                with gr.Accordion("Generation options", open=False):
                    max_new_tokens = gr.Slider(4, 128, value=default.max_new_tokens, step=1, label="max_new_tokens")
                    num_beams = gr.Slider(1, 8, value=default.num_beams, step=1, label="num_beams")
                    do_sample = gr.Checkbox(value=default.do_sample, label="do_sample")
                    temperature = gr.Slider(0.05, 2.0, value=default.temperature, label="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=default.top_p, label="top_p")
                    top_k = gr.Slider(0, 200, value=default.top_k, step=1, label="top_k")
                    repetition_penalty = gr.Slider(1.0, 2.0, value=default.repetition_penalty,
                                                   label="repetition_penalty")
                    no_repeat_ngram_size = gr.Slider(0, 6, value=default.no_repeat_ngram_size, step=1,
                                                     label="no_repeat_ngram_size")
                    num_candidates = gr.Slider(1, 8, value=3, step=1, label="num_candidates")
                submit = gr.Button("Generate title", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                title_box = gr.Textbox(label="Title", lines=2, elem_id="title-output")
                table = gr.Dataframe(
                    headers=["title", "score", "faithfulness", "words", "clichés", "known paper"],
                    label="Ranked candidates", wrap=True,
                )
        gr.Examples([[instruction, EXAMPLE_ABSTRACT]], [instruction_box, input_box])
        inputs = [instruction_box, input_box, max_new_tokens, num_beams, do_sample, temperature, top_p,
                  top_k, repetition_penalty, no_repeat_ngram_size, num_candidates]
        submit.click(write_titles, inputs, [title_box, table], concurrency_limit=1)
    return demo
