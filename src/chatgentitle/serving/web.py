"""The Gradio web UI: the seed project's Instruction and Input boxes, options, candidates.

    demo = build_demo(app.state.service)     # the TitleService of server.create_app

It submits to the server's TitleService like the API does (same bounds, queue and deadline) and
decodes once: a plan that streams shows the title as it grows; any other shows a progress bar
(from the measured cost of that decoding) until its candidates arrive.
"""

from __future__ import annotations

import dataclasses
import queue
import time
from typing import get_type_hints

import gradio as gr

from chatgentitle.config import bounds, field_docs
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.serving.jobs import (
    MAX_ABSTRACT_CHARS,
    MAX_INSTRUCTION_CHARS,
    MAX_TITLE_CHARS,
    Busy,
    TitleService,
    check_abstract,
)
from chatgentitle.titling.files import verdict_lines
from chatgentitle.titling.ranking import ORDER, Verdict

EXAMPLE_ABSTRACT = (
    "Large language models are increasingly used to draft scientific text, yet choosing a title that "
    "is faithful, concise and distinctive remains hard. We fine-tune small open models with low-rank "
    "adapters on abstract-title pairs from arXiv and rank several candidates by their semantic "
    "similarity to the abstract, their length and their use of worn phrases."
)
COLUMNS = ["title", "ranker score", "faithfulness", "words", "clichés", "known paper"]
# the title column takes half the page; the numbers need a few characters each
COLUMN_WIDTHS = ["50%", "8%", "11%", "7%", "12%", "12%"]
STEERING = ("include", "words")  # their own boxes, above the options
OPTION_FIELDS = [f for f in dataclasses.fields(GenerationOptions) if f.name not in STEERING]
OPTION_TYPES = get_type_hints(GenerationOptions)
TICK_SECONDS = 0.25  # how often the page hears how the decoding goes
# Gradio keeps each session's component values (~65 KB here) for its 10,000 most recent sessions, and
# every call of its call API is a new session: 650 MB that callers could fill. The page keeps no state
# between calls, so a session forgotten early loses nothing.
WEB_SESSIONS = 256
RELATED = 5  # papers like yours shown beside the title, when the server has a paper index


def option_input(option: dataclasses.Field, defaults: GenerationOptions):
    """A checkbox or a slider for one GenerationOptions field: its bounds, the model's default, its help."""
    help_text, value = field_docs(GenerationOptions)[option.name], getattr(defaults, option.name)
    if OPTION_TYPES[option.name] is bool:
        return gr.Checkbox(value=value, label=option.name, info=help_text)
    low, high = option.metadata["range"]
    step = 1 if OPTION_TYPES[option.name] is int else 0.01
    return gr.Slider(low, high, value=value, step=step, label=option.name, info=help_text,
                     elem_id=f"option-{option.name}")


def read_options(values, include: str = "", words: float | None = 0) -> GenerationOptions:
    """The option widgets' values as GenerationOptions, within the API's bounds (gr.Error outside);
    `include`: one phrase per line; `words`: 0 for any length."""
    try:
        chosen = {f.name: OPTION_TYPES[f.name](v) for f, v in zip(OPTION_FIELDS, values, strict=True)}
        phrases = tuple(line.strip() for line in (include or "").splitlines() if line.strip())
        return GenerationOptions(**chosen, include=phrases, words=int(words) if words else None)
    except (TypeError, ValueError) as err:
        raise gr.Error(str(err)) from None


def verdict_text(verdict: Verdict | None) -> str:
    """The verdict on the author's title, as Markdown (empty when none was judged)."""
    if verdict is None:
        return ""
    text = verdict_lines(verdict).strip().replace("your title:", "**Your title**:", 1)
    return text.replace("\n  more likely: ", "\n- more likely: ").replace("\n  … and", "\n- … and")


def related_text(related) -> str:
    """Papers like the abstract, as Markdown: similarity, a link to the paper, its title (empty: none asked)."""
    if not related:
        return ""
    lines = [f"- {n.similarity:.2f} [{n.title}](https://arxiv.org/abs/{n.id}) ({n.id})" for n in related]
    return "**Papers like yours** (similarity to your abstract):\n" + "\n".join(lines)


def rows(candidates) -> list[list]:
    """One row per candidate, best first; scores to 3 places (blank where the candidate was not ranked)."""
    def rounded(value):
        return "" if value is None else round(value, 3)

    return [[c.title, rounded(c.score), rounded(c.faithfulness), c.words, ", ".join(c.cliches), c.known_match or ""]
            for c in candidates]


def write_titles(service: TitleService, instruction: str, abstract: str, include: str, words, yours: str, *values,
                 progress=gr.Progress()):
    """Yield (title so far, candidate rows, verdict, papers like it) as the decoding goes; the last yield holds
    the ranked candidates, the verdict on `yours` (the author's title) when one is given, and the papers
    like the abstract when the server has a paper index."""
    try:
        check_abstract(abstract or "")
    except ValueError as err:
        raise gr.Error(f"{err}. Paste one abstract into the Input box.") from None
    options = read_options(values, include, words)
    yours = (yours or "").strip()[:MAX_TITLE_CHARS] or None
    grown: queue.SimpleQueue[str] = queue.SimpleQueue()
    related = RELATED if service.index else 0
    try:
        if options.streams and yours is None:
            job = service.stream(abstract, options, instruction or None, grown.put, related=related)
        else:
            job = service.titles([abstract], options, instruction or None, yours=yours, related=related)
    except Busy as err:
        raise gr.Error(f"{err} (try again in {err.retry_after} s)") from None
    began, title = time.monotonic(), ""
    try:
        while not job.future.done():
            try:
                title = grown.get(timeout=TICK_SECONDS)
                yield title, [], "", ""
            except queue.Empty:
                if job.estimate:
                    progress(min(0.99, (time.monotonic() - began) / job.estimate), desc="writing titles")
            if time.monotonic() > job.deadline + 1:
                raise gr.Error(f"no answer within the {service.request_timeout:g} s deadline")
        error = job.future.exception()
        if error:
            raise gr.Error("no answer within the deadline" if isinstance(error, TimeoutError) else str(error))
        result = job.future.result()[0]
        yield result.title, rows(result.candidates), verdict_text(result.verdict), related_text(result.related)
    finally:
        job.abandoned.set()  # a closed page stops its decoding; a finished job is not affected


def build_demo(service: TitleService) -> gr.Blocks:
    source = service.source()

    def handler(instruction, abstract, include, words, yours, *values, progress=gr.Progress()):
        yield from write_titles(service, instruction, abstract, include, words, yours, *values, progress=progress)

    with gr.Blocks(title="ChatGenTitle") as demo:
        demo.state_session_capacity = WEB_SESSIONS
        gr.Markdown("# ChatGenTitle\nWrite a title for a paper from its abstract.")
        with gr.Row():
            with gr.Column(scale=3):
                instruction_box = gr.Textbox(label="Instruction", value=source.instruction, lines=2,
                                             max_length=MAX_INSTRUCTION_CHARS)
                input_box = gr.Textbox(label="Input", placeholder="Paste the abstract here", lines=10,
                                       max_length=MAX_ABSTRACT_CHARS, elem_id="abstract-input")
                with gr.Row():
                    include_box = gr.Textbox(label="Include", lines=2, elem_id="include",
                                             placeholder="Words every title must contain, one phrase per line",
                                             info=field_docs(GenerationOptions)["include"])
                    low, high = bounds(GenerationOptions, "words")
                    words_box = gr.Slider(0, high, value=0, step=1, label="Words", elem_id="words",
                                          info=f"Target length in words, {low} to {high} (0: any).")
                yours_box = gr.Textbox(label="Your title", elem_id="your-title", max_length=MAX_TITLE_CHARS,
                                       placeholder="Optional: your own title, to see how the model ranks it")
                with gr.Accordion("Generation options", open=False):
                    option_inputs = [option_input(option, source.defaults) for option in OPTION_FIELDS]
                submit = gr.Button("Generate title", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                title_box = gr.Textbox(label="Title", lines=2, elem_id="title-output")
                verdict_box = gr.Markdown(elem_id="verdict")
                related_box = gr.Markdown(elem_id="related")
        # full width below: one row per candidate, the title column wide enough to read
        table = gr.Dataframe(headers=COLUMNS, label="Candidates", wrap=True, column_widths=COLUMN_WIDTHS,
                             interactive=False, elem_id="candidates")
        gr.Markdown(f"<small>Order: {ORDER}.</small>", elem_id="order")
        gr.Examples([[source.instruction, EXAMPLE_ABSTRACT]], [instruction_box, input_box])
        inputs = [instruction_box, input_box, include_box, words_box, yours_box, *option_inputs]
        # no concurrency limit here: the TitleService queues, bounds and refuses work for every front end
        submit.click(handler, inputs, [title_box, table, verdict_box, related_box], api_name="write_titles",
                     concurrency_limit=None, show_progress="full")
    return demo
