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
    assert "chatgentitle.decoding.search" in names and "chatgentitle.serving.app" in names
    out = subprocess.run([sys.executable, "-c", PROBE, *names], capture_output=True, text=True, check=True).stdout
    before, after = json.loads(out.strip().splitlines()[-1])
    assert after == before


LAYERS = ["base", "data", "crawl", "model", "decoding", "titling", "evaluation", "training", "export", "serving",
          "top"]  # each may import from the ones before it, never from one after
TOP = {"chatgentitle", "chatgentitle.cli", "chatgentitle.__main__"}  # the CLI and the package's lazy names


def _imports() -> dict[str, set[str]]:
    """Every module's imports of other modules of the package, at import time or inside a function."""
    import ast
    from pathlib import Path

    root = Path(chatgentitle.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    found = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chatgentitle"):
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found[name] |= {t for t in targets if t in modules and t not in (name, "chatgentitle")}
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index("top" if module in TOP else parts[1] if len(parts) > 2 else "base")


def test_layers_hold_and_no_module_imports_itself_around():
    import graphlib

    imports = _imports()
    upward = [(m, t) for m, targets in imports.items() for t in targets if _layer(t) > _layer(m)]
    assert not upward, upward
    assert list(graphlib.TopologicalSorter(imports).static_order())  # CycleError names a module cycle
    assert {m.split(".")[1] for m in imports if m.count(".") > 1} == set(LAYERS[1:-1])


def test_benchmarks_and_scripts_import_names_that_exist():
    """A move inside the package must carry the benchmarks, scripts and shell helpers along: every
    `from chatgentitle.X import Y` they hold (Python or a shell's python -c) names a module and name that exist."""
    import importlib
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sources = [path for folder in ("benchmarks", "scripts") for path in (root / folder).rglob("*")
               if path.suffix in (".py", ".sh")]
    assert len(sources) > 10
    missing = []
    for path in sources:
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            for module, names in re.findall(r"from (chatgentitle(?:\.\w+)*) import ([\w, ]+)", line):
                found = importlib.import_module(module)  # ModuleNotFoundError names the module
                for name in (part.split()[0] for part in names.split(",") if part.strip()):  # "x as y": x
                    if not hasattr(found, name) and importlib.util.find_spec(f"{module}.{name}") is None:
                        missing.append(f"{path.name}:{line_no} {module}.{name}")
    assert not missing


def test_rooms_stay_readable():
    """The house's limits: no module over 400 lines, no function over 60, cli.py at most 300."""
    import ast
    from pathlib import Path

    root = Path(chatgentitle.__file__).parent
    too_long = []
    for path in root.rglob("*.py"):
        source = path.read_text()
        limit = 300 if path.name == "cli.py" and path.parent == root else 400
        if len(source.splitlines()) > limit:
            too_long.append(f"{path.relative_to(root)}: {len(source.splitlines())} lines > {limit}")
        too_long += [f"{path.relative_to(root)}:{node.name}: {node.end_lineno - node.lineno + 1} lines > 60"
                     for node in ast.walk(ast.parse(source))
                     if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                     and node.end_lineno - node.lineno + 1 > 60]
    assert not too_long
