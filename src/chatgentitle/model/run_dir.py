"""The run dir: every file a training run writes, and what inference and export read back.

    runs/cs-lora/
      adapter_config.json, adapter_model.safetensors   the PEFT adapter (PeftModel.from_pretrained, vLLM)
      prompt.json       the prompt template (data/prompt.py owns its format)
      config.yaml       the resolved TrainConfig (base model, cutoff_len, ...)
      metrics.jsonl     loss, eval loss, lr, real tokens/s per log step; a summary last
      loss.png          the losses
      checkpoint-N/     resumable Trainer checkpoints
      verdict_scale.json  optional: log-probabilities of published titles for their own abstracts
                        (scripts/verdict_scale.py), the scale of a verdict's percentile
      ensemble/NAME/    optional: more adapter dirs over the same base and prompt, whose beams and
                        samples join the consensus (GenerationOptions.consensus) of this one's

A bare PEFT adapter dir (adapter files only) also works: the base comes from adapter_config.json.
Train, generate, export and scripts/package_default_adapter.py go through `RunDir`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from chatgentitle.data.prompt import PROMPT_FILE, PROMPT_TOKENS, TRAIN_TEMPLATE, PromptTemplate
from chatgentitle.errors import ChatGenTitleError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"
VERDICT_SCALE = "verdict_scale.json"
# what a copy of the run carries (export's adapter/, the packaged default adapter)
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, PROMPT_FILE, CONFIG_FILE)


class RunDirError(ChatGenTitleError, ValueError):
    """A folder that is not a run dir or adapter dir; the message says which file is missing."""


@dataclass(frozen=True)
class RunInfo:
    """What inference needs to know about a run."""

    base_model: str
    template: PromptTemplate
    cutoff_len: int
    """Prompt + title tokens in training: the longest prompt worth giving the model."""


class RunDir:
    """One training run's folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def loss_plot(self) -> Path:
        return self.path / LOSS_PLOT

    # ------------------------------------------------------------------ reading
    def config(self) -> dict:
        """The resolved training config ({} for a bare adapter dir)."""
        file = self.path / CONFIG_FILE
        return (yaml.safe_load(file.read_text()) or {}) if file.is_file() else {}

    def describe(self) -> RunInfo:
        """Base model, prompt template and cutoff recorded in the run (or a bare PEFT adapter dir)."""
        if not (self.path / ADAPTER_CONFIG).is_file():
            raise RunDirError(f"{self.path} is not an adapter dir (no {ADAPTER_CONFIG})")
        config = self.config()
        base = config.get("base_model") or json.loads((self.path / ADAPTER_CONFIG).read_text())[
            "base_model_name_or_path"]
        has_prompt = (self.path / PROMPT_FILE).is_file()
        template = PromptTemplate.load(self.path if has_prompt else config.get("prompt_template", TRAIN_TEMPLATE))
        return RunInfo(base, template, int(config.get("cutoff_len", PROMPT_TOKENS)))

    def members(self) -> list[RunDir]:
        """The other adapters of an ensemble run (ensemble/NAME/), by name; [] for a single adapter."""
        folder = self.path / "ensemble"
        found = sorted(p for p in folder.iterdir() if (p / ADAPTER_CONFIG).is_file()) if folder.is_dir() else []
        return [RunDir(p) for p in found]

    def weights_digest(self) -> str:
        """sha256 (16 hex digits) of the adapter's config and weights and its ensemble members': what its
        titles depend on besides the base model and the prompt. A retrained run in the same folder differs."""
        digest = hashlib.sha256()
        for run in [self, *self.members()]:
            for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, "adapter_model.bin"):
                if (run.path / name).is_file():
                    with open(run.path / name, "rb") as file:
                        digest.update(hashlib.file_digest(file, "sha256").digest())
        return digest.hexdigest()[:16]

    def verdict_scale(self) -> list[float] | None:
        """The ascending log-probabilities of verdict_scale.json, if it was measured with these weights."""
        path = self.path / VERDICT_SCALE
        if not path.is_file():
            return None
        found = json.loads(path.read_text())
        return sorted(found["log_probs"]) if found.get("adapter") == self.weights_digest() else None

    def write_verdict_scale(self, log_probs: list[float], papers: str) -> Path:
        """verdict_scale.json: these log-probabilities, for these weights, measured on `papers`."""
        path = self.path / VERDICT_SCALE
        path.write_text(json.dumps({"adapter": self.weights_digest(), "papers": papers,
                                    "log_probs": sorted(round(x, 4) for x in log_probs)}, indent=0))
        return path

    def read_metrics(self) -> list[dict]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line]

    @staticmethod
    def kept_step(rows: list[dict]) -> dict | None:
        """The eval step whose adapter --keep-best kept ({"step", metric}), from metrics.jsonl's last summary."""
        return next((r["summary"].get("kept") for r in reversed(rows) if "summary" in r), None)

    def last_checkpoint(self) -> str | None:
        """Newest checkpoint-N whose trainer_state.json (written last by Trainer) is readable.

        A checkpoint cut short by kill -9 lacks it, so resuming never starts from half a save.
        """
        candidates = sorted(
            (p for p in self.path.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
            key=lambda p: int(p.name.split("-")[-1]),
            reverse=True,
        )
        for checkpoint in candidates:
            try:
                json.loads((checkpoint / "trainer_state.json").read_text())
                return str(checkpoint)
            except (OSError, ValueError):
                continue
        return None

    # ------------------------------------------------------------------ writing
    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def start_metrics(self) -> None:
        """A fresh run starts a fresh log (a resumed one appends)."""
        self.metrics.unlink(missing_ok=True)

    def log(self, row: dict) -> None:
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def save(self, model, template: PromptTemplate, config) -> None:
        """The trained adapter, its prompt and the config that made it: what inference reads."""
        model.save_pretrained(self.path)
        template.save(self.path)
        config.to_yaml(self.path / CONFIG_FILE)

    def copy_adapter(self, dest: str | Path) -> Path:
        """The adapter files (and prompt, config) into dest, e.g. beside a merged checkpoint."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            if (self.path / name).is_file():
                shutil.copy2(self.path / name, dest / name)
        return dest
