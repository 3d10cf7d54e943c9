"""Copy a run's adapter into the package as the default model, with bf16 weights (half the size).

Run as: python scripts/package_default_adapter.py runs/smollm2-compact-r16

Writes src/chatgentitle/default_adapter/{adapter_config.json, adapter_model.safetensors,
prompt.json, config.yaml}, and ensemble/NAME/ likewise for each member of an ensemble run (its
weights as trained); the model card (README.md there) is written by hand.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from chatgentitle.run import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RunDir

TARGET = Path(__file__).resolve().parents[1] / "src" / "chatgentitle" / "default_adapter"
HUB_ID = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # where the base comes from upstream


def main(run_dir: Path) -> None:
    run = RunDir(run_dir)
    shutil.rmtree(TARGET / "ensemble", ignore_errors=True)
    # members keep the weights their samples were measured with: rounded to bf16, the long run's
    # member changed 11 of 40 consensus titles (sampling turns tiny logit changes into other draws)
    for source, dest, bf16 in [(run, TARGET, True), *((m, TARGET / "ensemble" / m.name, False) for m in run.members())]:
        copy_adapter(source, dest, bf16)
        size = (dest / ADAPTER_WEIGHTS).stat().st_size / 1e6
        print(f"packaged {source.path} -> {dest} ({size:.1f} MB of weights)")


def copy_adapter(run: RunDir, dest: Path, bf16: bool) -> None:
    """The run's adapter files into dest (weights in bf16 if asked), the base named by its upstream id."""
    run.copy_adapter(dest)
    if bf16:
        weights = load_file(dest / ADAPTER_WEIGHTS)
        save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, dest / ADAPTER_WEIGHTS)
    base = run.describe().base_model
    config = json.loads((dest / ADAPTER_CONFIG).read_text())
    # the run recorded a path in this machine's cache; record the upstream model instead
    config["base_model_name_or_path"] = HUB_ID.get(base, base)
    (dest / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
