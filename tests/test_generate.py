import json

import pytest
from click.testing import CliRunner

from chatgentitle.cli import cli
from chatgentitle.decoding.options import DecodingMode
from chatgentitle.titling.generator import GenerationOptions, TitleGenerator
from chatgentitle.titling.ranking import KnownTitles, Ranker, cliches_in, copy_rate

ABSTRACT = "we propose a novel method for learning graph neural networks"


@pytest.fixture(scope="module")
def generator(run_dir):
    return TitleGenerator.load(run_dir, dtype="fp32")


def test_generator_loads_template_and_base_from_run_dir(generator):
    assert generator.template.name == "compact"
    assert generator.name == "run"


def test_batch_equals_one_by_one(generator):
    abstracts = [ABSTRACT, "quantum field theory spectra", "deep models for image segmentation results"]
    options = GenerationOptions(max_new_tokens=6, repetition_penalty=1.0)
    batched = generator(abstracts, options)
    assert batched == [generator([a], options)[0] for a in abstracts]


@pytest.mark.parametrize(("num_beams", "consensus"), [(1, 0), (4, 0), (4, 8)])
def test_should_stop_ends_decoding_between_steps(generator, num_beams, consensus):
    options = GenerationOptions(max_new_tokens=30, num_beams=num_beams, repetition_penalty=1.0, consensus=consensus)
    asked = []

    def stop_after_two_steps():
        asked.append(1)
        return len(asked) >= 2

    stopped = generator.generate([ABSTRACT], options, should_stop=stop_after_two_steps)[0][0]
    assert len(stopped.split()) <= 2
    assert len(asked) == (3 if consensus else 2)  # with consensus the sampling asks once more, and stops
    assert generator.generate([ABSTRACT], options, should_stop=lambda: False) == generator.generate([ABSTRACT], options)


def test_max_new_tokens_is_respected(generator):
    short = generator([ABSTRACT], GenerationOptions(max_new_tokens=2, repetition_penalty=1.0))[0]
    assert len(short.split()) <= 2  # one word-level token per word


def test_beams_and_sampling_give_different_outputs(generator):
    import torch

    beams = generator.generate([ABSTRACT], GenerationOptions(max_new_tokens=8, num_beams=4, num_candidates=4))[0]
    torch.manual_seed(0)
    sampled = generator.generate([ABSTRACT], GenerationOptions(max_new_tokens=8, do_sample=True, temperature=2.0,
                                                               num_candidates=4))[0]
    assert beams != sampled
    assert len(set(beams)) == len(beams) and len(set(sampled)) == len(sampled)  # distinct


def test_no_repeat_ngram_size_forbids_repeated_tokens(generator):
    options = GenerationOptions(max_new_tokens=12, repetition_penalty=1.0, no_repeat_ngram_size=1)
    assert options.generate_kwargs()["no_repeat_ngram_size"] == 1
    assert "no_repeat_ngram_size" not in GenerationOptions().generate_kwargs()
    assert GenerationOptions(do_sample=True).generate_kwargs()["num_beams"] == 1  # plain sampling
    title = generator([ABSTRACT], options)[0]
    ids = generator.tokenizer(title, add_special_tokens=False)["input_ids"]
    assert ids and len(set(ids)) == len(ids)
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        GenerationOptions(no_repeat_ngram_size=-1)


def test_beam_that_repeats_itself_is_not_chosen():
    from chatgentitle.titling.generator import pick_titles

    beams = ["graph neural graph neural graph neural", "graph neural networks", "a method", "Graph neural networks.",
             "networks"]
    assert pick_titles(beams, 1) == ["graph neural networks"]
    assert pick_titles(beams, 3) == ["graph neural networks", "a method", "networks"]  # near-duplicate dropped
    assert pick_titles(["", " "], 2) == [""]
    copies = ["Co-evolution of Bar and Spiral Arms", "Co-evolution of bar and spiral arms.",
              "The Co-Evolution of Bar and Spiral Arms", "Co-evolution of bar, and spiral arms", "Bars in spirals"]
    assert pick_titles(copies, 5) == ["Co-evolution of Bar and Spiral Arms", "Bars in spirals"]


def test_stream_yields_growing_title(generator):
    greedy = GenerationOptions(max_new_tokens=5, repetition_penalty=1.0, num_beams=1, consensus=0)
    assert greedy.streams and not GenerationOptions().streams  # beams and consensus settle titles at the end
    pieces = list(generator.stream(ABSTRACT, greedy))
    assert pieces and pieces[-1] == generator([ABSTRACT], greedy)[0]
    with pytest.raises(ValueError, match="does not stream"):
        next(generator.stream(ABSTRACT, GenerationOptions()))


def test_ranking_prefers_faithful_short_unique_titles():
    ranker = Ranker(embedder=None, known=KnownTitles(["Graph Neural Networks for Learning"]))
    ranked = ranker.rank(ABSTRACT, [
        "A Novel Approach Towards Something Else Entirely Unrelated To Anything Here At All",
        "Learning Graph Neural Networks",
        "Graph neural networks for learning!",
    ])
    assert ranked[0].title == "Learning Graph Neural Networks"
    assert ranked[-1].cliches == ["a novel", "novel approach", "towards"]
    assert ranked[1].known_match == "graph neural networks for learning"
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    assert cliches_in("Rethinking attention") == ["rethinking"]
    assert copy_rate("graph networks of cats", ABSTRACT) == 0.5


def test_cli_single_and_stdin(run_dir):
    runner = CliRunner()
    result = runner.invoke(cli, ["generate", ABSTRACT, "--model", str(run_dir), "--dtype", "fp32",
                                 "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    expected = TitleGenerator.load(run_dir, dtype="fp32")([ABSTRACT], GenerationOptions(max_new_tokens=4))[0]
    assert result.output.strip() == expected
    piped = runner.invoke(cli, ["generate", "-", "--model", str(run_dir), "--dtype", "fp32", "--max-new-tokens",
                                "4"], input=ABSTRACT)
    assert piped.output == result.output
    empty = runner.invoke(cli, ["generate", "-", "--model", str(run_dir)], input="  ")
    assert empty.exit_code == 1 and "the abstract is empty" in empty.output


def test_cli_samples_stream_and_json(run_dir):
    runner = CliRunner()
    model = ["--model", str(run_dir), "--dtype", "fp32", "--max-new-tokens", "4"]
    samples = runner.invoke(cli, ["generate", "--samples", *model])
    assert samples.exit_code == 0, samples.output
    assert samples.output.count("generated:") == 3 and samples.output.count("real:") == 3
    assert "3 titles in" in samples.output
    streamed = runner.invoke(cli, ["generate", ABSTRACT, "--stream", "--num-beams", "1", *model])
    plain = runner.invoke(cli, ["generate", ABSTRACT, "--num-beams", "1", *model])
    assert streamed.exit_code == 0 and streamed.output.split("\r")[-1] == plain.output  # the last line: the title
    as_json = runner.invoke(cli, ["generate", ABSTRACT, "--json", "-n", "2", *model])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert 1 <= len(rows) <= 2 and {"title", "score", "faithfulness", "words"} <= set(rows[0])


def test_cli_batch_file_is_resumable(run_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "abstract": f"{ABSTRACT} {i}"}) + "\n" for i in range(5)))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "p1", "title": "done before"}) + "\n" + '{"id": "p2", "tit')  # cut line
    args = ["generate", "--input", str(src), "--output", str(out), "--model", str(run_dir), "--dtype", "fp32",
            "--max-new-tokens", "4", "--batch-size", "2"]
    unknown = CliRunner().invoke(cli, args)  # a file that does not say what made it is not continued
    assert unknown.exit_code == 1 and "does not say what made it" in unknown.output and "--adopt" in unknown.output
    result = CliRunner().invoke(cli, [*args, "--adopt"])
    assert result.exit_code == 0, result.output
    assert "4 titles written" in result.output and "1 already there" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["p0", "p1", "p2", "p3", "p4"]
    assert all("seconds" in r for r in rows if r["id"] != "p1")
    again = CliRunner().invoke(cli, args)
    assert "0 titles written" in again.output


def _retrained(run_dir, into):
    """A copy of run_dir whose adapter weights moved a little (what retraining into the same folder does)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(run_dir, into)
    weights = load_file(into / "adapter_model.safetensors")
    save_file({name: tensor + 0.5 for name, tensor in weights.items()}, into / "adapter_model.safetensors")
    return into


def test_a_batch_file_is_not_continued_by_other_options_or_weights(run_dir, tmp_path):
    import shutil

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "abstract": f"{ABSTRACT} {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    args = ["generate", "--input", str(src), "--output", str(out), "--dtype", "fp32", "--max-new-tokens", "4"]
    assert CliRunner().invoke(cli, [*args, "--model", str(run_dir)]).exit_code == 0
    begun = out.read_text()
    assert json.loads((tmp_path / "out.jsonl.made-by.json").read_text())["options"]["max_new_tokens"] == 4

    other_options = CliRunner().invoke(cli, [*args, "--model", str(run_dir), "--num-beams", "2"])
    assert other_options.exit_code == 1 and len(other_options.output.strip().splitlines()) == 1
    assert "out.jsonl: it was begun with another options.num_beams: give another --output" in other_options.output

    copy = shutil.copytree(run_dir, tmp_path / "copy")  # the same weights elsewhere continue the file
    assert "0 titles written" in CliRunner().invoke(cli, [*args, "--model", str(copy)]).output
    moved = CliRunner().invoke(cli, [*args, "--model", str(_retrained(run_dir, tmp_path / "retrained"))])
    assert moved.exit_code == 1 and "begun with another source.adapter:" in moved.output
    (tmp_path / "out.jsonl.made-by.json").write_text("{cut")
    unreadable = CliRunner().invoke(cli, [*args, "--model", str(run_dir)])
    assert unreadable.exit_code == 1 and "out.jsonl.made-by.json cannot be read" in unreadable.output
    assert out.read_text() == begun  # refused, nothing lost


def test_cli_csv_and_txt_inputs(run_dir, tmp_path):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text('id,abstract\na1,"graph neural networks, deep models"\n')
    txt_file = tmp_path / "in.txt"
    txt_file.write_text("graph neural networks\n\nquantum field theory\n")
    for src, ids in ((csv_file, ["a1"]), (txt_file, ["1", "3"])):
        out = tmp_path / f"{src.stem}{src.suffix}.out.jsonl"
        result = CliRunner().invoke(cli, ["generate", "--input", str(src), "--output", str(out), "--model",
                                          str(run_dir), "--max-new-tokens", "3"])
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ids


def test_cli_user_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["generate", "x", "--model", str(tmp_path)])
    assert result.exit_code == 1 and "not an adapter dir" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["generate", "x", "--num-beams", "0"])  # a usage error: the bound is shown
    assert result.exit_code == 2 and "--num-beams" in result.output and "1<=x<=8" in result.output
    result = runner.invoke(cli, ["generate"])
    assert result.exit_code == 1 and "give an ABSTRACT" in result.output


def test_export_merged_checkpoint_matches_adapter(run_dir, tmp_path, generator):
    import torch
    from transformers import AutoModelForCausalLM

    result = CliRunner().invoke(cli, ["export", "--adapter", str(run_dir), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert f"--lora-modules run={tmp_path / 'merged' / 'adapter'}" in result.output  # what vLLM needs
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert (tmp_path / "merged" / "adapter" / "adapter_model.safetensors").is_file()
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        assert torch.allclose(merged(x).logits, generator.model(x).logits, atol=1e-5)


def test_packaged_default_adapter_is_complete():
    from safetensors import safe_open

    from chatgentitle.model.run_dir import RunDir
    from chatgentitle.titling.generator import default_adapter_dir

    folder = default_adapter_dir()
    assert folder is not None
    info = RunDir(folder).describe()
    assert (info.base_model, info.template.name, info.cutoff_len) == ("smollm2-135m", "compact", 256)
    assert (folder / "adapter_model.safetensors").stat().st_size < 20e6
    with safe_open(folder / "adapter_model.safetensors", "pt") as weights:
        assert any("lora_A" in key for key in weights.keys())
    # an ensemble: stage 2's adapter joins the GPU run's in the consensus (docs/search.md)
    members = RunDir(folder).members()
    assert [m.name for m in members] == ["stage2"]
    assert members[0].describe() == info


def test_consensus_picks_the_title_the_others_agree_with():
    from chatgentitle.titling.generator import consensus_titles

    drawn = ["Graph networks for molecules", "Graph neural networks for molecules", "Title: Cats.",
             "Graph neural networks for molecules.", "Neural graph networks for molecules",
             "Graph neural networks for molecules",
             "molecules molecules molecules molecules"]
    assert consensus_titles(drawn, 1) == ["Graph neural networks for molecules"]  # drawn most, close to the rest
    assert consensus_titles(drawn, 8)[-1] == "molecules molecules molecules molecules"  # repeats go last
    assert consensus_titles(["", "Title:"], 2) == [""]


def test_closest_titles_put_the_one_nearest_the_real_title_first():
    from chatgentitle.titling.ranking import closest_titles

    found = ["Graph networks", "Graph neural networks for molecules", "Cats", "Neural graphs for molecules"]
    real = "Graph Neural Networks for Molecular Property Prediction"
    assert closest_titles(found, real) == ["Graph neural networks for molecules", "Graph networks",
                                           "Neural graphs for molecules", "Cats"]
    assert closest_titles(["b", "a"], "c") == ["b", "a"]  # ties keep the consensus's order


def test_consensus_options_are_checked():
    assert GenerationOptions(consensus=4).mode is DecodingMode.CONSENSUS
    assert GenerationOptions(consensus=4, do_sample=True).mode is DecodingMode.SAMPLE  # sampling decodes as it says
    assert GenerationOptions(consensus=0).mode is DecodingMode.BEAM_SEARCH
    assert GenerationOptions(consensus=0, num_beams=1).mode is DecodingMode.GREEDY
    assert GenerationOptions(consensus=0, num_beams=1, num_candidates=2).mode is DecodingMode.BEAM_SEARCH
    assert GenerationOptions(no_repeat_ngram_size=2).mode is DecodingMode.CONSTRAINED_BEAM_SEARCH
    with pytest.raises(ValueError, match="consensus must be between"):
        GenerationOptions(consensus=65)


@pytest.fixture(scope="module")
def ensemble_dir(run_dir, tmp_path_factory):
    """The tiny run with a second member whose LoRA update is tripled (so it titles differently)."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("ensemble") / "ens"
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    member = folder / "ensemble" / "tripled"
    shutil.copytree(run_dir, member, ignore=shutil.ignore_patterns("checkpoint-*"))
    weights = load_file(member / "adapter_model.safetensors")
    save_file({k: 3 * v if "lora_B" in k else v for k, v in weights.items()}, member / "adapter_model.safetensors")
    return folder


def test_ensemble_members_join_the_consensus(ensemble_dir, generator, monkeypatch):
    from chatgentitle.decoding.search import beam_search, decode
    from chatgentitle.model import loading as modeling

    loads = []
    load_base = modeling.load_base
    monkeypatch.setattr(modeling, "load_base", lambda *a, **k: loads.append(a) or load_base(*a, **k))
    main = generator
    generator = TitleGenerator.load(ensemble_dir, dtype="fp32")
    plain = GenerationOptions(max_new_tokens=6)
    assert generator([ABSTRACT], GenerationOptions(max_new_tokens=6, consensus=0)) == main(
        [ABSTRACT], GenerationOptions(max_new_tokens=6, consensus=0))  # without consensus: its own adapter alone
    assert len(loads) == 1  # the member is loaded only when a consensus needs it
    options = GenerationOptions(max_new_tokens=6, num_beams=2, consensus=3, repetition_penalty=1.0)
    titles = generator.generate([ABSTRACT], options)[0]
    assert len(loads) == 2 and len(generator.members) == 1
    assert titles == generator.generate([ABSTRACT], options)[0]  # seeded: the same title every time
    input_ids, attention_mask = generator.encode([ABSTRACT, "quantum field theory"])
    pools = decode([generator.model, *generator.members], generator.tokenizer, input_ids, attention_mask, options)
    assert [len(pool) for pool in pools] == [2 * (2 + 3)] * 2  # each model's 2 beams and 3 samples
    alone = TitleGenerator.load(ensemble_dir / "ensemble" / "tripled", dtype="fp32")
    beams = beam_search(alone.model, input_ids, attention_mask, num_beams=2, max_new_tokens=6,
                        eos_token_id=alone.tokenizer.eos_token_id)[0]
    assert pools[0][5:7] == [alone.tokenizer.decode(s, skip_special_tokens=True) for s in beams]  # as it decodes alone
    assert generator([ABSTRACT], plain) == main([ABSTRACT], plain)  # plain beams: the run's own adapter alone


def test_ensemble_member_needs_the_same_base(ensemble_dir, tmp_path):
    import shutil

    from chatgentitle.model.loading import ModelError

    folder = tmp_path / "ens"
    shutil.copytree(ensemble_dir, folder)
    config = folder / "ensemble" / "tripled" / "config.yaml"
    config.write_text(config.read_text().replace("base_model:", "base_model: other-base\nold_base:"))
    with pytest.raises(ModelError, match="base model"):
        TitleGenerator.load(folder, dtype="fp32")


def test_label_writes_trainable_labels_and_never_a_held_out_paper(run_dir, tmp_path):
    """`label`: consensus titles for training papers in prepare's format, resumable; a held-out id stops it."""
    import json

    from click.testing import CliRunner
    from helpers import paper_row

    from chatgentitle.cli import cli
    from chatgentitle.titling.ranking import closest_titles
    from chatgentitle.training.examples import load_examples

    train, val, out = tmp_path / "train.jsonl", tmp_path / "val.jsonl", tmp_path / "labels.jsonl"
    train.write_text("".join(json.dumps(paper_row(i)) + "\n" for i in range(5)))
    val.write_text("".join(json.dumps(paper_row(i)) + "\n" for i in range(5, 8)))
    args = ["label", "--model", str(run_dir), "--data", str(train), "--held-out", str(val), "--output", str(out),
            "--consensus", "4", "--max-new-tokens", "6", "--dtype", "fp32"]
    result = CliRunner().invoke(cli, [*args, "--max-papers", "3"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, args)
    assert "2 labels written" in result.output and "(3 already there)" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [paper_row(i)["id"] for i in range(5)]
    assert all(r["real_title"] == paper_row(i)["title"] and r["title"] for i, r in enumerate(rows))
    assert len(load_examples(out)) == 5  # what train --data reads: the label is the title
    closest = tmp_path / "closest.jsonl"
    result = CliRunner().invoke(cli, [*args, "--output", str(closest), "--label-by", "real-title"])
    assert result.exit_code == 0, result.output
    for row in map(json.loads, closest.read_text().splitlines()):  # the label is the nearest of the 8 best
        assert closest_titles([row["title"], row.get("rejected", row["title"])], row["real_title"])[0] == row["title"]
    val.write_text(json.dumps(paper_row(2)) + "\n")  # a training paper that is also held out
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and f"paper {paper_row(2)['id']} is held out" in result.output


def test_auto_dtype_on_a_cpu_is_what_measures_faster_here(monkeypatch):
    """auto picks bf16 on a CPU only when a bf16 matmul is measured at least BF16_SPEEDUP faster than fp32."""
    import math
    import time

    import torch

    from chatgentitle.model import loading

    loading._cpu_bf16_speedup.cache_clear()  # measured here, into this test's cache dir
    began = time.perf_counter()
    measured = loading._cpu_bf16_speedup()
    assert math.isfinite(measured) and measured > 0
    assert loading._cpu_bf16_speedup() == measured and time.perf_counter() - began < 5  # once per process
    loading._cpu_bf16_speedup.cache_clear()  # a new process on this host reads the measurement, never retimes
    monkeypatch.setattr(loading, "_measure_bf16_speedup", lambda: pytest.fail("measured twice on one host"))
    assert loading._cpu_bf16_speedup() == measured
    for speedup, expected in ((2.0, torch.bfloat16), (1.25, torch.bfloat16), (1.1, torch.float32),
                              (0.6, torch.float32)):
        monkeypatch.setattr(loading, "_cpu_bf16_speedup", lambda s=speedup: s)
        assert loading.resolve_dtype("auto", "cpu") == expected
        assert loading.resolve_dtype("fp32", "cpu") == torch.float32  # asked for: never measured
