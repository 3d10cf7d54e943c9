"""The `chatgentitle` command: each verb parses its flags, calls one library function and echoes.

Flags come from the config dataclasses (flags.py). Heavy imports (torch, transformers, gradio)
happen inside the commands that need them, so `chatgentitle --help` and every `COMMAND --help`
are instant.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from chatgentitle.config import DTYPES, bounds, split_csv, split_named
from chatgentitle.crawl.harvest import CrawlJob
from chatgentitle.data.prepare import PrepareConfig
from chatgentitle.decoding.options import BEST_TITLES, GenerationOptions
from chatgentitle.errors import ChatGenTitleError, one_line, require_extra
from chatgentitle.evaluation.report import BASELINES  # light: no torch, no metrics libraries at import
from chatgentitle.export.gguf_file import OUTTYPES  # light: gguf is imported when a file is written
from chatgentitle.flags import dataclass_flags, given, take, take_given
from chatgentitle.serving.app import ServeConfig
from chatgentitle.titling.contract import check_supported, options_for
from chatgentitle.titling.sources import SourceSpec
from chatgentitle.training.config import TrainConfig


class UserError(ChatGenTitleError):
    """A command's own one-line error (a missing argument, a combination that cannot work)."""


class _Commands(click.Group):
    """The one place where errors become what the user sees: a ChatGenTitleError, or a file that cannot be
    read or written, is one line on stderr and exit status 1; anything else is a bug and keeps its traceback.
    --debug shows the traceback of a user error too."""

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():  # a library's warning is one line too
                warnings.showwarning = lambda message, *_, **__: click.echo(f"warning: {message}", err=True)
                return super().invoke(ctx)
        except (ChatGenTitleError, OSError) as err:
            if ctx.params.get("debug") or (isinstance(err, OSError) and not err.filename):
                raise
            raise click.ClickException(one_line(err)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chatgentitle")
@click.option("--debug", is_flag=True, help="Show the traceback of a user error too (a bug always shows one).")
def cli(debug):
    """Write good titles for research papers from their abstracts.

    prepare -> train -> generate / serve -> eval; crawl keeps the data fresh.
    """


# ----------------------------------------------------------------------------- prepare
@cli.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Also read papers from a `crawl` store.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--preset", type=click.Choice(["all-50k", "all-100k", "cs"]),
              help="The seed project's subsets: 50k or 100k papers of all fields, or all of cs.")
@click.option("--format", "formats", default="jsonl", show_default=True, help="jsonl, alpaca or jsonl,alpaca.")
@dataclass_flags(PrepareConfig, skip=("formats",))
@click.option("--strict", is_flag=True, help="Exit with status 1 if any input line is bad.")
def prepare(inputs, db, out_dir, preset, strict, formats, **options):
    """Turn arXiv metadata (snapshot JSON lines, .gz, or our JSONL) into train/val/test data."""
    from chatgentitle.data.prepare import PRESETS, read_inputs, summary
    from chatgentitle.data.prepare import prepare as run_prepare
    from chatgentitle.data.records import BadLines
    from chatgentitle.progress import on_terminal

    if not inputs and not db:
        raise UserError("give at least one input file or --db")
    for path in inputs:
        if not path.is_file():
            raise UserError(f"input not found or not a file: {path}")
    values = dict(PRESETS.get(preset, {})) | given(PrepareConfig, options)
    if isinstance(values.get("categories"), str):
        values["categories"] = split_csv(values["categories"])
    cfg = take(PrepareConfig, values, formats=split_csv(formats))
    bad = BadLines()
    stats = run_prepare(on_terminal(read_inputs(inputs, db, bad), "papers"), out_dir, cfg, bad)
    for message in bad.summary():
        click.echo(f"bad line: {message}", err=True)
    click.echo(summary(stats, bad, out_dir))
    if strict and bad.count:
        sys.exit(1)


# ----------------------------------------------------------------------------- index
@cli.command()
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--db", type=click.Path(exists=True, path_type=Path), help="Also index the papers of a `crawl` store.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Index file [default: beside the store].")
def index(inputs, db, out_path):
    """Index papers for "papers like yours": incremental (new ids only), resumable after a kill."""
    from chatgentitle.data.index import PaperIndex, build

    click.echo(build(PaperIndex(out_path, create=True), list(inputs), db))


# ----------------------------------------------------------------------------- train
@cli.command()
@click.option("--config", "config_file", type=click.Path(exists=True, path_type=Path),
              help="A YAML file of options; flags given here override it.")
@dataclass_flags(TrainConfig)
def train(config_file, **options):
    """Fine-tune a LoRA adapter that writes titles (alpaca-lora's options)."""
    cfg = TrainConfig.from_yaml(config_file, **options) if config_file else take(TrainConfig, options)
    if not cfg.data:
        raise UserError("give --data (or data: in --config)")
    from chatgentitle.model.run_dir import RunDir
    from chatgentitle.training.loop import train as run_train

    run = RunDir(run_train(cfg))
    kept = run.kept_step(run.read_metrics())
    click.echo(f"adapter saved in {run.path}" + (f" (the best eval step's: {kept})" if kept else ""))


# ----------------------------------------------------------------------------- crawl
@cli.command()
@dataclass_flags(CrawlJob)
@click.option("--db", type=click.Path(path_type=Path), help="Paper store. [default: in the user data dir]")
@click.option("--export", "export_path", type=click.Path(path_type=Path),
              help="Write the store as snapshot-format JSONL (what prepare reads) and exit.")
@click.option("--status", is_flag=True, help="Print counts per category and the last harvests, and exit.")
def crawl(db, export_path, status, **flags):
    """Harvest new arXiv papers politely into the paper store (OAI-PMH, API or RSS)."""
    from chatgentitle.crawl import harvest
    from chatgentitle.data.store import PaperStore

    job = take(CrawlJob, flags)
    with PaperStore(db) as store:
        if status:
            click.echo("\n".join(store.status()))
        elif export_path:
            from chatgentitle.data.records import write_jsonl

            click.echo(f"{write_jsonl(export_path, store.records())} papers written to {export_path}")
        else:
            fetcher = job.fetcher(on_wait=harvest.echo_wait if sys.stderr.isatty() else None)
            try:
                harvest.run(job, store, fetcher, echo=click.echo)
            finally:
                fetcher.close()


# ----------------------------------------------------------------------------- generate / serve / export
def _source(values: dict, **fixed):
    from chatgentitle.titling.sources import load_source

    return load_source(take(SourceSpec, values, **fixed))


@cli.command()
@click.argument("abstract", required=False)
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="A JSONL (id, abstract), CSV (id, abstract) or TXT (one per line) file.")
@click.option("--output", "output_path", type=click.Path(path_type=Path),
              help="JSONL of titles; re-running skips ids already in it.")
@click.option("--adopt", is_flag=True, help="Continue an --output file that does not say what made it.")
@click.option("-n", "--num-candidates", type=click.IntRange(*bounds(GenerationOptions, "num_candidates")), default=1,
              show_default=True, help="Distinct titles per abstract, ranked (see README: ranking).")
@click.option("--instruction", help="Override the instruction of the prompt.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--db", type=click.Path(path_type=Path), help="Paper store: warn when a title already exists.")
@click.option("--stream", is_flag=True, help="Print the title as it grows (decodings that stream: greedy, sampling).")
@click.option("--samples", is_flag=True, help="Titles for the packaged sample abstracts, beside the real titles.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with scores.")
@click.option("--title", "yours", help="Your own title for ABSTRACT: the verdict (README: Titles you steer).")
@click.option("--related", type=click.IntRange(0, 20), default=0, help="Also list the K closest published papers.")
@dataclass_flags(SourceSpec)
@dataclass_flags(GenerationOptions, skip=("num_candidates",))
def generate(abstract, input_path, output_path, adopt, num_candidates, instruction, batch_size, db, stream, samples,
             as_json, yours, related, **flags):
    """Write a title for ABSTRACT (or - for stdin), or for every abstract in --input."""
    from chatgentitle.titling import files
    from chatgentitle.titling.generator import titles

    asked = take_given(GenerationOptions, flags, num_candidates=num_candidates)
    if samples:
        return click.echo(files.samples_report(source := _source(flags), options_for(source, asked)))
    abstract = files.what_to_title(abstract, input_path, output_path, yours)
    from chatgentitle.data.index import PaperIndex
    from chatgentitle.titling.ranking import make_ranker

    papers = (PaperIndex(flags["index"]), related) if related else None  # a missing index fails before the model loads
    source = _source(flags)
    options = options_for(source, asked)
    ranker = make_ranker(db) if num_candidates > 1 or db else None
    if input_path:
        written, skipped = files.generate_file(source, input_path, output_path, options, batch_size, ranker,
                                               instruction, progress=True, adopt=adopt, related=papers)
        return click.echo(f"{written} titles written to {output_path} ({skipped} already there)")
    if stream and options.streams and yours is None:
        check_supported(source, options)
        for shown in source.stream(abstract, options, instruction):
            click.echo("\r" + shown, nl=False)
        return click.echo()
    found = titles(source, [abstract], options, ranker, instruction, yours=yours, related=papers)[0]
    click.echo(files.describe(found, as_json))


@cli.command()
@dataclass_flags(ServeConfig)
@click.option("--model", "models", multiple=True,
              help="Run dir or PEFT adapter dir [default: the packaged adapter]; with --endpoint, the server's model "
                   "name. Repeatable as NAME=RUN_DIR (RUN_DIR 'default': the packaged adapter): several adapters "
                   "over one base model in memory, each a model id.")
@dataclass_flags(SourceSpec, skip=("model", "index"))
def serve(models, **flags):
    """Serve the JSON API (/v1/titles, OpenAI routes, /docs) and the web UI (/) from one process."""
    from chatgentitle.serving.app import serve as run_server

    cfg = take(ServeConfig, flags)
    require_extra("serve", "fastapi", "uvicorn", *(("gradio",) if cfg.ui else ()))
    named = dict(split_named(v, Path(v).name) for v in models)
    spec = take(SourceSpec, flags, model=next(iter(named.values())) if len(named) == 1 else None, index=cfg.index)
    run_server(cfg, spec, named, echo=click.echo)


@cli.command()
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
              help="Training papers: prepare's train.jsonl.")
@click.option("--held-out", "held_out", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Validation and test papers (repeatable): labelling stops with an error if one is among them.")
@click.option("--output", "output_path", required=True, type=click.Path(path_type=Path),
              help="JSONL of labels (id, abstract, title, real_title, rejected); re-running resumes.")
@click.option("--max-papers", type=click.IntRange(1), help="Label only the first N papers of --data.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--label-by", type=click.Choice(["consensus", "real-title"]), default="consensus", show_default=True,
              help="Which of the consensus's 8 best titles is the label: the one they agree with most, or the "
                   "one closest (ROUGE-L) to the paper's own title.")
@dataclass_flags(SourceSpec)
@dataclass_flags(GenerationOptions, skip=("num_candidates",), defaults={"consensus": BEST_TITLES})
def label(data_path, held_out, output_path, max_papers, batch_size, label_by, **flags):
    """Consensus titles for training abstracts: the labels that distillation trains on (`train --data`)."""
    from chatgentitle.titling import files

    asked = take_given(GenerationOptions, flags)
    source = _source(flags)
    written, skipped = files.label_file(source, data_path, list(held_out), output_path, options_for(source, asked),
                                        batch_size, max_papers, label_by)
    click.echo(f"{written} labels written to {output_path} ({skipped} already there)")


@cli.command()
@click.option("--adapter", "run_dir", required=True,
              help="Run dir or PEFT adapter dir ('default': the packaged adapter, exported as 'chatgentitle').")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder (hf: the checkpoint; gguf: RUN-OUTTYPE.gguf and an Ollama Modelfile).")
@click.option("--format", "out_format", type=click.Choice(["hf", "gguf"]), default="hf", show_default=True,
              help="hf: a Hugging Face checkpoint (transformers, vLLM); gguf: llama.cpp, Ollama, LM Studio.")
@click.option("--dtype", type=click.Choice([d for d in DTYPES if d != "auto"]), default="fp32", show_default=True,
              help="Weights of the hf checkpoint.")
@click.option("--outtype", type=click.Choice(OUTTYPES), default="f16", show_default=True,
              help="Weights of the GGUF file: q8_0 is half the size of f16.")
def export(run_dir, out_dir, out_format, dtype, outtype):
    """Merge an adapter into its base model: an HF checkpoint (+ adapter/), or a GGUF file with our chat template."""
    from chatgentitle.export.hf import export

    click.echo(export(run_dir, out_dir, out_format, dtype, outtype))


# ----------------------------------------------------------------------------- eval
@cli.command(name="eval")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
              help="Test papers: prepare's test.jsonl (or any snapshot-format file).")
@click.option("--model", "models", multiple=True,
              help="A run dir to evaluate, optionally NAME=RUN_DIR, and its own decoding after commas "
                   "(NAME=RUN_DIR,num_beams=1,consensus=32: the flags below otherwise) or loading "
                   "(NAME=RUN_DIR,dtype=fp32 or quantize=8bit); repeatable. "
                   "[default: the packaged model]")
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
@dataclass_flags(SourceSpec, only=("base_model", "device", "dtype", "index"))
@dataclass_flags(GenerationOptions, skip=("num_candidates",))
def evaluate(data_path, models, endpoint_models, baselines, prediction_files, out_dir, limit, batch_size, db, **flags):
    """Score models, baselines and other systems' titles against the real titles."""
    from chatgentitle.evaluation import report

    options = take_given(GenerationOptions, flags)
    systems = report.parse_systems(models, endpoint_models, prediction_files, baselines, take(SourceSpec, flags))
    result = report.run_eval(data_path, limit, out_dir, systems, options, batch_size, db,
                             echo=lambda line: click.echo(line, err=True), progress=True)
    click.echo(report.summary_lines(result, out_dir))
