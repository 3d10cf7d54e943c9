"""Importing the package changes no global state: not the umask, not transformers' attention registry, not
the warnings filters. Every module is imported in a fresh interpreter, and the state compared."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import chatgentitle

PROBE = """
import importlib, json, os, sys, warnings
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

def state():
    mask = os.umask(0o022); os.umask(mask)
    return {"umask": mask, "attention": sorted(AttentionInterface._global_mapping),
            "masks": sorted(ALL_MASK_ATTENTION_FUNCTIONS._global_mapping), "warnings": repr(warnings.filters)}

before = state()
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps([before, state()]))
"""


def test_importing_every_module_changes_no_global_state():
    names = [m.name for m in pkgutil.walk_packages(chatgentitle.__path__, "chatgentitle.")
             if m.name != "chatgentitle.__main__"]  # that one runs the CLI
    assert "chatgentitle.decoding" in names and "chatgentitle.server" in names
    out = subprocess.run([sys.executable, "-c", PROBE, *names], capture_output=True, text=True, check=True).stdout
    before, after = json.loads(out.strip().splitlines()[-1])
    assert after == before
