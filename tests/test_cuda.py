"""The CUDA paths: bf16 training, 8-/4-bit QLoRA (bitsandbytes), generation on the GPU.

Skipped without a CUDA GPU (CI has none); benchmarks/gpu/run.sh runs them on a lent GPU.
"""

import json

import pytest
from click.testing import CliRunner
from test_train import train_args

from chatgentitle.cli import cli

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def needs_bitsandbytes():
    pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("quantize", [None, "8bit", "4bit"])
def test_train_reload_and_generate_on_cuda(tiny_model_dir, train_file, tmp_path, quantize):
    from chatgentitle.titling.generator import GenerationOptions, TitleGenerator

    if quantize:
        needs_bitsandbytes()
    out = tmp_path / "run"
    args = train_args(tiny_model_dir, train_file, out, "--max-steps", "6", "--save-steps", "3")
    args[args.index("--dtype") + 1] = "auto"  # bf16 on the GPU
    if quantize:
        args += ["--quantize", quantize]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(loss == loss for loss in losses)  # no NaN
    summary = rows[-1]["summary"]
    assert summary["optimizer_steps"] == 6 and summary["peak_gpu_memory_mb"] > 0
    assert rows[-1]["config"]["quantize"] == quantize

    generator = TitleGenerator.load(out, quantize=quantize)
    assert generator.device.type == "cuda"
    for options in (GenerationOptions(num_beams=1), GenerationOptions(num_beams=4, num_candidates=2)):
        titles = generator.generate(["We propose a novel method for graph neural networks"] * 3, options)
        assert len(titles) == 3 and all(c and all(t.strip() for t in c) for c in titles)


def test_resume_on_cuda_reaches_the_same_step(tiny_model_dir, train_file, tmp_path):
    out = tmp_path / "run"
    args = train_args(tiny_model_dir, train_file, out, "--save-steps", "2")
    args[args.index("--dtype") + 1] = "auto"
    assert CliRunner().invoke(cli, [*args, "--max-steps", "4"]).exit_code == 0
    result = CliRunner().invoke(cli, [*args, "--max-steps", "6", "--resume-from-checkpoint", "last"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["summary"]["optimizer_steps"] == 6
