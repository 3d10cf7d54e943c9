"""Titles for files of abstracts: JSONL, CSV or TXT in, JSONL out, resumable.

Re-running with the same --output skips the ids already there: each finished batch is
appended and flushed, so an interrupted run loses at most the batch in flight. Beside the output,
OUTPUT.made-by.json says what wrote it (the model, its weights, the decoding options): a run with
another model or other options does not continue that file.
"""

from __future__ import annotations

import csv
import json
import textwrap
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

from chatgentitle.data.records import sample_papers, write_atomic
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.errors import ChatGenTitleError
from chatgentitle.progress import Progress
from chatgentitle.titling.contract import TitleSource
from chatgentitle.titling.generator import titles
from chatgentitle.titling.ranking import ORDER, Ranker, Titled, Verdict, closest_titles


class InputError(ChatGenTitleError, ValueError):
    """An input file that cannot be read as abstracts; the message names the file and line."""


def what_to_title(abstract: str | None, input_path: Path | None, output_path: Path | None,
                  yours: str | None = None) -> str | None:
    """`generate`'s ABSTRACT ("-": standard input), or None for an --input file, checked against the other
    arguments: one abstract, or --input with --output; a title to judge only with one abstract."""
    import sys

    if bool(abstract) == bool(input_path) or (input_path and not output_path):
        raise InputError("give an ABSTRACT (or -), or --input FILE with --output FILE")
    if yours is not None and not abstract:
        raise InputError("--title judges your title for one ABSTRACT, not an --input file")
    abstract = sys.stdin.read() if abstract == "-" else abstract
    if abstract is not None and not abstract.strip():
        raise InputError("the abstract is empty")
    return abstract


def read_abstracts(path: Path) -> Iterator[tuple[str, str]]:
    """(id, abstract) pairs: JSONL with id/abstract, CSV with id/abstract columns, or TXT lines."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input not found: {path}")
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "abstract" not in reader.fieldnames:
                raise InputError(f"{path}: a CSV needs an 'abstract' column")
            for line_no, row in enumerate(reader, start=2):
                yield (row.get("id") or str(line_no - 1)), row["abstract"] or ""
        elif suffix in (".jsonl", ".json"):
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise InputError(f"{path}:{line_no}: invalid JSON") from None
                if not isinstance(row, dict) or not isinstance(row.get("abstract"), str):
                    raise InputError(f"{path}:{line_no}: needs a string field 'abstract'")
                yield str(row.get("id", line_no)), row["abstract"]
        else:  # one abstract per line
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    yield str(line_no), line.strip()


def done_ids(output: Path) -> set[str]:
    """Ids already in the output; a last line cut by a crash is removed so appends stay valid."""
    if not output.is_file():
        return set()
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(output, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
        data = data[: data.rfind(b"\n") + 1]
    ids = set()
    for line in data.decode("utf-8").splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut by a crash: that id is simply done again
    return ids


def made_by(source: TitleSource, options: GenerationOptions, instruction: str | None = None,
            ranker: Ranker | None = None) -> dict:
    """What a file of titles depends on: the source (TitleSource.made_by), the options, the instruction
    and the ranker. JSON-shaped, as OUTPUT.made-by.json holds it."""
    from chatgentitle import __version__

    stamp = {"source": source.made_by, "options": asdict(options), "instruction": instruction,
             "ranker": ranker.made_by if ranker else None, "chatgentitle": __version__}
    return json.loads(json.dumps(stamp))  # tuples as lists: equal to what is read back


def claim(output: Path, stamp: dict, cache: bool = False, adopt: bool = False) -> str | None:
    """Before titles are appended to `output`: a file begun by another model or other options is an error
    naming what differs; a cache (`cache=True`) is emptied instead, and the reason returned. A file with
    titles and no stamp (written by hand, another tool or an older version) is an error too, unless
    `adopt` says to continue it as this model's (it is stamped then); a cache without one is emptied. The
    stamp is written when a file begins; the package version in it is recorded, not compared: versions do
    not change titles unless the CHANGELOG says so."""
    stamp_file = output.with_name(output.name + ".made-by.json")
    begun = output.is_file() and output.stat().st_size > 0
    why = None
    if begun and stamp_file.is_file():
        try:
            differs = ", ".join(_differences(json.loads(stamp_file.read_text()), stamp, skip={"chatgentitle"}))
            why = differs and f"it was begun with another {differs}"
        except (json.JSONDecodeError, UnicodeDecodeError):
            why = f"{stamp_file.name} cannot be read"
    elif begun and not adopt:
        why = "it does not say what made it"
    if why and not cache:
        hint = " (or --adopt to continue it with this model)" if not stamp_file.is_file() else ""
        raise InputError(f"{output}: {why}: give another --output, or delete it to begin again{hint}")
    if why:
        output.unlink()
    if not begun or why or not stamp_file.is_file():
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(stamp_file, lambda handle: handle.write(json.dumps(stamp, indent=1)), mode="w")
    return why


def _differences(before: dict, now: dict, skip: set[str] = frozenset(), prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (nested dicts compared key by key)."""
    found = []
    for key in sorted(before.keys() | now.keys()):
        old, new = before.get(key), now.get(key)
        if key in skip or old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            found += _differences(old, new, prefix=f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key}")
    return found


def generate_file(
    generator: TitleSource,
    input_path: Path,
    output_path: Path,
    options: GenerationOptions,
    batch_size: int = 8,
    ranker: Ranker | None = None,
    instruction: str | None = None,
    progress: bool = False,
    adopt: bool = False,
    related: tuple | None = None,
) -> tuple[int, int]:
    """Write titles for every abstract not yet in output_path; returns (written, skipped). With progress,
    a bar on a terminal or a line every few percent in a log (progress.py). A file begun by another model
    or other options, or one that does not say what made it (unless `adopt`), is an error (`claim`).
    `related`: (index, k), each row's k closest published papers (never the row's own id)."""
    output_path = Path(output_path)
    claim(output_path, made_by(generator, options, instruction, ranker), adopt=adopt)
    skip = done_ids(output_path)
    todo = [(i, a) for i, a in read_abstracts(input_path) if i not in skip]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    shown = Progress(len(todo), "titles", output_path.stem, show=progress)
    with shown, open(output_path, "a", encoding="utf-8") as out:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            began = time.perf_counter()
            results = titles(generator, [a for _, a in chunk], options, ranker, instruction)
            seconds = (time.perf_counter() - began) / len(chunk)
            for (paper_id, abstract), result in zip(chunk, results, strict=True):
                row = {"id": paper_id, "title": result.title, "seconds": round(seconds, 3)}
                if related:
                    row["related"] = [n.to_dict() for n in related[0].nearest(abstract, related[1], (paper_id,))]
                if len(result.candidates) > 1 or result.candidates[0].known_match:
                    row["candidates"] = [c.to_dict() for c in result.candidates]
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            shown.update(len(chunk))
    return len(todo), len(skip)


def label_file(source: TitleSource, data: Path, held_out: list[Path], output: Path, options: GenerationOptions,
               batch_size: int = 8, max_papers: int | None = None, label_by: str = "consensus") -> tuple[int, int]:
    """Titles by `options` (the consensus, by default) for training papers, as prepare-format rows that
    `train --data` reads: id, abstract, title (the label), the paper's own title (real_title) and a
    worse candidate (rejected, for preference training). `label_by` says which of the 8 best candidates
    is the label: "consensus", the one they agree with most (rejected: the least); "real-title", the
    one closest (ROUGE-L) to the paper's own title (rejected: the furthest) — self-training towards the
    authors' wording with titles the model itself writes. No paper of `held_out` (validation, test) may
    be among them, nor among the rows already in `output`. Resumable; returns (written, skipped)."""
    import itertools

    from chatgentitle.data.records import read_papers

    excluded = {p.id for p in read_papers(held_out)}
    papers = list(itertools.islice(read_papers([data]), max_papers))
    claim(output, made_by(source, options) | {"label_by": label_by})
    skip = done_ids(output)
    leaked = next((i for i in itertools.chain((p.id for p in papers), skip) if i in excluded), None)
    if leaked:
        raise InputError(f"paper {leaked} is held out ({', '.join(map(str, held_out))}): "
                         f"labels come from training papers only")
    todo = [p for p in papers if p.id not in skip]
    ranked = replace(options, num_candidates=8)  # best first: the label, ..., the least agreed
    output.parent.mkdir(parents=True, exist_ok=True)
    with Progress(len(todo), "labels", output.stem) as shown, open(output, "a", encoding="utf-8") as out:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            for paper, found in zip(chunk, source.generate([p.abstract for p in chunk], ranked), strict=True):
                found = found[:ranked.num_candidates]  # a source may return a larger pool
                if label_by == "real-title":
                    found = closest_titles(found, paper.title)
                row = {"id": paper.id, "abstract": paper.abstract, "title": found[0], "real_title": paper.title}
                out.write(json.dumps(row | ({"rejected": found[-1]} if len(found) > 1 else {}),
                                     ensure_ascii=False) + "\n")
            out.flush()
            shown.update(len(chunk))
    return len(todo), len(skip)


def describe(result: Titled, as_json: bool = False) -> str:
    """One abstract's answer as `generate` prints it: the candidates one per line (scores and warnings when
    ranked, and what their order means), then the verdict on the author's title if judged; or JSON."""
    shown, verdict = result.candidates, result.verdict
    if as_json:
        listed = [c.to_dict() for c in shown]
        body = {"candidates": listed, "order": ORDER} if verdict or result.related else listed
        if verdict:
            body["verdict"] = verdict.to_dict()
        if result.related:
            body["related"] = [n.to_dict() for n in result.related]
        return json.dumps(body, indent=2, ensure_ascii=False)
    lines = []
    for candidate in shown:
        note = f"  [score {candidate.score:.3f}]" if candidate.score is not None and len(shown) > 1 else ""
        if candidate.known_match:
            note += f"  warning: matches a known paper title ({candidate.known_match!r})"
        lines.append(candidate.title + note)
    if len(shown) > 1:
        lines.append(f"({ORDER})")
    if verdict:
        lines.append(verdict_lines(verdict))
    if result.related:
        lines.append("\npapers like yours (similarity, arXiv id, title):")
        lines += [f"  {n.similarity:.2f}  {n.id}  {n.title}" for n in result.related]
    return "\n".join(lines)


def verdict_lines(verdict: Verdict) -> str:
    """The verdict in words (generate, the web UI): what it measures, and where the title stands."""
    scale = (f"; percentile {verdict.percentile:.0f} of published titles, each for its own abstract"
             if verdict.percentile is not None else "")
    ranker = f"; ranker score {verdict.score:.3f}" if verdict.score is not None else ""
    lines = [f"\nyour title: {verdict.rank} of {verdict.of} among the {verdict.of - 1} titles the search wrote, "
             f"by the model's likelihood (mean log-prob {verdict.log_prob:.3f} per token{scale}{ranker}). "
             "Likelihood says how expected a title is, not how good it is."]
    lines += [f"  more likely: {title}" for title in verdict.better[:5]]
    if len(verdict.better) > 5:
        lines.append(f"  … and {len(verdict.better) - 5} more")
    return "\n".join(lines)


def samples_report(source: TitleSource, options: GenerationOptions) -> str:
    """Titles for the packaged sample abstracts beside the real titles (`generate --samples`)."""
    rows = sample_papers()
    began = time.perf_counter()
    found = titles(source, [r["abstract"] for r in rows], replace(options, num_candidates=1))
    seconds = time.perf_counter() - began
    lines = [f"model: {source.name}\n"]
    for row, result in zip(rows, found, strict=True):
        lines += [f"arXiv:{row['id']} ({row['categories'].split()[0]})",
                  textwrap.fill(row["abstract"][:240] + "…", 100, initial_indent="  ", subsequent_indent="  "),
                  f"  generated: {result.title}\n  real:      {row['title']}\n"]
    return "\n".join([*lines, f"{len(rows)} titles in {seconds:.1f} s"])
