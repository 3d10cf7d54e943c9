"""The Gradio web UI: the seed project's Instruction and Input boxes, options, streaming, candidates.

    demo = build_demo(TitleGenerator.load())
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import get_type_hints

import gradio as gr

from chatgentitle.config import GenerationOptions, field_docs
from chatgentitle.generate import TitleSource, titles
from chatgentitle.ranking import Ranker

EXAMPLE_ABSTRACT = (
    "Large language models are increasingly used to draft scientific text, yet choosing a title that "
    "is faithful, concise and distinctive remains hard. We fine-tune small open models with low-rank "
    "adapters on abstract-title pairs from arXiv and rank several candidates by their semantic "
    "similarity to the abstract, their length and their use of worn phrases."
)


OPTION_FIELDS = dataclasses.fields(GenerationOptions)
OPTION_TYPES = get_type_hints(GenerationOptions)


def option_input(option: dataclasses.Field):
    """A checkbox or a slider for one GenerationOptions field: its bounds, default and help."""
    help_text = field_docs(GenerationOptions)[option.name]
    if OPTION_TYPES[option.name] is bool:
        return gr.Checkbox(value=option.default, label=option.name, info=help_text)
    low, high = option.metadata["range"]
    step = 1 if OPTION_TYPES[option.name] is int else 0.01
    return gr.Slider(low, high, value=option.default, step=step, label=option.name, info=help_text)


def build_demo(generator: TitleSource, ranker: Ranker | None = None) -> gr.Blocks:
    instruction = generator.instruction

    def write_titles(instruction, abstract, *values):
        if not abstract or not abstract.strip():
            raise gr.Error("Paste an abstract into the Input box.")
        options = GenerationOptions(**{f.name: OPTION_TYPES[f.name](v) for f, v in zip(OPTION_FIELDS, values,
                                                                                        strict=True)})
        if not options.beam_search and not options.by_consensus:  # greedy and sampling stream
            for title in generator.stream(abstract, replace(options, num_candidates=1), instruction):
                yield title, []
        candidates = titles(generator, [abstract], options, ranker, instruction)[0]
        rows = [[c.title, c.score, c.faithfulness, c.words, ", ".join(c.cliches), c.known_match or ""]
                for c in candidates]
        yield candidates[0].title, rows

    with gr.Blocks(title="ChatGenTitle") as demo:
        gr.Markdown("# ChatGenTitle\nWrite a title for a paper from its abstract.")
        with gr.Row():
            with gr.Column(scale=3):
                instruction_box = gr.Textbox(label="Instruction", value=instruction, lines=2)
                input_box = gr.Textbox(label="Input", placeholder="Paste the abstract here", lines=10,
                                       elem_id="abstract-input")
                with gr.Accordion("Generation options", open=False):
                    option_inputs = [option_input(option) for option in OPTION_FIELDS]
                submit = gr.Button("Generate title", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                title_box = gr.Textbox(label="Title", lines=2, elem_id="title-output")
                table = gr.Dataframe(
                    headers=["title", "score", "faithfulness", "words", "clichés", "known paper"],
                    label="Ranked candidates", wrap=True,
                )
        gr.Examples([[instruction, EXAMPLE_ABSTRACT]], [instruction_box, input_box])
        inputs = [instruction_box, input_box, *option_inputs]
        submit.click(write_titles, inputs, [title_box, table], concurrency_limit=1)
    return demo
