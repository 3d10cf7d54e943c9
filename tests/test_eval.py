import json
import shutil

import pytest
from click.testing import CliRunner

from chatgentitle.cli import cli
from chatgentitle.evaluation.metrics import bootstrap_ci, category_group, score_pairs, summarise
from chatgentitle.evaluation.report import lead_1
from chatgentitle.titling.ranking import KnownTitles

ABSTRACT = "We study graph neural networks for learning. Results are strong."


def test_rouge_on_hand_checked_pairs():
    refs = ["Graph Neural Networks for Learning", "Deep Models"]
    preds = ["graph neural network", "Deep models."]
    s = score_pairs(preds, refs, [ABSTRACT, "deep models"], known=KnownTitles(["Deep Models"]))
    # 3 of 3 predicted unigrams match 3 of 5 reference ones (stemming: network ~ networks): F1 = 2*1*.6/1.6
    assert s[0].rouge1 == pytest.approx(75.0)
    assert s[0].rouge2 == pytest.approx(200 / 3)  # bigrams: P = 2/2, R = 2/4
    assert s[0].rougeL == pytest.approx(75.0)
    assert s[0].exact == 0 and s[1].exact == 100  # normalised: case and final period ignored
    assert s[0].copy_rate == pytest.approx(100 * 2 / 3)  # "network" is not verbatim in the abstract
    assert s[1].duplicate == 100 and s[0].duplicate == 0
    assert s[0].repeated == 0
    assert score_pairs(["deep models and deep models"], ["x"], ["y"])[0].repeated == 100
    summary = summarise(s, preds, refs)
    assert summary["rouge1"] == pytest.approx(87.5) and summary["exact"] == 50
    assert summary["mean_words"] == 2.5 and summary["reference_mean_words"] == 3.5


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [float(v) for v in range(100)]
    low, high = bootstrap_ci(values)
    assert low < 49.5 < high and (low, high) == bootstrap_ci(values)
    assert bootstrap_ci([3.0]) == (3.0, 3.0)


def test_lead_1_and_category_groups():
    assert lead_1(ABSTRACT) == "We study graph neural networks for learning"
    assert [category_group(c) for c in ("cs.LG stat.ML", "cs.DS", "hep-th", "math.CO", "")] == [
        "cs.LG", "cs (other)", "physics", "math", "unknown"]


@pytest.fixture
def test_file(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [
        {"id": "p1", "title": "Graph Neural Networks for Learning", "abstract": ABSTRACT, "categories": "cs.LG",
         "update_date": "2026-04-02"},
        {"id": "p2", "title": "Quantum Field Theory Spectra", "abstract": "We compute quantum field theory spectra. "
         "They agree.", "categories": "hep-th", "update_date": "2026-04-03"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_report_with_a_model_lead_1_and_predictions(tmp_path, test_file, tiny_model_dir):
    from chatgentitle.training.config import TrainConfig
    from chatgentitle.training.loop import train

    data = tmp_path / "train.jsonl"
    data.write_text(test_file.read_text())
    run = train(TrainConfig(base_model=str(tiny_model_dir), data=str(data), output_dir=str(tmp_path / "tiny"),
                            batch_size=2, micro_batch_size=2, max_steps=1, val_set_size=0, cutoff_len=64,
                            dtype="fp32", save_steps=100))
    preds = tmp_path / "chatgpt.jsonl"
    preds.write_text('{"id": "p1", "title": "Graph Neural Networks for Learning"}\n'
                     '{"id": "zzz", "title": "unknown paper"}\n{"id": "p2", "title": ""}\nnot json\n')
    out = tmp_path / "report"
    args = ["eval", "--data", str(test_file), "--model", f"tiny={run}", "--model", f"short={run},max_new_tokens=1",
            "--baseline", "lead-1", "--predictions", f"chatgpt={preds}", "--out", str(out), "--max-new-tokens", "4",
            "--dtype", "fp32"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "1 ids not in the test data" in result.output
    assert f"{preds}:3: empty title for p2" in result.output and f"{preds}:4: needs a JSON object" in result.output
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.html", "scores.json", "predictions.jsonl", "metrics.png", "title_lengths.png",
            "predictions", "papers.jsonl"} <= names
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores["systems"]) == ["tiny", "short", "chatgpt", "lead-1"]
    assert scores["systems"]["short"]["mean_words"] <= 1 < scores["systems"]["tiny"]["mean_words"]  # its own decoding
    assert scores["systems"]["chatgpt"]["exact"] == 50.0 and scores["systems"]["chatgpt"]["rougeL"] == 50.0
    assert set(scores["by_category"]["lead-1"]) == {"cs.LG", "physics"}
    report = (out / "report.md").read_text()
    assert "| chatgpt | 50.0 [" in report and "## Best examples" in report and "ROUGE-L by category" in report
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["systems"]["lead-1"]["title"] == "We study graph neural networks for learning"
    # resumable: a second run generates nothing new
    again = CliRunner().invoke(cli, args)
    assert "tiny: 0 titles generated, 2 from the previous run" in again.output
    # a run retrained into the same folder is titled again, not read from the cache
    from test_generate import _retrained

    retrained = _retrained(run, tmp_path / "retrained")
    shutil.rmtree(run)
    retrained.rename(run)
    after = CliRunner().invoke(cli, args)
    assert "tiny: titling again, its cache was emptied (it was begun with another source.adapter)" in after.output
    assert "tiny: 2 titles generated, 0 from the previous run" in after.output
    assert "short: 2 titles generated" in after.output


def test_eval_zero_shot_baseline(tmp_path, test_file, tiny_model_dir):
    import shutil

    from transformers import AutoTokenizer

    args = ["eval", "--data", str(test_file), "--baseline", "zero-shot", "--out", str(tmp_path / "report"),
            "--max-new-tokens", "3", "--dtype", "fp32"]
    no_chat = CliRunner().invoke(cli, [*args, "--base-model", str(tiny_model_dir)])
    assert no_chat.exit_code == 1 and "has no chat template" in no_chat.output  # one line, no traceback
    chat_model = tmp_path / "tiny-chat"  # the tiny model with a chat template, as instruct models have
    shutil.copytree(tiny_model_dir, chat_model)
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} ### {% endfor %}"
    tokenizer.save_pretrained(chat_model)
    result = CliRunner().invoke(cli, [*args, "--base-model", str(chat_model)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "report"
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores["systems"]) == ["zero-shot"] and "rougeL" in scores["systems"]["zero-shot"]


def test_eval_bad_inputs(tmp_path, test_file):
    runner = CliRunner()
    missing = runner.invoke(cli, ["eval", "--data", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "test data not found" in missing.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "nope", "title": "x"}\n')
    result = runner.invoke(cli, ["eval", "--data", str(test_file), "--predictions", f"e={empty}", "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 1 and "no usable predictions" in result.output
    bad = runner.invoke(cli, ["eval", "--data", str(test_file), "--model", "x=runs/x,beams=2", "--out",
                              str(tmp_path / "o")])
    assert bad.exit_code == 1 and "'beams=2': give OPTION=VALUE with one of" in bad.output
    bad = runner.invoke(cli, ["eval", "--data", str(test_file), "--model", "x=runs/x,do_sample=ture", "--out",
                              str(tmp_path / "o")])
    assert bad.exit_code == 1 and "'do_sample=ture': do_sample takes a bool" in bad.output
    bad = runner.invoke(cli, ["eval", "--data", str(test_file), "--model", "x=runs/x,quantize=int8", "--out",
                              str(tmp_path / "o")])
    assert bad.exit_code == 1 and "quantize must be 8bit or 4bit" in bad.output


def test_a_model_system_takes_its_own_decoding_and_loading():
    from chatgentitle.evaluation.report import parse_systems
    from chatgentitle.titling.sources import SourceError, SourceSpec, load_sources

    fast, best = parse_systems(models=["fast=runs/x,dtype=fp32,num_beams=1", "best=default,consensus=32"],
                               spec=SourceSpec(dtype="bf16"))
    assert (fast.source.model, fast.source.dtype, fast.options) == ("runs/x", "fp32", {"num_beams": 1})
    assert (best.source.model, best.source.dtype, best.options) == ("default", "bf16", {"consensus": 32})
    with pytest.raises(SourceError, match="drop --quantize"):  # served together: one unquantised base
        load_sources(SourceSpec(quantize="8bit"), {"a": "default", "b": "default"})


def test_paired_difference_against_the_first_system():
    """The paired bootstrap resamples papers, not systems: a constant gain has a zero-width interval."""
    from chatgentitle.evaluation.metrics import PaperScore, paired_differences

    def scores(values):
        return [PaperScore(rouge1=v, rouge2=v, rougeL=v, exact=0, words=5, copy_rate=0, cliche=0, duplicate=0,
                           repeated=0) for v in values]

    base = [10.0, 50.0, 30.0, 70.0]
    paired = paired_differences({"a": scores(base), "b": scores([v + 2 for v in base]), "c": scores(base[::-1])})
    assert paired["b"] == {"against": "a", "rougeL_difference": 2.0, "rougeL_difference_ci95": [2.0, 2.0]}
    assert paired["c"]["rougeL_difference"] == 0.0 and paired["c"]["rougeL_difference_ci95"][0] < 0


def test_name_value_flags_are_read_one_way():
    from chatgentitle.config import split_named

    assert split_named("cs=runs/cs", "cs-lora") == ("cs", "runs/cs")
    assert split_named("runs/cs", "cs") == ("cs", "runs/cs")  # no name: the default
    assert split_named("runs/a=b", "a=b") == ("a=b", "runs/a=b")  # a path with "=" is not a name
    assert split_named("=runs/cs", "cs") == ("cs", "=runs/cs")
