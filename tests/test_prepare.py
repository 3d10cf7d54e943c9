import gzip
import json

import pytest
from click.testing import CliRunner
from helpers import DATA, paper_row, shared_path

from chatgentitle.cli import cli
from chatgentitle.data.prompt import SEED_INSTRUCTION
from chatgentitle.data.records import BadLines, read_papers


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def run_prepare(*args):
    result = CliRunner().invoke(cli, ["prepare", *map(str, args)])
    return result


def test_snapshot_wrapping_and_latex_are_cleaned_and_withdrawn_dropped(tmp_path):
    result = run_prepare(DATA / "snapshot_sample.json", "--out", tmp_path, "--val-size", "0", "--test-size", "0")
    assert result.exit_code == 0, result.output
    papers = {p["id"]: p for p in lines(tmp_path / "train.jsonl")}
    assert papers["0704.0001"]["title"] == (
        "Calculation of prompt diphoton production cross sections at Tevatron and LHC energies"
    )
    assert papers["0704.0001"]["abstract"].startswith("A fully differential calculation in perturbative")
    assert "\n" not in papers["0704.0001"]["abstract"]
    assert papers["0704.0003"]["title"] == (
        "The evolution of the Earth-Moon system based on the $\\Lambda$ dark matter field fluid model"
    )
    assert "$(k,\\ell)$-pebble game" in papers["0704.0002"]["abstract"]
    assert "0704.0004" not in papers  # withdrawn
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["records_read"] == 6 and stats["kept"] == 5 and stats["dropped"] == {"withdrawn": 1}
    assert set(papers["0704.0002"]) == {"id", "title", "abstract", "categories", "update_date"}


def test_every_kind_of_bad_line_is_reported_and_good_lines_kept(tmp_path):
    src = tmp_path / "dirty.jsonl"
    good = [json.dumps(paper_row(i)) for i in range(3)]
    src.write_bytes(
        "\n".join([
            good[0],
            "{not json",
            json.dumps(paper_row(9, title=None)),           # missing field
            json.dumps(paper_row(10, abstract=["a list"])),  # wrong type
            good[1],
            "[1, 2]",                                         # not an object
        ]).encode()
        + b"\n" + b'{"id": "2501.1", "title": "caf\xe9 \xff"}\n' + good[2].encode() + b"\n"
    )
    result = run_prepare(src, "--out", tmp_path / "out", "--val-size", "0", "--test-size", "0")
    assert result.exit_code == 0
    out = result.output
    assert f"{src}:2: invalid JSON" in out
    assert f"{src}:3: missing field 'title'" in out
    assert f"{src}:4: field 'abstract' should be a string, got array" in out
    assert f"{src}:6: expected a JSON object, got array" in out
    assert f"{src}:7: undecodable bytes (not UTF-8)" in out
    assert len(lines(tmp_path / "out" / "train.jsonl")) == 3
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["bad_lines"] == 5
    strict = run_prepare(src, "--out", tmp_path / "strict", "--strict")
    assert strict.exit_code == 1


def test_truncated_gzip_keeps_what_was_read(tmp_path, papers_file):
    data = papers_file.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    bad = BadLines()
    papers = list(read_papers([cut], bad))
    assert 0 < len(papers) < 40
    assert bad.count == 1 and "truncated or corrupt gzip" in bad.messages[0]


def test_missing_input_is_one_line_error(tmp_path):
    result = run_prepare(tmp_path / "nope.json", "--out", tmp_path / "out")
    assert result.exit_code != 0
    assert "input not found" in result.output and "Traceback" not in result.output


def test_duplicates_by_id_version_and_by_content(tmp_path):
    src = tmp_path / "dups.jsonl"
    rows = [
        paper_row(1),
        paper_row(1, id="2501.00001v2", title="Another title entirely here"),  # same id, other version
        paper_row(2, id="2501.99999", title="ROBUST graph neural networks number 1!"),  # same content
        paper_row(3),
    ]
    rows[2]["abstract"] = rows[0]["abstract"]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert run_prepare(src, "--out", tmp_path / "o", "--val-size", "0", "--test-size", "0").exit_code == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["dropped"] == {"duplicate_id": 1, "duplicate_content": 1}
    assert [p["id"] for p in lines(tmp_path / "o" / "train.jsonl")] == ["2501.00001", "2501.00003"]


def make_many(tmp_path, n=500):
    src = tmp_path / "many.jsonl.gz"
    with gzip.open(src, "wt") as f:
        for i in range(n):
            cats = ["cs.LG cs.AI", "cs.CV", "math.CO cs.LG", "hep-th"][i % 4]
            f.write(json.dumps(paper_row(i, categories=cats, update_date=f"20{15 + i % 12}-0{1 + i % 9}-01"))
                    + "\n")
    return src


def test_hash_split_never_leaks_and_counts_are_exact(tmp_path):
    src = make_many(tmp_path)
    out = tmp_path / "o"
    assert run_prepare(src, "--out", out, "--val-size", "50", "--test-size", "0.1").exit_code == 0
    splits = {s: {p["id"] for p in lines(out / f"{s}.jsonl")} for s in ("train", "val", "test")}
    assert len(splits["val"]) == 50
    assert 25 < len(splits["test"]) < 80
    assert sum(map(len, splits.values())) == 500
    assert not (splits["train"] & splits["val"] or splits["train"] & splits["test"] or splits["val"] & splits["test"])
    # the same paper lands in the same split whatever else is in the input
    assert run_prepare(src, "--out", tmp_path / "o2", "--val-size", "0.1", "--test-size", "0.1").exit_code == 0
    again = {p["id"] for p in lines(tmp_path / "o2" / "test.jsonl")}
    assert again == splits["test"]


def test_temporal_split_is_exact(tmp_path):
    src = make_many(tmp_path)
    out = tmp_path / "o"
    assert run_prepare(src, "--out", out, "--test-since", "2025-01-01", "--val-size", "20").exit_code == 0
    test = lines(out / "test.jsonl")
    rest = lines(out / "train.jsonl") + lines(out / "val.jsonl")
    assert test and all(p["update_date"] >= "2025-01-01" for p in test)
    assert all(p["update_date"] < "2025-01-01" for p in rest)
    assert len(test) + len(rest) == 500 and len(lines(out / "val.jsonl")) == 20


def test_sample_is_deterministic_and_seeded(tmp_path):
    src = make_many(tmp_path)
    ids = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert run_prepare(src, "--out", tmp_path / name, "--sample", "100", "--seed", seed).exit_code == 0
        ids.append(sorted(p["id"] for s in ("train", "val", "test") for p in lines(tmp_path / name / f"{s}.jsonl")))
    assert len(ids[0]) == 100 and ids[0] == ids[1] and ids[0] != ids[2]


def test_category_and_date_selection(tmp_path):
    src = make_many(tmp_path, 40)
    args = ["--val-size", "0", "--test-size", "0"]
    assert run_prepare(src, "--out", tmp_path / "a", "--categories", "cs.LG", *args).exit_code == 0
    primary = lines(tmp_path / "a" / "train.jsonl")
    assert primary and all(p["categories"].startswith("cs.LG") for p in primary)
    assert run_prepare(src, "--out", tmp_path / "b", "--categories", "cs.LG", "--any-category", *args).exit_code == 0
    assert len(lines(tmp_path / "b" / "train.jsonl")) == 20
    assert run_prepare(src, "--out", tmp_path / "c", "--preset", "cs", *args).exit_code == 0
    assert len(lines(tmp_path / "c" / "train.jsonl")) == 20  # primary cs.LG and cs.CV
    dates = ["--since", "2020-01-01", "--until", "2022-12-31"]
    assert run_prepare(src, "--out", tmp_path / "d", *dates, *args).exit_code == 0
    assert all("2020" <= p["update_date"][:4] <= "2022" for p in lines(tmp_path / "d" / "train.jsonl"))


def test_alpaca_format(tmp_path):
    result = run_prepare(DATA / "snapshot_sample.json", "--out", tmp_path, "--format", "jsonl,alpaca",
                         "--val-size", "0", "--test-size", "0")
    assert result.exit_code == 0
    rows = json.loads((tmp_path / "train.alpaca.json").read_text())
    assert len(rows) == 5 and set(rows[0]) == {"instruction", "input", "output"}
    assert rows[0]["instruction"] == SEED_INSTRUCTION
    assert json.loads((tmp_path / "val.alpaca.json").read_text()) == []


def test_interrupted_run_leaves_no_half_outputs(tmp_path):
    from chatgentitle.data.prepare import PrepareConfig, prepare

    def papers_then_ctrl_c():
        yield from read_papers([DATA / "snapshot_sample.json"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(papers_then_ctrl_c(), tmp_path, PrepareConfig(), BadLines())
    assert list(tmp_path.iterdir()) == []


def test_shared_snapshot_lines(tmp_path):
    name = "wanng-ide_arxivSpider_mnbvc__arxiv-metadata-oai-snapshot.head200.jsonl"
    src = shared_path("fixtures", "kaggle_snapshot", name)
    result = run_prepare(src, "--out", tmp_path, "--format", "jsonl,alpaca")
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["records_read"] == 200 and stats["bad_lines"] == 0 and stats["kept"] > 180
    first = lines(tmp_path / "train.jsonl")[0]
    assert "\n" not in first["abstract"] and "  " not in first["title"]
