"""`chatgentitle eval`: titles from every system for the same test papers, scored side by side.

Run as: chatgentitle eval --data data/test.jsonl --model runs/cs-lora --baseline lead-1 --out reports/cs

Systems are models (through TitleGenerator), built-in baselines (lead-1, zero-shot) and
prediction files of other systems (JSONL of id -> title). Each model's titles are cached in
REPORT_DIR/predictions/<name>.jsonl, so a long run that stops resumes where it was.
Writes report.md, report.html, scores.json, predictions.jsonl and PNG plots.
"""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from chatgentitle.config import DEFAULT_BASE, split_named
from chatgentitle.data.prompt import word_count
from chatgentitle.data.records import Paper, read_papers, write_atomic, write_jsonl
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.errors import ChatGenTitleError, OptionError
from chatgentitle.evaluation.metrics import (
    bootstrap_ci,
    by_field,
    category_group,
    field_of,
    paired_differences,
    score_pairs,
    summarise,
)
from chatgentitle.titling.sources import DEFAULT_MODEL, SourceSpec, load_source

BASELINES = ("lead-1", "zero-shot")
TABLE_METRICS = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("bleu", "BLEU"),
                 ("similarity", "SemSim"), ("exact", "Exact"), ("mean_words", "Words"), ("copy_rate", "Copy%"),
                 ("cliche", "Cliché%"), ("duplicate", "Dup%"), ("repeated", "Repeat%"))


class PredictionError(ChatGenTitleError, ValueError):
    """A prediction file that cannot be used at all."""


def lead_1(abstract: str) -> str:
    """The first sentence of the abstract: the classic extractive baseline."""
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z])", abstract.strip(), maxsplit=1)[0]
    return sentence.rstrip(".")


def read_predictions(path: Path, paper_ids: set[str]) -> tuple[dict[str, str], list[str]]:
    """id -> title from a JSONL file, and the problems found (bad lines, unknown/missing ids, empty titles)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionError(f"prediction file not found: {path}")
    titles, problems, unknown = {}, [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            paper_id, title = str(row["id"]), row["title"]
        except (json.JSONDecodeError, KeyError, TypeError):
            problems.append(f"{path}:{line_no}: needs a JSON object with 'id' and 'title'")
            continue
        if not isinstance(title, str):
            problems.append(f"{path}:{line_no}: 'title' is not a string")
            continue
        if paper_id not in paper_ids:
            unknown.append(paper_id)
            continue
        if not title.strip():
            problems.append(f"{path}:{line_no}: empty title for {paper_id} (scored as empty)")
        titles[paper_id] = title.strip()
    if unknown:
        problems.append(f"{path}: {len(unknown)} ids not in the test data, ignored (e.g. {unknown[0]})")
    missing = sorted(paper_ids - set(titles))
    if missing:
        problems.append(f"{path}: {len(missing)} test papers have no title, scored as empty (e.g. {missing[0]})")
    if not titles:
        raise PredictionError(f"{path}: no usable predictions")
    return titles, problems


@dataclass
class System:
    """One system `eval` scores: a model (in process or behind an endpoint), another system's titles
    in a file, or a built-in baseline."""

    name: str
    source: SourceSpec | None = None
    predictions: Path | None = None
    baseline: str | None = None
    options: dict = field(default_factory=dict)
    """A model's own decoding: GenerationOptions fields over eval's flags (NAME=RUN_DIR,num_beams=1)."""


LOADING = ("dtype", "quantize")  # a model's own SourceSpec fields among its NAME=RUN_DIR,OPTION=VALUE options


def parse_systems(models=(), endpoint_models=(), prediction_files=(), baselines=(),
                  spec: SourceSpec | None = None) -> list[System]:
    """The systems of `eval`'s flags, in report order: models (NAME=RUN_DIR[,OPTION=VALUE...]: the options
    are its own decoding, or how it loads: dtype, quantize; none at all: the packaged model), endpoint
    models (NAME=URL,MODEL or NAME=URL,MODEL,chat), the zero-shot baseline, prediction files (NAME=FILE),
    lead-1. `spec` says how models load (device, dtype, the zero-shot base)."""
    spec = spec or SourceSpec()
    if not (models or endpoint_models or prediction_files or baselines):
        models = (DEFAULT_MODEL,)
    model = replace(spec, base_model=None)
    systems = []
    for value in models:
        run, *pairs = value.split(",")
        name, run = split_named(run, Path(run).name)
        loading = dict(pair.split("=", 1) for pair in pairs if pair.partition("=")[0] in LOADING)
        decoding = [pair for pair in pairs if pair.partition("=")[0] not in LOADING]
        systems.append(System(name, replace(model, model=run, **loading),
                              options=GenerationOptions.overrides(decoding)))
    for value in endpoint_models:
        name, found = split_named(value, "endpoint")
        url, _, rest = found.partition(",")
        model_name, _, mode = rest.partition(",")
        if not url or not model_name or mode not in ("", "chat"):
            raise OptionError(f"endpoint model {value!r}: give NAME=URL,MODEL or NAME=URL,MODEL,chat")
        systems.append(System(name, replace(model, endpoint=url, model=model_name, chat=mode == "chat")))
    if "zero-shot" in baselines:
        systems.append(System("zero-shot", replace(spec, model=None, base_model=spec.base_model or DEFAULT_BASE)))
    systems += [System(name, predictions=Path(path)) for name, path in (split_named(v, Path(v).stem)
                                                                        for v in prediction_files)]
    return systems + [System(b, baseline=b) for b in baselines if b != "zero-shot"]


def collect_systems(papers: list[Paper], out_dir: Path, systems: list[System], options: dict, batch_size: int = 8,
                    echo=print, progress: bool = False) -> tuple[dict, list[str]]:
    """Every system's titles for `papers` (the report's examples follow the first system), and the problems
    found in prediction files. `options`: the GenerationOptions fields eval's flags give, over each model's
    own defaults and under its own NAME=RUN,OPTION=VALUE. Generated titles are cached in
    out_dir/predictions/NAME.jsonl, so a long evaluation resumes."""
    from chatgentitle.titling.contract import options_for
    from chatgentitle.titling.files import claim, generate_file, made_by

    ids = {p.id for p in papers}
    found, problems = {}, []
    out_dir.mkdir(parents=True, exist_ok=True)
    abstracts_file = out_dir / "papers.jsonl"
    write_jsonl(abstracts_file, ({"id": p.id, "abstract": p.abstract} for p in papers))
    for system in systems:
        if system.source:
            generator = load_source(system.source)
            cache = out_dir / "predictions" / f"{system.name}.jsonl"
            decoding = options_for(generator, options | system.options)  # over the source's own defaults
            emptied = claim(cache, made_by(generator, decoding), cache=True)
            if emptied:
                echo(f"{system.name}: titling again, its cache was emptied ({emptied})")
            written, skipped = generate_file(generator, abstracts_file, cache, decoding, batch_size, progress=progress)
            echo(f"{system.name}: {written} titles generated, {skipped} from the previous run")
            found[system.name] = read_predictions(cache, ids)[0]
            del generator  # one model in memory at a time
        elif system.predictions:
            found[system.name], bad = read_predictions(system.predictions, ids)
            problems.extend(bad)
        else:
            found[system.name] = {p.id: lead_1(p.abstract) for p in papers}
    return found, problems


def run_eval(data_path: Path, limit: int | None, out_dir: Path, systems: list[System], options: dict,
             batch_size: int = 8,
             db: Path | None = None, echo=print, progress: bool = False) -> dict:
    """`chatgentitle eval`: the test papers, every system's titles, the scores and the report files."""
    from chatgentitle.titling.ranking import Embedder, known_titles

    if not Path(data_path).is_file():
        raise OptionError(f"test data not found: {data_path}")
    papers = load_test_papers(data_path, limit)
    if not papers:
        raise OptionError(f"no test papers in {data_path}")
    found, problems = collect_systems(papers, out_dir, systems, options, batch_size, echo=echo, progress=progress)
    result = evaluate(papers, found, out_dir, known=known_titles(db), embedder=Embedder.load(), problems=problems)
    for problem in problems:
        echo(f"warning: {problem}")
    return result


def summary_lines(result: dict, out_dir: Path) -> str:
    """One line per system with its scores, then where the report is."""
    lines = []
    for name, summary in result["systems"].items():
        low, high = summary["rougeL_ci95"]
        lines.append(f"{name:<24} ROUGE-1 {summary['rouge1']:.1f}  ROUGE-2 {summary['rouge2']:.1f}  "
                     f"ROUGE-L {summary['rougeL']:.1f} [{low:.1f}, {high:.1f}]  BLEU {summary['bleu']:.1f}")
    for name, paired in result.get("paired", {}).items():
        low, high = paired["rougeL_difference_ci95"]
        lines.append(f"{name} − {paired['against']}: ROUGE-L {paired['rougeL_difference']:+.2f} "
                     f"[{low:+.2f}, {high:+.2f}] (paired bootstrap)")
    return "\n".join([*lines, f"report: {Path(out_dir) / 'report.md'}"])


def evaluate(papers: list[Paper], systems: dict[str, dict[str, str]], out_dir: Path, known=None,
             embedder=None, problems: list[str] | None = None) -> dict:
    """Score every system on the same papers and write the report files; returns scores.json's content."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    references = [p.title for p in papers]
    abstracts = [p.abstract for p in papers]
    groups = [category_group(p.categories) for p in papers]
    per_paper, summary, by_category = {}, {}, {}
    for name, titles in systems.items():
        predictions = [titles.get(p.id, "") for p in papers]
        scores = score_pairs(predictions, references, abstracts, embedder, known)
        per_paper[name] = scores
        summary[name] = summarise(scores, predictions, references)
        grouped = defaultdict(list)
        for group, score in zip(groups, scores, strict=True):
            grouped[group].append(score)
        by_category[name] = {
            group: {"papers": len(items), **{m: sum(getattr(s, m) for s in items) / len(items)
                                             for m in ("rouge1", "rouge2", "rougeL")},
                    "rougeL_ci95": list(bootstrap_ci([s.rougeL for s in items]))}
            for group, items in sorted(grouped.items())
        }
    result = {"papers": len(papers), "systems": summary, "by_category": by_category,
              "by_field": by_field(per_paper, [field_of(p.categories) for p in papers]),
              "paired": paired_differences(per_paper), "problems": problems or []}
    write_atomic(out_dir / "scores.json", lambda f: f.write(json.dumps(result, indent=2)), mode="w")
    write_jsonl(out_dir / "predictions.jsonl", (
        {"id": p.id, "categories": p.categories, "title": p.title,
         "systems": {name: {"title": systems[name].get(p.id, ""), **asdict(per_paper[name][i])}
                     for name in systems}}
        for i, p in enumerate(papers)))
    _plot(out_dir, summary, systems, papers)
    markdown = _markdown(result, papers, systems, per_paper)
    write_atomic(out_dir / "report.md", lambda f: f.write(markdown), mode="w")
    write_atomic(out_dir / "report.html", lambda f: f.write(_html(markdown)), mode="w")
    return result


def _field_table(fields: dict, names: list[str]) -> list[str]:
    """ROUGE-L per field [95% CI]; for each later system, its paired difference from the first."""
    lines = ["\n## ROUGE-L by field\n", f"Later systems: their difference from {names[0]} on the same papers "
             "[paired 95% CI].\n" if len(names) > 1 else "",
             "| field | papers | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for field_name, entry in sorted(fields.items(), key=lambda kv: -kv[1]["papers"]):
        cells = []
        for name in names:
            s = entry["systems"][name]
            cell = f"{s['rougeL']:.1f} [{s['rougeL_ci95'][0]:.1f}, {s['rougeL_ci95'][1]:.1f}]"
            if "difference" in s:
                low, high = s["difference_ci95"]
                cell += f"; {s['difference']:+.2f} [{low:+.2f}, {high:+.2f}]"
            cells.append(cell)
        lines.append(f"| {field_name} | {entry['papers']} | " + " | ".join(cells) + " |")
    return lines


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def _markdown(result: dict, papers: list[Paper], systems: dict, per_paper: dict) -> str:
    names = list(systems)
    lines = [f"# Title generation report\n\n{result['papers']} test papers. Scores are percentages; "
             f"ROUGE F1 with stemming (rouge-score), BLEU is sacreBLEU, SemSim is the cosine similarity of "
             f"all-MiniLM-L6-v2 embeddings of generated and real title. [95% bootstrap CI].\n",
             "| system | " + " | ".join(label for _, label in TABLE_METRICS) + " |",
             "|---" * (len(TABLE_METRICS) + 1) + "|"]
    for name in names:
        s = result["systems"][name]
        cells = []
        for key, _ in TABLE_METRICS:
            cell = _fmt(s.get(key))
            if f"{key}_ci95" in s:
                low, high = s[f"{key}_ci95"]
                cell += f" [{low:.1f}, {high:.1f}]"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if papers:
        mean_words = sum(word_count(p.title) for p in papers) / len(papers)
        lines.append(f"\nReal titles: {mean_words:.1f} words on average.\n")
    for name, paired in result["paired"].items():
        low, high = paired["rougeL_difference_ci95"]
        lines.append(f"- {name} − {paired['against']}: ROUGE-L {paired['rougeL_difference']:+.2f} "
                     f"[{low:+.2f}, {high:+.2f}] (paired bootstrap, same papers)")
    if result["paired"]:
        lines.append("")
    lines.append("## ROUGE-L by category\n")
    groups = sorted({g for name in names for g in result["by_category"][name]})
    lines.append("| category | papers | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 2) + "|")
    for group in groups:
        first = result["by_category"][names[0]].get(group, {})
        cells = []
        for name in names:
            entry = result["by_category"][name].get(group)
            cells.append(f"{entry['rougeL']:.1f} [{entry['rougeL_ci95'][0]:.1f}, {entry['rougeL_ci95'][1]:.1f}]"
                         if entry else "–")
        lines.append(f"| {group} | {first.get('papers', 0)} | " + " | ".join(cells) + " |")
    lines += _field_table(result["by_field"], names)
    lines.append("\n![metrics](metrics.png)\n\n![title lengths](title_lengths.png)\n")
    if names:
        order = sorted(range(len(papers)), key=lambda i: per_paper[names[0]][i].rougeL)
        for heading, picks in (("Best examples", order[::-1][:5]), ("Worst examples", order[:5])):
            lines.append(f"## {heading} (by {names[0]}'s ROUGE-L)\n")
            for i in picks:
                paper = papers[i]
                excerpt = paper.abstract[:300] + ("…" if len(paper.abstract) > 300 else "")
                lines.append(f"**{paper.id}** ({paper.categories.split(' ')[0]}) — _{excerpt}_\n")
                lines.append(f"- real: {paper.title}")
                for name in names:
                    lines.append(f"- {name}: {systems[name].get(paper.id, '')} "
                                 f"(ROUGE-L {per_paper[name][i].rougeL:.1f})")
                lines.append("")
    if result["problems"]:
        lines.append("## Problems found in the inputs\n")
        lines.extend(f"- {p}" for p in result["problems"])
    return "\n".join(lines) + "\n"


def _html(markdown: str) -> str:
    """A self-contained HTML page of the same report (tables, images, lists)."""
    body, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            for alt, src in re.findall(r"!\[(.*?)\]\((.*?)\)", line):
                body.append(f'<img alt="{html.escape(alt)}" src="{html.escape(src)}">')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = "body{font-family:sans-serif;max-width:70em;margin:auto}td,th{border:1px solid #ccc;padding:3px 6px}"
    return f"<!doctype html><meta charset='utf-8'><title>Title report</title><style>{style}</style>\n" + "\n".join(body)


def _plot(out_dir: Path, summary: dict, systems: dict, papers: list[Paper]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(systems)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names) + 3), 4))
    width = 0.8 / 3
    for k, metric in enumerate(("rouge1", "rouge2", "rougeL")):
        values = [summary[n].get(metric, 0) for n in names]
        errors = [[v - summary[n][f"{metric}_ci95"][0] for n, v in zip(names, values, strict=True)],
                  [summary[n][f"{metric}_ci95"][1] - v for n, v in zip(names, values, strict=True)]]
        ax.bar([i + (k - 1) * width for i in range(len(names))], values, width, yerr=errors, capsize=3,
               label=metric.replace("rouge", "ROUGE-"))
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("F1 (%)")
    ax.set_title(f"ROUGE F1 with 95% bootstrap CI, {len(papers)} papers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "metrics.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    lengths = {"real titles": [word_count(p.title) for p in papers]}
    lengths.update({n: [word_count(systems[n].get(p.id, "")) for p in papers] for n in names})
    ax.hist(list(lengths.values()), bins=range(0, 31, 2), label=list(lengths), density=True)
    ax.set_xlabel("title length (words)")
    ax.set_ylabel("share of papers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "title_lengths.png", dpi=100)
    plt.close(fig)


def load_test_papers(path: Path, limit: int | None = None) -> list[Paper]:
    papers = []
    for paper in read_papers([path]):
        papers.append(paper)
        if limit and len(papers) >= limit:
            break
    return papers
