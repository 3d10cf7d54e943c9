import subprocess
import sys

import pytest
from click.testing import CliRunner

from chatgentitle.cli import cli

COMMANDS = ["prepare", "crawl", "train", "generate", "serve", "eval", "export"]


def test_every_command_has_help():
    assert sorted(cli.commands) == sorted(COMMANDS)
    for name in COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and cli.commands[name].help, name


@pytest.mark.parametrize("args", [["--help"], ["crawl", "--help"], ["eval", "--help"], ["--version"]])
def test_light_commands_do_not_import_torch(args):
    code = (f"import sys\nfrom chatgentitle.cli import cli\ntry:\n    cli({args!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'gradio' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "chatgentitle", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "prepare" in result.stdout


def test_every_train_config_field_has_a_flag_with_help():
    import dataclasses

    from chatgentitle.config import TrainConfig

    params = {p.name: p for p in cli.commands["train"].params}
    for field in dataclasses.fields(TrainConfig):
        assert field.name in params, f"no --{field.name.replace('_', '-')}"
        assert params[field.name].help and "[default:" in params[field.name].help
