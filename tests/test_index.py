"""Papers like yours: the paper index (built, grown, resumed, refused) and related papers in answers."""

import json

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from helpers import FakeGenerator, paper_row

from chatgentitle.cli import cli
from chatgentitle.data import index as paper_index
from chatgentitle.data.index import PaperIndex
from chatgentitle.data.records import read_papers

TOPICS = {
    "graph": ("Message passing on large graphs", "Graph neural networks pass messages between nodes of large graphs; "
              "we scale message passing to billions of edges with sampling."),
    "quantum": ("Spectra of quantum field theories", "We compute spectra of quantum field theory on the lattice and "
                "compare the spectra with perturbation theory."),
    "segment": ("Robust image segmentation", "Image segmentation models fail on corrupted images; we train robust "
                "segmentation models with corrupted images and show robust results."),
    "language": ("Small language models write titles", "Small language models fine-tuned on abstracts write titles "
                 "of research papers close to the authors' titles."),
}


def _rows(start: int, count: int) -> list[dict]:
    rows = []
    for i in range(start, start + count):
        topic = list(TOPICS)[i % len(TOPICS)]
        title, abstract = TOPICS[topic]
        rows.append(paper_row(i, title=f"{title}, part {i}", abstract=f"{abstract} Study number {i}."))
    return rows


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def built(tmp_path):
    papers = _write(tmp_path / "papers.jsonl", _rows(0, 40))
    out = tmp_path / "index.db"
    result = CliRunner().invoke(cli, ["index", papers, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "40 papers added (40 read)" in result.output
    return out


def test_a_rerun_adds_only_new_ids(built, tmp_path):
    more = _write(tmp_path / "more.jsonl", _rows(30, 20))  # 10 already indexed, 10 new
    result = CliRunner().invoke(cli, ["index", more, "--out", str(built)])
    assert result.exit_code == 0 and "10 papers added (20 read)" in result.output, result.output
    with PaperIndex(built) as index:
        assert len(index) == 50


def test_neighbours_share_the_topic_and_never_are_the_paper_itself(built):
    title, abstract = TOPICS["quantum"]
    query = f"{abstract} Study number 1."  # paper 2501.00001's own abstract
    with PaperIndex(built) as index:
        found = index.nearest(query, 5, exclude=("2501.00005",), title=f"{title}, part 9")
    assert len(found) == 5 and all("quantum" in n.title.lower() for n in found)
    assert all(n.id not in ("2501.00001", "2501.00005", "2501.00009") for n in found)  # itself: text, id, title
    assert all(0 < n.similarity <= 1 for n in found) and found == sorted(found, key=lambda n: -n.similarity)


def test_a_killed_build_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(paper_index, "BATCH", 4)
    rows = _rows(0, 10)
    papers = list(read_papers([_write(tmp_path / "p.jsonl", rows)]))

    def dies_after_seven():
        yield from papers[:7]
        raise KeyboardInterrupt  # as a kill between two batches would leave it

    with PaperIndex(tmp_path / "i.db", create=True) as index, pytest.raises(KeyboardInterrupt):
        for _ in index.add(dies_after_seven()):
            pass
    with PaperIndex(tmp_path / "i.db") as index:
        assert len(index) == 4  # the committed batch, whole
        list(index.add(papers))
        assert len(index) == 10


@pytest.mark.parametrize(("setup", "words"), [
    ("missing", ["no paper index", "chatgentitle index"]),
    ("other kind", ["holds a dense", "index"]),
    ("not sqlite", ["not a paper index"]),
])
def test_an_unusable_index_is_one_line(setup, words, run_dir, tmp_path):
    path = tmp_path / "index.db"
    if setup == "other kind":
        with PaperIndex(path, create=True) as index, index.db:
            index.db.execute("UPDATE meta SET value = 'dense' WHERE key = 'kind'")
    elif setup == "not sqlite":
        path.write_text("half-written\n" * 100)
    result = CliRunner().invoke(cli, ["generate", "an abstract about graphs", "--model", str(run_dir), "--related",
                                      "3", "--index", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines


def test_nothing_to_index_is_one_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(cli, ["index", str(empty), "--out", str(tmp_path / "i.db")])
    assert result.exit_code == 1 and "no papers to index" in result.output


def test_generate_lists_papers_like_yours(built, run_dir):
    _, abstract = TOPICS["segment"]
    result = CliRunner().invoke(cli, ["generate", abstract, "--model", str(run_dir), "--dtype", "fp32", "--related",
                                      "3", "--index", str(built), "--json", "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    related = json.loads(result.output)["related"]
    assert len(related) == 3 and all("segmentation" in r["title"].lower() for r in related)
    assert {"id", "title", "similarity"} <= set(related[0])


def test_a_batch_file_lists_related_papers_never_its_own(built, run_dir, tmp_path):
    rows = _rows(0, 3)
    src = _write(tmp_path / "in.jsonl", [{"id": r["id"], "abstract": r["abstract"]} for r in rows])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["generate", "--input", src, "--output", str(out), "--model", str(run_dir),
                                      "--dtype", "fp32", "--max-new-tokens", "4", "--related", "2", "--index",
                                      str(built)])
    assert result.exit_code == 0, result.output
    for line in out.read_text().splitlines():
        row = json.loads(line)
        assert len(row["related"]) == 2 and row["id"] not in {r["id"] for r in row["related"]}


def test_the_api_answers_with_related_papers(built):
    from chatgentitle.serving.app import create_app

    _, abstract = TOPICS["graph"]
    with PaperIndex(built) as index:
        client = TestClient(create_app([FakeGenerator()], index=index))
        answer = client.post("/v1/titles", json={"abstract": abstract, "related": 2})
        assert answer.status_code == 200, answer.text
        related = answer.json()["results"][0]["related"]
        assert len(related) == 2 and all("graphs" in r["title"].lower() for r in related)
        assert client.post("/v1/titles", json={"abstract": abstract, "related": 21}).status_code == 422
    without = TestClient(create_app([FakeGenerator()])).post("/v1/titles", json={"abstract": abstract, "related": 2})
    assert without.status_code == 422 and without.json()["detail"][0]["loc"] == ["body", "related"]


def test_an_abstract_with_no_word_in_common_has_no_related_papers(built):
    with PaperIndex(built) as index:
        assert index.nearest("Ein Verfahren zur Überschrift wissenschaftlicher Arbeiten.", 3) == []


def test_only_papers_dated_before_the_query_when_asked(built):
    _, abstract = TOPICS["graph"]
    with PaperIndex(built) as index:
        found = index.nearest(abstract, 5, before="2025-03-15")
    assert found and all(n.update_date <= "2025-03-15" for n in found)


def test_an_abstract_in_another_language_warns_in_one_line(built, run_dir):
    german = "Wir schlagen eine neue Methode zum Lernen tiefer neuronaler Netze vor, die Graphen nutzt. " * 3
    result = CliRunner().invoke(cli, ["generate", german, "--model", str(run_dir), "--dtype", "fp32", "--related",
                                      "2", "--index", str(built), "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "does not look English" in warning[0] and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def related_run(tiny_model_dir, tmp_path_factory):
    """A tiny run dir trained on the compact-related prompt: rows with and without related papers."""
    from chatgentitle.training.config import TrainConfig
    from chatgentitle.training.loop import train

    root = tmp_path_factory.mktemp("related")
    rows = [paper_row(i) | {"related": [{"id": f"2401.{j:05d}", "title": f"Deep graph models {j}",
                                         "similarity": 0.5} for j in range(i % 4)]} for i in range(8)]
    cfg = TrainConfig(base_model=str(tiny_model_dir), data=_write(root / "train.jsonl", rows),
                      output_dir=str(root / "run"), batch_size=4, micro_batch_size=4, max_steps=2, val_set_size=0,
                      cutoff_len=96, dtype="fp32", prompt_template="compact-related", save_steps=100)
    return train(cfg)


def test_a_model_that_reads_related_titles_gets_them_from_the_index(related_run, built):
    from chatgentitle.data.prompt import encode_prompt
    from chatgentitle.titling.generator import TitleGenerator
    from chatgentitle.titling.sources import guided

    generator = guided(TitleGenerator.load(related_run, dtype="fp32"), str(built))
    assert generator.template.related == 3 and generator.made_by["index"] == str(built.resolve())
    _, abstract = TOPICS["segment"]
    papers = generator.guide.nearest(abstract, 3)
    assert len(papers) == 3 and all("segmentation" in n.title for n in papers)
    prompt = generator._prompt(abstract, None)
    assert prompt == encode_prompt(generator.template, generator.tokenizer, abstract, None,
                                   generator.max_prompt_tokens, papers)
    generator.guide = None
    assert len(generator._prompt(abstract, None)) < len(prompt)
    assert generator(["we propose a novel method"], None)  # it titles without an index too


def test_without_an_index_it_titles_and_says_what_to_build(related_run, tmp_path):
    result = CliRunner().invoke(cli, ["generate", TOPICS["graph"][1], "--model", str(related_run), "--dtype", "fp32",
                                      "--index", str(tmp_path / "none.db"), "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "no paper index" in warning[0] and "chatgentitle index" in warning[0]
    assert result.stdout.strip()


def test_a_bad_related_field_names_its_line(tmp_path):
    from chatgentitle.training.examples import DataError, load_examples

    rows = [paper_row(1), paper_row(2) | {"related": [{"name": "not a paper"}]}]
    with pytest.raises(DataError, match=r"line 2: related must be"):
        load_examples(_write(tmp_path / "bad.jsonl", rows))
