import subprocess
import sys

import pytest
from click.testing import CliRunner

from chatgentitle.cli import cli

COMMANDS = ["prepare", "index", "crawl", "train", "generate", "serve", "eval", "export", "label"]


def test_every_command_has_help():
    assert sorted(cli.commands) == sorted(COMMANDS)
    for name in COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and cli.commands[name].help, name


@pytest.mark.parametrize("args", [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS)])
def test_help_is_instant_and_imports_no_torch(args):
    code = (f"import sys\nfrom chatgentitle.cli import cli\ntry:\n    cli({args!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'gradio' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "chatgentitle", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "prepare" in result.stdout


def configs():
    from chatgentitle.crawl.harvest import CrawlJob
    from chatgentitle.data.prepare import PrepareConfig
    from chatgentitle.decoding.options import GenerationOptions
    from chatgentitle.serving.app import ServeConfig
    from chatgentitle.titling.sources import SourceSpec
    from chatgentitle.training.config import TrainConfig

    return [("train", TrainConfig, ()), ("prepare", PrepareConfig, ("formats",)), ("crawl", CrawlJob, ()),
            ("serve", ServeConfig, ()), ("serve", SourceSpec, ("model",)), ("generate", SourceSpec, ()),
            ("generate", GenerationOptions, ("num_candidates",)), ("eval", GenerationOptions, ("num_candidates",)),
            ("label", SourceSpec, ()), ("label", GenerationOptions, ("num_candidates",))]


@pytest.mark.parametrize(("command", "config", "skip"), configs())
def test_every_config_field_has_a_flag_with_help(command, config, skip):
    """The flags are generated from the dataclasses, help and default included."""
    import dataclasses

    params = {p.name: p for p in cli.commands[command].params}
    for field in dataclasses.fields(config):
        if field.name in skip:
            continue
        assert field.name in params, f"{command}: no flag for {field.name}"
        assert params[field.name].help and "[default:" in params[field.name].help


def test_label_decodes_the_best_titles_by_default():
    """Labels are the consensus titles (BEST_TITLES samples per model), whatever generate's fast default."""
    from chatgentitle.decoding.options import BEST_TITLES, GenerationOptions

    params = {p.name: p for p in cli.commands["label"].params}
    assert params["consensus"].default == BEST_TITLES and f"[default: {BEST_TITLES}]" in params["consensus"].help
    generate = {p.name: p for p in cli.commands["generate"].params}
    assert generate["consensus"].default is None and GenerationOptions().consensus == 0
