"""Copy a run's adapter into the package as the default model, weights exactly as measured.

Run as: python scripts/package_default_adapter.py runs/ens2

Writes src/chatgentitle/default_adapter/{adapter_config.json, adapter_model.safetensors,
prompt.json, config.yaml}, and ensemble/NAME/ likewise for each member of an ensemble run; the model
card (README.md there) is written by hand. Weights keep their dtype: rounded to bf16, an ensemble
member once changed 11 of 40 consensus titles (sampling turns tiny logit changes into other draws),
so a run is packaged in the dtype its titles were measured with (round it before measuring to ship
it smaller). The packaged config.yaml keeps data paths relative to the project (an absolute path of
the training machine is replaced by its last two parts, e.g. data/train.jsonl).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

from chatgentitle.model.run_dir import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RunDir

TARGET = Path(__file__).resolve().parents[1] / "src" / "chatgentitle" / "default_adapter"
HUB_ID = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # where the base comes from upstream


def main(run_dir: Path) -> None:
    run = RunDir(run_dir)
    shutil.rmtree(TARGET / "ensemble", ignore_errors=True)
    for source, dest in [(run, TARGET), *((m, TARGET / "ensemble" / m.name) for m in run.members())]:
        copy_adapter(source, dest)
        size = (dest / ADAPTER_WEIGHTS).stat().st_size / 1e6
        print(f"packaged {source.path} -> {dest} ({size:.1f} MB of weights)")


def copy_adapter(run: RunDir, dest: Path) -> None:
    """The run's adapter files into dest, the base named by its upstream id."""
    run.copy_adapter(dest)
    base = run.describe().base_model
    config = json.loads((dest / ADAPTER_CONFIG).read_text())
    # the run recorded a path in this machine's cache; record the upstream model instead
    config["base_model_name_or_path"] = HUB_ID.get(base, base)
    (dest / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    settings = yaml.safe_load((dest / "config.yaml").read_text())
    for key in ("data", "val_data", "output_dir", "init_adapter", "resume_from_checkpoint"):
        if settings.get(key) and Path(settings[key]).is_absolute():  # no path of the training machine
            settings[key] = str(Path(*Path(settings[key]).parts[-2:]))
    (dest / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
