"""The `chatgentitle` command: a thin layer over the library, one verb per command.

Heavy imports (torch, transformers, gradio) happen inside the commands that need them, so
`chatgentitle --help` and `chatgentitle crawl --help` are instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


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


# ----------------------------------------------------------------------------- prepare
@cli.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Also read papers from a `crawl` store.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--preset", type=click.Choice(["all-50k", "all-100k", "cs"]),
              help="The seed project's subsets: 50k or 100k papers of all fields, or all of cs.")
@click.option("--categories", help="Comma-separated categories or archives, e.g. cs.AI,cs.CV,cs.LG or cs.")
@click.option("--any-category", is_flag=True, help="Match any listed category, not only the primary one.")
@click.option("--since", help="Keep papers updated on or after YYYY-MM-DD.")
@click.option("--until", help="Keep papers updated on or before YYYY-MM-DD.")
@click.option("--sample", type=int, help="Keep N papers, chosen deterministically (see --seed).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--val-size", type=float, default=0.01, show_default=True, help="Fraction (<1) or count.")
@click.option("--test-size", type=float, default=0.01, show_default=True, help="Fraction (<1) or count.")
@click.option("--test-since", help="Temporal split: papers updated on or after this date form the test set.")
@click.option("--format", "formats", default="jsonl", show_default=True, help="jsonl, alpaca or jsonl,alpaca.")
@click.option("--min-abstract-chars", type=int, default=100, show_default=True)
@click.option("--max-abstract-chars", type=int, default=5000, show_default=True)
@click.option("--min-title-chars", type=int, default=10, show_default=True)
@click.option("--max-title-chars", type=int, default=300, show_default=True)
@click.option("--strict", is_flag=True, help="Exit with status 1 if any input line is bad.")
def prepare(inputs, db, out_dir, preset, strict, categories, formats, **options):
    """Turn arXiv metadata (snapshot JSON lines, .gz, or our JSONL) into train/val/test data."""
    from chatgentitle.prepare import PRESETS, PrepareConfig
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
@cli.command(context_settings={"show_default": True})
@click.option("--config", "config_file", type=click.Path(exists=True, path_type=Path),
              help="A YAML file of options; flags given here override it.")
@click.option("--base-model", help="HF dir, GGUF file, hub id or built-in name. [default: smollm2-135m]")
@click.option("--data", help="prepare's train.jsonl or an alpaca JSON file.")
@click.option("--val-data", help="Validation data (otherwise --val-set-size is split off --data).")
@click.option("--output-dir", help="Run dir for the adapter and logs. [default: runs/title-lora]")
@click.option("--batch-size", type=int)
@click.option("--micro-batch-size", type=int)
@click.option("--num-epochs", type=float)
@click.option("--learning-rate", type=float)
@click.option("--cutoff-len", type=int)
@click.option("--val-set-size", type=int)
@click.option("--lora-r", type=int)
@click.option("--lora-alpha", type=int)
@click.option("--lora-dropout", type=float)
@click.option("--lora-target-modules", help="Comma-separated, e.g. q_proj,v_proj, or all-linear.")
@click.option("--train-on-inputs/--no-train-on-inputs", default=None, help="Loss on the prompt too.")
@click.option("--group-by-length/--no-group-by-length", default=None)
@click.option("--resume-from-checkpoint", help='A checkpoint dir, or "last".')
@click.option("--prompt-template", help="alpaca, compact, chat, or a template JSON file.")
@click.option("--max-steps", type=int)
@click.option("--max-examples", type=int)
@click.option("--seed", type=int)
@click.option("--save-steps", type=int)
@click.option("--eval-steps", type=int)
@click.option("--logging-steps", type=int)
@click.option("--warmup-steps", type=int)
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]))
@click.option("--quantize", type=click.Choice(["8bit", "4bit"]), help="CUDA only (bitsandbytes).")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None)
def train(config_file, **options):
    """Fine-tune a LoRA adapter that writes titles (alpaca-lora's options)."""
    from chatgentitle.config import TrainConfig

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


def main():
    cli()
