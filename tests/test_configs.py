"""Every shipped config loads, and every data file or adapter it names is documented: the config's own
comments or the docs say how to make it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatgentitle.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_each_config_loads_and_documents_what_it_reads(path):
    cfg = TrainConfig.from_yaml(path)
    comments = "\n".join(line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line)
    named = [value for value in (cfg.data, cfg.val_data, cfg.init_adapter) if value and value != "default"]
    assert named, path
    for value in named:  # the file itself, or the folder a documented command writes it into
        folder = Path(value).parent.as_posix()
        made = re.search(rf"(--out|--output|--output-dir|>|writes)\s+{re.escape(value)}\b"
                         rf"|--out(put-dir)?\s+{re.escape(folder)}\b", comments + DOCS)
        assert made, f"{path.name}: no documented command makes {value}"
