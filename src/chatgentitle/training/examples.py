"""Training data: rows read from prepare's or label's JSONL or alpaca JSON, the split a run trains on,
and the batches (prompt masked, left-padded, preference pairs side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import orjson
import torch

from chatgentitle.data.index import Neighbour
from chatgentitle.data.prompt import IGNORE_INDEX, PromptTemplate, encode_example
from chatgentitle.data.records import open_binary
from chatgentitle.errors import ChatGenTitleError
from chatgentitle.training.config import TrainConfig


class DataError(ChatGenTitleError, ValueError):
    """Training data that cannot be used; the message names the file and line."""


class Example(NamedTuple):
    """One training row: the title to learn and, for preference training, a worse one (`label`'s rows)."""

    instruction: str | None
    abstract: str
    title: str
    rejected: str | None = None
    related: tuple[Neighbour, ...] = ()
    """The closest published papers (a row's `related`: id, title, similarity...), for a template that reads them."""


def load_examples(path: str | Path) -> list[Example]:
    """Examples from prepare's or label's JSONL, or an alpaca JSON file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training data not found: {path}")
    with open_binary(path) as stream:
        raw = stream.read()
    if raw.lstrip()[:1] == b"[":  # alpaca-lora's train.json: one JSON array
        try:
            rows = list(enumerate(orjson.loads(raw), start=1))
        except orjson.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON ({err})") from None
        where = "item"
    else:
        rows = []
        for line_no, line in enumerate(raw.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((line_no, orjson.loads(line)))
                except orjson.JSONDecodeError:
                    raise DataError(f"{path}:{line_no}: invalid JSON") from None
        where = "line"
    examples = []
    for number, row in rows:
        if isinstance(row, dict) and "output" in row:
            example = Example(row.get("instruction") or None, row.get("input") or "", row["output"])
        elif isinstance(row, dict) and "title" in row:
            example = Example(None, row.get("abstract") or "", row["title"])
        else:
            raise DataError(f"{path} {where} {number}: needs title/abstract or instruction/input/output")
        if not isinstance(example.abstract, str) or not isinstance(example.title, str) or not example.title.strip():
            raise DataError(f"{path} {where} {number}: title/output must be a non-empty string")
        example = example._replace(rejected=row.get("rejected"), related=_related(row, path, where, number))
        if example.rejected is not None and (not isinstance(example.rejected, str) or not example.rejected.strip()):
            raise DataError(f"{path} {where} {number}: rejected must be a non-empty string")
        examples.append(example)
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _related(row: dict, path: Path, where: str, number: int) -> tuple[Neighbour, ...]:
    """A row's related papers: a list of objects with a title and a similarity (data.index.Neighbour's fields)."""
    try:
        return tuple(Neighbour(**{"id": "", **paper}) for paper in row.get("related") or ())
    except TypeError as err:
        raise DataError(f"{path} {where} {number}: related must be a list of {{title, similarity, ...}} ({err})"
                        ) from None


def encode_all(examples: list[Example], template: PromptTemplate, tokenizer, cfg: TrainConfig,
               pairs: bool = False) -> list[dict]:
    """Token ids and labels per example; with `pairs`, its rejected title's under "rejected" too."""

    def encode(example, title):
        return encode_example(template, tokenizer, example.abstract, title, cfg.cutoff_len,
                              instruction=example.instruction, train_on_inputs=cfg.train_on_inputs,
                              related=example.related)

    return [encode(e, e.title) | ({"rejected": encode(e, e.rejected)} if pairs else {}) for e in examples]


class TitleCollator:
    """Left-pads a batch so every title ends in the last column.

    Then the labelled tokens of every row sit in the last few columns and the trainer asks the
    model for logits there only (see TitleTrainer). Position ids count real tokens, so a padded
    row sees exactly the positions it would see alone. Preference pairs (features with "rejected")
    become 2B rows, the B preferred titles first, with their reference log-probabilities.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of  # multiples of 8 suit tensor cores and AMX tiles

    def __call__(self, features: list[dict]) -> dict:
        if "rejected" not in features[0]:
            return self.pad(features)
        batch = self.pad(features + [f["rejected"] for f in features])
        if "reference_logps" in features[0]:
            batch["reference_logps"] = torch.tensor([f["reference_logps"] for f in features])
        return batch

    def pad(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        width = -(-width // self.multiple) * self.multiple
        batch = {"input_ids": [], "attention_mask": [], "labels": [], "position_ids": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append([self.pad_token_id] * pad + f["input_ids"])
            batch["attention_mask"].append([0] * pad + [1] * len(f["input_ids"]))
            batch["labels"].append([IGNORE_INDEX] * pad + f["labels"])
            batch["position_ids"].append([0] * pad + list(range(len(f["input_ids"]))))
        return {k: torch.tensor(v) for k, v in batch.items()}


def select_examples(cfg: TrainConfig) -> tuple[list, list]:
    """(train, validation) examples: the split, the skipped and the capped as cfg says."""
    examples = load_examples(cfg.data)
    if cfg.val_data:
        val_examples = load_examples(cfg.val_data)
    else:  # held-out tail of a seeded shuffle, as alpaca-lora's train_test_split does
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        size = min(cfg.val_set_size, len(examples) // 2)
        val_examples = [examples[i] for i in order[:size]]
        examples = [examples[i] for i in order[size:]]
    examples = examples[cfg.skip_examples :]
    if cfg.max_examples:
        examples = examples[: cfg.max_examples]
    if not examples:
        raise DataError(f"{cfg.data}: no training examples left after skipping {cfg.skip_examples}")
    if cfg.objective == "dpo" and any(e.rejected is None for e in examples):
        raise DataError(f"{cfg.data}: objective dpo needs a rejected title on every training row "
                        f"(`chatgentitle label` writes them)")
    return examples, val_examples
