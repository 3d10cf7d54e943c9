"""The `chatgentitle` command: a thin layer over the library, one verb per command.

Heavy imports (torch, transformers, gradio) happen inside the commands that need them, so
`chatgentitle --help` and `chatgentitle crawl --help` are instant.
"""

from __future__ import annotations

import dataclasses
import sys
from functools import partial
from pathlib import Path

import click

from chatgentitle.config import GenerationOptions, TrainConfig
from chatgentitle.prepare import PrepareConfig
from chatgentitle.report import BASELINES  # light: no torch, no metrics libraries at import


class UserError(click.ClickException):
    """A one-line error for the user, exit status 1, never a traceback."""


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chatgentitle")
def cli():
    """Write good titles for research papers from their abstracts.

    prepare -> train -> generate / serve -> eval; crawl keeps the data fresh.
    """


def config_options(cls, skip: tuple[str, ...] = ()):
    """A decorator adding one flag per field of a config dataclass, its help from the field's docstring.
    Flags default to None: a YAML file or preset gives the values, flags given override them."""
    from typing import get_type_hints

    from chatgentitle.config import field_docs

    types, docs = get_type_hints(cls), field_docs(cls)
    kinds = {int: int, float: float, int | None: int, float | None: float}

    def add(func):
        for option in reversed(dataclasses.fields(cls)):
            if option.name in skip:
                continue
            flag = "--" + option.name.replace("_", "-")
            default = option.default if option.default is not dataclasses.MISSING else option.default_factory()
            shown = ",".join(default) if isinstance(default, list | tuple) else default
            text = f"{docs[option.name]} [default: {shown}]"
            if types[option.name] is bool:
                func = click.option(f"{flag}/--no-{flag[2:]}", default=None, help=text)(func)
            else:  # str, lists (comma-separated) and optional paths arrive as text
                func = click.option(flag, type=kinds.get(types[option.name], str), help=text)(func)
        return func

    return add


# ----------------------------------------------------------------------------- prepare
@cli.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Also read papers from a `crawl` store.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--preset", type=click.Choice(["all-50k", "all-100k", "cs"]),
              help="The seed project's subsets: 50k or 100k papers of all fields, or all of cs.")
@click.option("--format", "formats", default="jsonl", show_default=True, help="jsonl, alpaca or jsonl,alpaca.")
@config_options(PrepareConfig, skip=("formats",))
@click.option("--strict", is_flag=True, help="Exit with status 1 if any input line is bad.")
def prepare(inputs, db, out_dir, preset, strict, categories, formats, **options):
    """Turn arXiv metadata (snapshot JSON lines, .gz, or our JSONL) into train/val/test data."""
    from chatgentitle.prepare import PRESETS
    from chatgentitle.prepare import prepare as run_prepare
    from chatgentitle.records import BadLines, read_papers

    if not inputs and not db:
        raise UserError("give at least one input file or --db")
    for path in inputs:
        if not path.is_file():
            raise UserError(f"input not found or not a file: {path}")
    values = dict(PRESETS.get(preset, {}))
    if categories:
        values["categories"] = _csv(categories)
    values.update({k: v for k, v in options.items() if v is not None})
    try:
        cfg = PrepareConfig(formats=_csv(formats), **values)
    except ValueError as err:
        raise UserError(str(err)) from None
    bad = BadLines()
    papers = _with_progress(_papers_from(inputs, db, bad, read_papers), "papers")
    try:
        stats = run_prepare(papers, out_dir, cfg, bad)
    except OSError as err:
        raise UserError(f"cannot read input: {err}") from None
    for message in bad.summary():
        click.echo(f"bad line: {message}", err=True)
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats["dropped"].items())) or "none"
    splits = ", ".join(f"{k} {stats['splits'].get(k, 0)}" for k in ("train", "val", "test"))
    click.echo(f"read {stats['records_read']}, kept {stats['kept']} ({splits}); dropped: {dropped}; "
               f"bad lines {bad.count} -> {out_dir}")
    if strict and bad.count:
        sys.exit(1)


def _papers_from(inputs, db, bad, read_papers):
    yield from read_papers(inputs, bad)
    if db:
        from chatgentitle.store import PaperStore

        with PaperStore(db) as store:
            yield from store.papers()


def _with_progress(iterable, unit: str):
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, unit=f" {unit}", unit_scale=True, file=sys.stderr)


# ----------------------------------------------------------------------------- train
@cli.command()
@click.option("--config", "config_file", type=click.Path(exists=True, path_type=Path),
              help="A YAML file of options; flags given here override it.")
@config_options(TrainConfig)
def train(config_file, **options):
    """Fine-tune a LoRA adapter that writes titles (alpaca-lora's options)."""

    try:
        if config_file:
            cfg = TrainConfig.from_yaml(config_file, **options)
        else:
            cfg = TrainConfig(**{k: v for k, v in options.items() if v is not None})
    except (ValueError, TypeError) as err:
        raise UserError(str(err)) from None
    if not cfg.data:
        raise UserError("give --data (or data: in --config)")
    from chatgentitle.modeling import ModelError
    from chatgentitle.train import DataError
    from chatgentitle.train import train as run_train

    try:
        run_dir = run_train(cfg)
    except (DataError, ModelError, ValueError) as err:
        raise UserError(str(err)) from None
    click.echo(f"adapter saved in {run_dir}")


# ----------------------------------------------------------------------------- crawl
def _seconds(text: str) -> float:
    """'24h', '30m', '90s' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r} is not a duration like 24h, 30m or 90s") from None


@cli.command()
@click.option("--categories", default="cs.AI,cs.CV,cs.LG", show_default=True,
              help="Comma-separated categories (cs.AI) or archives (cs).")
@click.option("--db", type=click.Path(path_type=Path), help="Paper store. [default: in the user data dir]")
@click.option("--endpoint", help="OAI-PMH base URL (or the API/RSS base with --ids/--rss).")
@click.option("--metadata-prefix", type=click.Choice(["arXiv", "arXivRaw"]), default="arXiv", show_default=True)
@click.option("--from", "from_date", help="Harvest records changed on or after YYYY-MM-DD (default: continue).")
@click.option("--until", "until_date", help="... and on or before YYYY-MM-DD.")
@click.option("--delay", type=float, default=3.0, show_default=True,
              help="Seconds between requests (never below 3 against arXiv's hosts).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request.")
@click.option("--retries", type=click.IntRange(1, 20), default=8, show_default=True,
              help="Attempts per request (5xx, timeouts, answers that are not a page) before the run stops.")
@click.option("--contact", envvar="CHATGENTITLE_CONTACT", help="An e-mail address for the User-Agent.")
@click.option("--every", help="Keep running, harvesting every interval (e.g. 24h); SIGTERM stops cleanly.")
@click.option("--ids", help="Look up these arXiv ids through the API instead (comma-separated).")
@click.option("--rss", is_flag=True, help="Read today's RSS listing of the categories instead.")
@click.option("--export", "export_path", type=click.Path(path_type=Path),
              help="Write the store as snapshot-format JSONL (what prepare reads) and exit.")
@click.option("--status", is_flag=True, help="Print counts per category and the last harvests, and exit.")
def crawl(categories, db, endpoint, metadata_prefix, from_date, until_date, delay, timeout, retries, contact, every,
          ids, rss, export_path, status):
    """Harvest new arXiv papers politely into the paper store (OAI-PMH, API or RSS)."""
    from chatgentitle import crawl as arxiv
    from chatgentitle.store import PaperStore

    with PaperStore(db) as store:
        if status:
            click.echo("\n".join(store.status()))
            return
        if export_path:
            from chatgentitle.records import write_jsonl

            click.echo(f"{write_jsonl(export_path, store.records())} papers written to {export_path}")
            return
        job = arxiv.CrawlJob(_csv(categories), endpoint, metadata_prefix, from_date, until_date, _csv(ids), rss,
                             _seconds(every) if every else None)
        fetcher = arxiv.Fetcher(delay_seconds=delay, timeout_seconds=timeout, max_retries=retries, contact=contact,
                                on_wait=_echo_wait if sys.stderr.isatty() else None)
        try:
            arxiv.run(job, store, fetcher, echo=click.echo)
        except arxiv.CrawlError as err:
            raise UserError(str(err)) from None
        finally:
            fetcher.close()


def _echo_wait(seconds: float) -> None:
    click.echo(f"  next request in {seconds:.1f} s", err=True)


# ----------------------------------------------------------------------------- generate / serve
def model_options(func=None, *, many: bool = False):
    """Options shared by every command that loads a TitleGenerator (`many`: --model repeatable, for serve)."""
    if func is None:
        return partial(model_options, many=many)
    model_help = ("Run dir or PEFT adapter dir [default: the packaged adapter]; with --endpoint, the server's "
                  "model name.")
    if many:
        model_help += (" Repeatable as NAME=RUN_DIR (RUN_DIR 'default': the packaged adapter): several adapters over "
                       "one base model in memory, each a model id.")
    decorators = [
        click.option("--model", "run_dir", multiple=many, type=str if many else click.Path(path_type=Path),
                     help=model_help),
        click.option("--endpoint", help="Title through this OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1"
                                        " for vLLM) instead of a model in this process."),
        click.option("--endpoint-key", envvar="CHATGENTITLE_ENDPOINT_KEY",
                     help="API key for --endpoint (or CHATGENTITLE_ENDPOINT_KEY / OPENAI_API_KEY)."),
        click.option("--chat", is_flag=True, help="With --endpoint: chat messages (chat models, our serve) "
                                                  "instead of completions with our prompt."),
        click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
                     help="With --endpoint: requests in flight."),
        click.option("--base-model", help="Base model (with no --model: zero-shot, no adapter)."),
        click.option("--prompt-template", help="Override the run dir's prompt template."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ..."),
        click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto",
                     show_default=True),
        click.option("--quantize", type=click.Choice(["8bit", "4bit"]), help="CUDA only."),
        click.option("--no-merge", is_flag=True, help="Keep the adapter separate (slower decoding)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def generation_options(func):
    """Decoding options shared by generate and eval: one per GenerationOptions field (bounds, default,
    help), except num_candidates, which generate asks as -n."""
    from typing import get_type_hints

    from chatgentitle.config import GenerationOptions, field_docs

    types, docs = get_type_hints(GenerationOptions), field_docs(GenerationOptions)
    for option in reversed(dataclasses.fields(GenerationOptions)):
        if option.name == "num_candidates":
            continue
        flag = "--" + option.name.replace("_", "-")
        if types[option.name] is bool:
            func = click.option(flag, is_flag=True, help=docs[option.name])(func)
            continue
        low, high = option.metadata["range"]
        kind = click.IntRange(low, high) if types[option.name] is int else click.FloatRange(low, high)
        func = click.option(flag, type=kind, default=option.default, show_default=True,
                            help=docs[option.name])(func)
    return func


def load_generator(run_dir, base_model, prompt_template, device, dtype, quantize, no_merge, endpoint=None,
                   endpoint_key=None, chat=False, concurrency=4):
    """The TitleSource the options ask for: a model in this process, or a remote server's."""
    from chatgentitle.generate import TitleGenerator
    from chatgentitle.modeling import ModelError

    if endpoint:
        from chatgentitle.prompt import PromptTemplate
        from chatgentitle.remote import RemoteTitles

        if not run_dir:
            raise UserError("--endpoint needs --model NAME (the model id the server serves)")
        template = PromptTemplate.load(prompt_template) if prompt_template else TitleGenerator.default_template()
        return RemoteTitles(endpoint, str(run_dir), api_key=endpoint_key, chat=chat, template=template,
                            concurrency=concurrency)
    try:
        return TitleGenerator.load(run_dir, base_model=base_model, prompt_template=prompt_template,
                                   device=device, dtype=dtype, quantize=quantize, merge=not no_merge)
    except (ModelError, ValueError) as err:
        raise UserError(str(err)) from None


def make_options(num_candidates=1, **decoding):

    try:
        return GenerationOptions(num_candidates=num_candidates, **decoding)
    except ValueError as err:
        raise UserError(str(err)) from None


def known_titles(db):
    """Titles of the papers in a crawl store, for the uniqueness check (None without --db)."""
    if not db:
        return None
    from chatgentitle.ranking import KnownTitles
    from chatgentitle.store import PaperStore

    with PaperStore(db) as store:
        return KnownTitles(store.titles())


def make_ranker(db):
    from chatgentitle.ranking import Embedder, Ranker

    return Ranker(Embedder.load(), known_titles(db))


@cli.command()
@click.argument("abstract", required=False)
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="A JSONL (id, abstract), CSV (id, abstract) or TXT (one per line) file.")
@click.option("--output", "output_path", type=click.Path(path_type=Path),
              help="JSONL of titles; re-running skips ids already in it.")
@click.option("-n", "--num-candidates", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Distinct titles per abstract, ranked (see README: ranking).")
@click.option("--instruction", help="Override the instruction of the prompt.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--db", type=click.Path(path_type=Path), help="Paper store: warn when a title already exists.")
@click.option("--stream", is_flag=True, help="Print the title as it is generated.")
@click.option("--samples", is_flag=True, help="Titles for the packaged sample abstracts, beside the real titles.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with scores.")
@model_options
@generation_options
def generate(abstract, input_path, output_path, num_candidates, instruction, batch_size, db, stream, samples,
             as_json, run_dir, base_model, prompt_template, device, dtype, quantize, no_merge, endpoint, endpoint_key,
             chat, concurrency, **decoding):
    """Write a title for ABSTRACT (or - for stdin), or for every abstract in --input."""
    import json

    from chatgentitle.remote import RemoteError

    model = (run_dir, base_model, prompt_template, device, dtype, quantize, no_merge, endpoint, endpoint_key, chat,
             concurrency)
    if samples:
        return _samples(load_generator(*model), make_options(**decoding))
    if bool(abstract) == bool(input_path):
        raise UserError("give an ABSTRACT (or -) or --input FILE")
    if input_path and not output_path:
        raise UserError("--input needs --output")
    if abstract == "-":
        abstract = sys.stdin.read()
    if abstract is not None and not abstract.strip():
        raise UserError("the abstract is empty")
    options = make_options(num_candidates, **decoding)
    generator = load_generator(*model)
    ranker = make_ranker(db) if num_candidates > 1 or db else None
    if input_path:
        from chatgentitle.batch import InputError, generate_file

        try:
            written, skipped = generate_file(generator, input_path, output_path, options, batch_size, ranker,
                                             instruction, progress=sys.stderr.isatty())
        except (InputError, RemoteError) as err:
            raise UserError(str(err)) from None
        click.echo(f"{written} titles written to {output_path} ({skipped} already there)")
        return
    if stream and num_candidates == 1:
        shown = ""
        for shown in generator.stream(abstract, options, instruction):
            click.echo("\r" + shown, nl=False)
        click.echo()
        return
    from chatgentitle.generate import titles

    try:
        candidates = titles(generator, [abstract], options, ranker, instruction)[0]
    except RemoteError as err:
        raise UserError(str(err)) from None
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in candidates], indent=2, ensure_ascii=False))
        return
    for candidate in candidates:
        note = f"  [score {candidate.score:.3f}]" if len(candidates) > 1 else ""
        if candidate.known_match:
            note += f"  warning: matches a known paper title ({candidate.known_match!r})"
        click.echo(candidate.title + note)


def _samples(generator, options):
    import json
    import textwrap
    import time
    from importlib import resources

    rows = [json.loads(line) for line in
            (resources.files("chatgentitle") / "samples" / "abstracts.jsonl").read_text().splitlines()]
    began = time.perf_counter()
    titles = generator([r["abstract"] for r in rows], options)
    seconds = time.perf_counter() - began
    click.echo(f"model: {generator.name}\n")
    for row, title in zip(rows, titles, strict=True):
        click.echo(f"arXiv:{row['id']} ({row['categories'].split()[0]})")
        click.echo(textwrap.fill(row["abstract"][:240] + "…", 100, initial_indent="  ", subsequent_indent="  "))
        click.echo(f"  generated: {title}\n  real:      {row['title']}\n")
    click.echo(f"{len(rows)} titles in {seconds:.1f} s")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: all).")
@click.option("--port", type=int, default=7860, show_default=True)
@click.option("--api-key", envvar="CHATGENTITLE_API_KEY", help="Require 'Authorization: Bearer KEY' on the API.")
@click.option("--max-batch", type=int, default=8, show_default=True, help="Abstracts per micro-batch.")
@click.option("--max-queue", type=int, default=256, show_default=True, help="Queued requests before 503.")
@click.option("--request-timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Seconds a request may take, queueing included; then 503 + Retry-After, and its decoding stops.")
@click.option("--db", type=click.Path(path_type=Path), help="Paper store for the uniqueness check.")
@click.option("--no-ui", is_flag=True, help="Serve the JSON API only.")
@model_options(many=True)
def serve(host, port, api_key, max_batch, max_queue, request_timeout, db, no_ui, run_dir, **model):
    """Serve the JSON API (/v1/titles, /docs) and the web UI (/) from one process."""
    try:
        import uvicorn

        from chatgentitle.api import create_app
    except ImportError as err:
        raise UserError(f"serve needs the serve extra: pip install 'chatgentitle[serve]' ({err})") from None
    if len(run_dir) > 1 or any("=" in value for value in run_dir):
        if model["endpoint"]:
            raise UserError("several --model NAME=RUN_DIR are served in process: drop --endpoint")
        from chatgentitle.generate import TitleGenerator
        from chatgentitle.modeling import ModelError

        runs = dict(_named(value, Path(value).name) for value in run_dir)
        try:
            generators = TitleGenerator.load_many({name: None if path == "default" else path
                                                   for name, path in runs.items()},
                                                  device=model["device"], dtype=model["dtype"])
        except (ModelError, ValueError) as err:
            raise UserError(str(err)) from None
    else:
        generators = [load_generator(run_dir[0] if run_dir else None, **model)]
    ranker = make_ranker(db)
    app = create_app(generators, ranker, api_key=api_key, max_batch=max_batch, max_queue=max_queue,
                     request_timeout=request_timeout)
    if not no_ui:
        import gradio as gr

        from chatgentitle.web import build_demo

        app = gr.mount_gradio_app(app, build_demo(generators[0], ranker), path="/")
    click.echo(f"serving on http://{host}:{port}  (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@cli.command()
@click.option("--adapter", "run_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="Run dir or PEFT adapter dir.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
def export(run_dir, out_dir, dtype):
    """Merge an adapter into its base model: a plain HF checkpoint (plus the adapter alone in adapter/)."""
    from chatgentitle.modeling import ModelError, export_merged, resolve_base
    from chatgentitle.run import RunDir

    try:
        export_merged(run_dir, out_dir, dtype)
        base = resolve_base(RunDir(run_dir).describe().base_model)  # an HF dir (built-in GGUF bases: converted)
    except (ModelError, ValueError) as err:
        raise UserError(str(err)) from None
    click.echo(f"merged model written to {out_dir} (the adapter alone and its prompt in {out_dir / 'adapter'})\n"
               f"vLLM, merged:  python -m vllm.entrypoints.openai.api_server --model {out_dir}\n"
               f"vLLM, LoRA:    python -m vllm.entrypoints.openai.api_server --model {base} --enable-lora "
               f"--lora-modules {Path(run_dir).name}={out_dir / 'adapter'}\n"
               f"then: chatgentitle generate --endpoint http://127.0.0.1:8000/v1 --model {Path(run_dir).name} "
               f"--prompt-template {out_dir / 'adapter'} ...")


# ----------------------------------------------------------------------------- eval
def _named(value: str, default_name: str) -> tuple[str, str]:
    name, sep, rest = value.partition("=")
    return (name, rest) if sep and name and "/" not in name else (default_name, value)


@cli.command(name="eval")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
              help="Test papers: prepare's test.jsonl (or any snapshot-format file).")
@click.option("--model", "models", multiple=True,
              help="A run dir to evaluate, optionally NAME=RUN_DIR; repeatable. [default: the packaged model]")
@click.option("--endpoint-model", "endpoint_models", multiple=True,
              help="A system behind an OpenAI-compatible server: NAME=URL,MODEL (completions with our prompt) or "
                   "NAME=URL,MODEL,chat (chat models); repeatable. Key: CHATGENTITLE_ENDPOINT_KEY / OPENAI_API_KEY.")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(BASELINES),
              help="Built-in baselines; repeatable.")
@click.option("--predictions", "prediction_files", multiple=True,
              help="Another system's titles: NAME=FILE (JSONL of id, title); repeatable.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Report directory.")
@click.option("--limit", type=int, help="Score only the first N test papers.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--db", type=click.Path(path_type=Path), help="Paper store for the duplicate rate.")
@click.option("--base-model", help="Base model for the zero-shot baseline. [default: smollm2-135m]")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@generation_options
def evaluate(data_path, models, endpoint_models, baselines, prediction_files, out_dir, limit, batch_size, db,
             base_model, device,
             dtype, **decoding):
    """Score models, baselines and other systems' titles against the real titles."""
    from chatgentitle import report
    from chatgentitle.remote import RemoteError

    if not data_path.is_file():
        raise UserError(f"test data not found: {data_path}")
    papers = report.load_test_papers(data_path, limit)
    if not papers:
        raise UserError(f"no test papers in {data_path}")
    if not models and not prediction_files and not baselines and not endpoint_models:
        models = ("default",)
    runs = [(name, None if run == "default" else run) for name, run in (_named(v, Path(v).name) for v in models)]
    for value in endpoint_models:
        name, spec = _named(value, "endpoint")
        url, _, rest = spec.partition(",")
        model_name, _, mode = rest.partition(",")
        if not url or not model_name or mode not in ("", "chat"):
            raise UserError(f"--endpoint-model {value!r}: give NAME=URL,MODEL or NAME=URL,MODEL,chat")
        runs.append((name, {"endpoint": url, "model": model_name, "chat": mode == "chat"}))
    files = [_named(value, Path(value).stem) for value in prediction_files]
    load = partial(_load_for_eval, base_model=base_model, device=device, dtype=dtype)
    try:
        systems, problems = report.collect_systems(papers, out_dir, runs, files, baselines, load,
                                                   make_options(**decoding), batch_size,
                                                   echo=partial(click.echo, err=True), progress=sys.stderr.isatty())
    except (report.PredictionError, RemoteError) as err:
        raise UserError(str(err)) from None
    from chatgentitle.ranking import Embedder

    result = report.evaluate(papers, systems, out_dir, known=known_titles(db), embedder=Embedder.load(),
                             problems=problems)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    for name, summary in result["systems"].items():
        low, high = summary["rougeL_ci95"]
        click.echo(f"{name:<24} ROUGE-1 {summary['rouge1']:.1f}  ROUGE-2 {summary['rouge2']:.1f}  "
                   f"ROUGE-L {summary['rougeL']:.1f} [{low:.1f}, {high:.1f}]  BLEU {summary['bleu']:.1f}")
    click.echo(f"report: {out_dir / 'report.md'}")


def _load_for_eval(run, zero_shot_base, base_model, device, dtype):
    if isinstance(run, dict):  # a system behind an OpenAI-compatible server
        return load_generator(run["model"], None, None, device, dtype, None, False, run["endpoint"], None, run["chat"])
    return load_generator(run, zero_shot_base and (base_model or zero_shot_base), None, device, dtype, None, False)
