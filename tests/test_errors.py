"""User errors through the real CLI: exit status 1, one line on stderr naming the cause, never a traceback;
a bug still shows its traceback."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner
from helpers import paper_row

from chatgentitle.cli import cli

UNREACHABLE = "http://127.0.0.1:9/v1"  # the discard port: nothing listens


@pytest.fixture
def files(tmp_path):
    papers = tmp_path / "papers.jsonl"
    papers.write_text("".join(json.dumps(paper_row(i)) + "\n" for i in range(3)))
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(paper_row(7)) + "\n")
    (tmp_path / "broken.yaml").write_text("data: [unclosed\nlearning_rate: 1e-3\n")
    (tmp_path / "unknown.yaml").write_text("data: x.jsonl\nlearning_rat: 1e-3\n")
    return tmp_path


BAD = {  # name: (arguments, words the one line must hold)
    "unreachable endpoint, generate": (["generate", "an abstract", "--endpoint", UNREACHABLE, "--model", "m"],
                                       ["cannot connect", "127.0.0.1:9"]),
    "unreachable endpoint, eval": (["eval", "--data", "{papers}", "--endpoint-model", f"x={UNREACHABLE},m",
                                    "--out", "{tmp}/report"], ["cannot connect", "127.0.0.1:9"]),
    "unreachable endpoint, label": (["label", "--data", "{papers}", "--held-out", "{other}", "--output",
                                     "{tmp}/labels.jsonl", "--endpoint", UNREACHABLE, "--model", "m",
                                     "--consensus", "0", "--num-beams", "1"], ["cannot connect"]),
    "missing input file": (["generate", "--input", "{tmp}/missing.jsonl", "--output", "{tmp}/out.jsonl",
                            "--endpoint", UNREACHABLE, "--model", "m"], ["missing.jsonl"]),
    "malformed config": (["train", "--config", "{tmp}/broken.yaml"], ["broken.yaml", "not valid YAML"]),
    "unknown config key": (["train", "--config", "{tmp}/unknown.yaml"], ["unknown option", "learning_rat"]),
    "unknown model": (["generate", "an abstract", "--model", "{tmp}/no-such-run"], ["no-such-run"]),
    "beams through an endpoint": (["generate", "an abstract", "--endpoint", UNREACHABLE, "--model", "m",
                                   "--num-beams", "4"], ["num_beams=4", "cannot honour"]),
    "missing extra": (["serve", "--no-ui", "--model", "{tmp}/no-such-run"], ["serve extra", "pip install"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_user_error_is_one_line(name, files, monkeypatch):
    args, words = BAD[name]
    if name == "missing extra":  # as on an install without the serve extra
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "fastapi" else find_spec(m, *a))
    args = [a.format(papers=files / "papers.jsonl", other=files / "other.jsonl", tmp=files) for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError)


def test_debug_shows_the_traceback_of_a_user_error(files):
    result = CliRunner().invoke(cli, ["--debug", "train", "--config", str(files / "unknown.yaml")])
    assert result.exit_code == 1 and type(result.exception).__name__ == "OptionError"


def test_a_bug_keeps_its_traceback(monkeypatch):
    import chatgentitle.titling.files

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(chatgentitle.titling.files, "samples_report", broken)
    result = CliRunner().invoke(cli, ["generate", "--samples", "--endpoint", UNREACHABLE, "--model", "m"])
    assert isinstance(result.exception, ZeroDivisionError)  # not turned into a tidy message
