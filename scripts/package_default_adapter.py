"""Copy a run's adapter into the package as the default model, with bf16 weights (half the size).

Run as: python scripts/package_default_adapter.py runs/smollm2-compact-r16

Writes src/chatgentitle/default_adapter/{adapter_config.json, adapter_model.safetensors,
prompt.json, config.yaml}; the model card (README.md there) is written by hand.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TARGET = Path(__file__).resolve().parents[1] / "src" / "chatgentitle" / "default_adapter"
HUB_ID = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # where the base comes from upstream


def main(run_dir: Path) -> None:
    import yaml

    TARGET.mkdir(exist_ok=True)
    weights = load_file(run_dir / "adapter_model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, TARGET / "adapter_model.safetensors")
    base = yaml.safe_load((run_dir / "config.yaml").read_text())["base_model"]
    config = json.loads((run_dir / "adapter_config.json").read_text())
    # the run recorded a path in this machine's cache; record the upstream model instead
    config["base_model_name_or_path"] = HUB_ID.get(base, base)
    (TARGET / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ("prompt.json", "config.yaml"):
        shutil.copy2(run_dir / name, TARGET / name)
    size = (TARGET / "adapter_model.safetensors").stat().st_size / 1e6
    print(f"packaged {run_dir} -> {TARGET} ({size:.1f} MB of weights)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
