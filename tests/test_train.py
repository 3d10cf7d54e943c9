import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from chatgentitle.cli import cli
from chatgentitle.model.run_dir import RunDir
from chatgentitle.training.examples import Example, load_examples


def train_args(tiny_model_dir, data, out, *extra):
    return ["train", "--base-model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(out),
            "--batch-size", "4", "--micro-batch-size", "2", "--val-set-size", "4", "--cutoff-len", "64",
            "--learning-rate", "1e-2", "--prompt-template", "compact", "--logging-steps", "1",
            "--warmup-steps", "0", "--dtype", "fp32", *extra]


def test_short_run_lowers_loss_and_writes_the_run_dir(tiny_model_dir, train_file, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(tiny_model_dir, train_file, out, "--max-steps", "12",
                                                "--save-steps", "6", "--eval-steps", "6"))
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {"adapter_config.json", "adapter_model.safetensors", "prompt.json", "config.yaml",
                     "metrics.jsonl", "loss.png", "README.md", "checkpoint-6", "checkpoint-12"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    assert any("eval_loss" in r for r in rows)
    assert all(r["tokens_per_second"] > 0 for r in rows if "loss" in r)
    assert rows[-1]["summary"]["optimizer_steps"] == 12
    assert json.loads((out / "prompt.json").read_text())["name"] == "compact"
    assert RunDir(out).last_checkpoint().endswith("checkpoint-12")


def test_adapter_reload_gives_the_same_logits(tiny_model_dir, train_file, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from chatgentitle.training.config import TrainConfig
    from chatgentitle.training.loop import train

    cfg = TrainConfig(base_model=str(tiny_model_dir), data=str(train_file), output_dir=str(tmp_path / "r"),
                      batch_size=4, micro_batch_size=2, max_steps=3, val_set_size=0, cutoff_len=64,
                      learning_rate=1e-2, dtype="fp32", save_steps=100, warmup_steps=0)
    train(cfg)
    x = torch.tensor([[5, 6, 7, 8]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = base(x).logits
    model = PeftModel.from_pretrained(base, tmp_path / "r").eval()
    after = model(x).logits
    again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "r")(x).logits
    assert not torch.allclose(before, after)  # the adapter changes the model
    assert torch.equal(after, again)



def test_init_adapter_warm_starts_from_a_run_dir(tiny_model_dir, train_file, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from chatgentitle.training.loop import TrainError, load_adapter_weights

    first = tmp_path / "first"
    assert CliRunner().invoke(cli, train_args(tiny_model_dir, train_file, first, "--max-steps", "2")).exit_code == 0
    saved = load_file(first / "adapter_model.safetensors")

    def fresh(**lora):
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", **lora))

    model = fresh(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    load_adapter_weights(model, first)
    loaded = get_peft_model_state_dict(model)
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    with pytest.raises(TrainError, match="does not fit"):
        load_adapter_weights(fresh(r=4, target_modules=["q_proj", "v_proj"]), first)
    with pytest.raises(TrainError, match="not a PEFT adapter"):
        load_adapter_weights(model, tmp_path)
    # and through the CLI: a second run continues from the first one's weights on papers it has not seen
    second = tmp_path / "second"
    result = CliRunner().invoke(cli, train_args(tiny_model_dir, train_file, second, "--max-steps", "1",
                                                "--init-adapter", str(first), "--skip-examples", "15"))
    assert result.exit_code == 0, result.output
    summary = json.loads((second / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    assert summary["train_examples"] == 24 - 4 - 15  # minus the validation split and the skipped ones
    result = CliRunner().invoke(cli, train_args(tiny_model_dir, train_file, tmp_path / "none", "--skip-examples", "20"))
    assert result.exit_code == 1 and "no training examples left after skipping 20" in result.output


def test_alpaca_json_data_and_bad_data(tmp_path):
    alpaca = tmp_path / "train.json"
    alpaca.write_text(json.dumps([{"instruction": "Write", "input": "An abstract", "output": "A title"}]))
    assert load_examples(alpaca) == [Example("Write", "An abstract", "A title")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "ok", "abstract": "x"}\n{"foo": 1}\n')
    result = CliRunner().invoke(cli, ["train", "--data", str(bad), "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert f"{bad} line 2: needs title/abstract" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_kill_9_and_resume_reaches_the_same_step(tiny_model_dir, train_file, tmp_path):
    out = tmp_path / "run"
    args = train_args(tiny_model_dir, train_file, out, "--max-steps", "300", "--save-steps", "25",
                      "--eval-steps", "1000")
    cmd = [sys.executable, "-m", "chatgentitle", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint-50").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter_model.safetensors").exists(), "finished before it could be killed"
    resumed_from = RunDir(out).last_checkpoint()
    assert resumed_from is not None
    subprocess.run([*cmd, "--resume-from-checkpoint", "last"], check=True, capture_output=True)
    state = json.loads((out / "checkpoint-300" / "trainer_state.json").read_text())
    assert state["global_step"] == 300
    summary = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    assert summary["optimizer_steps"] == 300


def test_title_only_logits_give_the_standard_loss(tiny_model_dir, tmp_path):
    """Left padding + logits on the title columns only == HF's full-logits loss on right-padded rows."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from chatgentitle.data.prompt import PromptTemplate, encode_example
    from chatgentitle.training.examples import TitleCollator
    from chatgentitle.training.loop import TitleTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    template = PromptTemplate.load("compact")
    examples = [encode_example(template, tokenizer, a, t, 64) for a, t in (
        ("we propose a novel method for learning graph neural networks", "robust attention"),
        ("quantum field theory", "spectra of the deep efficient transformer models"))]
    expected = []
    for e in examples:  # one row at a time: no padding at all
        out = model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]]))
        expected.append((out.loss.item(), sum(label != -100 for label in e["labels"][1:])))
    reference = sum(loss * n for loss, n in expected) / sum(n for _, n in expected)
    trainer = TitleTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to="none", use_cpu=True))
    with torch.no_grad():
        ours = trainer.compute_loss(model, TitleCollator(tokenizer.pad_token_id)(examples))
    assert ours.item() == pytest.approx(reference, rel=1e-5)


def test_eager_attention_gives_the_same_loss_and_gradients(tiny_model_dir, tmp_path):
    """--attention eager (auto's choice on CUDA) changes only what the padded query rows attend to,
    which no loss sees: same loss, same finite gradients as sdpa on a left-padded batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from chatgentitle.data.prompt import PromptTemplate, encode_example
    from chatgentitle.training.examples import TitleCollator
    from chatgentitle.training.loop import TitleTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = PromptTemplate.load("compact")
    examples = [encode_example(template, tokenizer, a, t, 64) for a, t in (
        ("we propose a novel method for learning graph neural networks on large sparse data", "robust attention"),
        ("quantum field theory", "spectra of the deep efficient transformer models"))]
    results = {}
    for attention in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention)
        trainer = TitleTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to="none", use_cpu=True))
        loss = trainer.compute_loss(model, TitleCollator(tokenizer.pad_token_id)(examples))
        loss.backward()
        results[attention] = loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])
    (sdpa_loss, sdpa_grads), (eager_loss, eager_grads) = results["sdpa"], results["eager"]
    assert eager_loss == pytest.approx(sdpa_loss, rel=1e-5)
    assert torch.isfinite(eager_grads).all() and torch.allclose(eager_grads, sdpa_grads, atol=1e-6)


@pytest.mark.slow
def test_torchrun_data_parallel(tiny_model_dir, train_file, tmp_path):
    """The same command under torchrun: 2 CPU processes (gloo), one adapter, collective eval."""
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "chatgentitle"]
    args = train_args(tiny_model_dir, train_file, out, "--max-steps", "4", "--batch-size", "8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*torchrun, *args], check=True, capture_output=True, env=env, timeout=300)
    summary = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["summary"]
    assert summary["optimizer_steps"] == 4 and "final_eval_loss" in summary
    assert (out / "adapter_model.safetensors").is_file()


def test_a_diverging_run_stops_with_a_clear_error_and_saves_no_adapter(tiny_model_dir, train_file, tmp_path):
    out = tmp_path / "run"
    args = train_args(tiny_model_dir, train_file, out, "--max-steps", "8", "--save-steps", "100")
    args[args.index("--learning-rate") + 1] = "1e30"  # overflows the LoRA weights at once
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "training diverged at step" in result.output
    assert "Traceback" not in result.output
    assert not (out / "adapter_model.safetensors").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] < 8  # stopped early, not after all steps


def test_keep_best_needs_what_it_compares(tiny_model_dir, train_file, tmp_path):
    result = CliRunner().invoke(cli, train_args(tiny_model_dir, train_file, tmp_path / "a", "--keep-best", "rouge"))
    assert result.exit_code == 1 and "keep_best rouge needs eval_rouge" in result.output
    result = CliRunner().invoke(cli, train_args(tiny_model_dir, train_file, tmp_path / "b", "--val-set-size", "0",
                                                "--eval-rouge", "4"))
    assert result.exit_code == 1 and "need validation data" in result.output


@pytest.mark.slow
def test_rouge_while_training_keeps_the_best_step_across_kill_9(tiny_model_dir, train_file, tmp_path):
    """ROUGE-L at every eval step; the run dir's adapter is the best step's, also after kill -9 and resume."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "chatgentitle", *train_args(
        tiny_model_dir, train_file, out, "--max-steps", "60", "--eval-steps", "5", "--eval-rouge", "4",
        "--keep-best", "rouge", "--learning-rate", "3e-3")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint-20" / "trainer_state.json").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter_model.safetensors").exists(), "finished before it could be killed"
    done = subprocess.run([*cmd, "--resume-from-checkpoint", "last"], capture_output=True, text=True, check=True)
    rows = RunDir(out).read_metrics()
    rouge = {r["step"]: r["eval_rougeL"] for r in rows if "eval_rougeL" in r}  # the resumed run's value last
    assert sorted(rouge) == list(range(5, 65, 5))
    kept = rows[-1]["summary"]["kept"]
    assert kept["eval_rougeL"] == max(rouge.values()) == rouge[kept["step"]]
    assert f"'step': {kept['step']}" in done.stdout
    saved, best = load_file(out / "adapter_model.safetensors"), load_file(
        out / f"checkpoint-{kept['step']}" / "adapter_model.safetensors")
    assert saved.keys() == best.keys() and all((saved[k] == best[k]).all() for k in saved)
    assert (out / "loss.png").stat().st_size > 0


def test_early_stopping_ends_a_run_that_stopped_improving(tiny_model_dir, train_file, tmp_path):
    """With a learning rate of 0 the validation loss never improves: patience 1 stops at the second eval."""
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(tiny_model_dir, train_file, out, "--learning-rate", "0",
                                                "--max-steps", "50", "--eval-steps", "2",
                                                "--early-stopping-patience", "1"))
    assert result.exit_code == 0, result.output
    assert RunDir(out).read_metrics()[-1]["summary"]["optimizer_steps"] == 4


def pairs_file(train_file, tmp_path):
    """label's rows: each paper's title preferred to the other title of the fixture."""
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    titles = {r["title"] for r in rows}
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r | {"rejected": (titles - {r["title"]}).pop()}) + "\n" for r in rows))
    return path


def test_dpo_starts_at_log_2_against_its_own_reference(tiny_model_dir, train_file, tmp_path):
    """The reference log-probs are the starting model's: before any step every margin is 0 and the
    DPO loss is log 2, whatever the batch's padding; the loss is the formula of the paper."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from chatgentitle.data.prompt import PromptTemplate
    from chatgentitle.training.config import TrainConfig
    from chatgentitle.training.examples import TitleCollator, encode_all
    from chatgentitle.training.loop import TitleTrainer, add_reference_logps, title_logps

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = TrainConfig(cutoff_len=64, objective="dpo")
    features = encode_all(load_examples(pairs_file(train_file, tmp_path))[:3], PromptTemplate.load("compact"),
                          tokenizer, cfg, pairs=True)
    collator = TitleCollator(tokenizer.pad_token_id)
    add_reference_logps(model, features, collator, torch.float32, batch_size=2)
    alone = [v for f in features for v in title_logps(model, collator([f]))[0].sum(dim=1).tolist()]
    assert [v for f in features for v in f["reference_logps"]] == pytest.approx(alone, abs=1e-4)
    trainer = TitleTrainer(model=model, args=TrainingArguments(str(tmp_path), report_to="none", use_cpu=True))
    trainer.dpo_beta = 0.5
    with torch.no_grad():
        assert trainer.compute_loss(model, collator(features)).item() == pytest.approx(math.log(2), abs=1e-4)
        chosen = trainer.compute_loss(model, collator([{k: f[k] for k in ("input_ids", "labels")} for f in features]))
        trainer.dpo_nll_weight = 0.5  # RPO: plus half the preferred titles' cross-entropy
        rpo = trainer.compute_loss(model, collator(features))
        assert rpo.item() == pytest.approx(math.log(2) + 0.5 * chosen.item(), abs=1e-4)
        loss = trainer.dpo_loss(torch.tensor([-1.0, -5.0, -3.0, -2.0]), torch.tensor([[-2.0, -3.0], [-4.0, -4.0]]))
    # pair 1: chosen -1 vs its reference -2, rejected -3 vs -3: margin 0.5 x (1 - 0) = 0.5; pair 2: 0.5 x (-1 - 2)
    # = -1.5. The loss is the mean of -log sigmoid(margin): (0.474077 + 1.701413) / 2, worked out by hand.
    assert loss.item() == pytest.approx(1.087745, abs=1e-5)


def test_dpo_run_prefers_the_chosen_titles(tiny_model_dir, train_file, tmp_path):
    """`train --objective dpo` on label's pairs: the pairs' accuracy rises, the validation loss is the
    cross-entropy on the real titles, the adapter is saved; rows without a rejected title are refused."""
    out = tmp_path / "dpo"
    result = CliRunner().invoke(cli, train_args(tiny_model_dir, pairs_file(train_file, tmp_path), out,
                                                "--objective", "dpo", "--dpo-beta", "0.5", "--max-steps", "10",
                                                "--eval-steps", "10"))
    assert result.exit_code == 0, result.output
    rows = RunDir(out).read_metrics()
    trained = [r for r in rows if "loss" in r]
    assert trained[0]["loss"] == pytest.approx(0.6931, abs=1e-3) and trained[-1]["loss"] < trained[0]["loss"]
    assert trained[-1]["pair_accuracy"] > trained[0]["pair_accuracy"] and trained[-1]["reward_margin"] > 0
    assert any("eval_loss" in r for r in rows) and (out / "adapter_model.safetensors").is_file()
    result = CliRunner().invoke(cli, train_args(tiny_model_dir, train_file, tmp_path / "x", "--objective", "dpo"))
    assert result.exit_code == 1 and "objective dpo needs a rejected title on every training row" in result.output
