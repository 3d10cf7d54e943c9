import pytest

from chatgentitle.data.prompt import (
    IGNORE_INDEX,
    SEED_INSTRUCTION,
    PromptTemplate,
    available_templates,
    clean_title,
    encode_example,
    encode_prompt,
)

TEMPLATE = PromptTemplate(
    name="test", prompt_input="Instruction {instruction} Input {input} Response",
    prompt_no_input="Instruction {instruction} Response", instruction="Write",
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_prompt_is_masked_and_title_ends_with_eos(tokenizer):
    example = encode_example(TEMPLATE, tokenizer, "we propose a method", "robust attention", cutoff_len=64)
    prompt = ids(tokenizer, "Instruction Write Input we propose a method Response")
    title = ids(tokenizer, "robust attention")
    eos = tokenizer.eos_token_id
    assert example["input_ids"] == prompt + title + [eos]
    assert example["labels"] == [IGNORE_INDEX] * len(prompt) + title + [eos]
    assert example["attention_mask"] == [1] * (len(prompt) + len(title) + 1)
    assert tokenizer.unk_token_id not in example["input_ids"]  # every word is in the tiny vocab


def test_train_on_inputs_keeps_prompt_labels(tokenizer):
    example = encode_example(TEMPLATE, tokenizer, "we propose", "robust", 64, train_on_inputs=True)
    assert example["labels"] == example["input_ids"]


def test_truncation_cuts_the_abstract_never_the_title(tokenizer):
    abstract = " ".join(["graph"] * 100)
    example = encode_example(TEMPLATE, tokenizer, abstract, "robust efficient attention", cutoff_len=20)
    title = ids(tokenizer, "robust efficient attention") + [tokenizer.eos_token_id]
    assert len(example["input_ids"]) <= 20
    assert example["input_ids"][-len(title):] == title
    assert example["labels"][-len(title):] == title
    # the prompt still ends with its cue: the abstract was shortened inside the template
    assert example["input_ids"][-len(title) - 1] == ids(tokenizer, "Response")[0]


def test_inference_prompt_equals_training_prompt(tokenizer):
    example = encode_example(TEMPLATE, tokenizer, "our approach outperforms baselines", "deep models", 64)
    prompt = encode_prompt(TEMPLATE, tokenizer, "our approach outperforms baselines")
    assert example["input_ids"][: len(prompt)] == prompt


def test_packaged_templates_and_round_trip(tmp_path):
    assert {"alpaca", "compact", "chat"} <= set(available_templates())
    alpaca = PromptTemplate.load("alpaca")
    text = alpaca.render("An abstract.")
    assert "### Instruction:\n" + SEED_INSTRUCTION in text and text.endswith("### Response:\n")
    alpaca.save(tmp_path)
    assert PromptTemplate.load(tmp_path) == alpaca
    with pytest.raises(ValueError, match="unknown prompt template"):
        PromptTemplate.load("nope")


def test_related_titles_come_before_the_abstract_and_are_never_cut(tokenizer):
    from chatgentitle.data.index import Neighbour

    related = PromptTemplate.load("compact-related")
    papers = [Neighbour("1", "Deep graph models", 0.52), Neighbour("2", "Robust attention", 0.31),
              Neighbour("3", "Quantum field theory", 0.2), Neighbour("4", "A fourth", 0.1)]
    text = related.render("An abstract.", related=papers)
    assert "- Deep graph models (0.52)\n- Robust attention (0.31)\n- Quantum field theory (0.20)\n" in text
    assert "fourth" not in text and text.index("Quantum") < text.index("Abstract: An abstract.")
    compact = PromptTemplate.load("compact")
    assert related.render("An abstract.") == compact.render("An abstract.")  # no index: compact's prompt
    assert related.around_abstract() == compact.around_abstract()  # what a GGUF chat template holds
    assert set(compact.record()) < set(related.record())  # earlier made-by records still match
    paper = Neighbour("5", "deep transformer models", 0.4)  # words of the tiny vocabulary
    prompt = encode_prompt(related, tokenizer, " ".join(["graph"] * 200), related=[paper], max_tokens=60)
    assert len(prompt) == 60 and tokenizer.decode(prompt).count("deep transformer models") == 1


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        (" Title: Robust Attention.\nmore text", "Robust Attention"),
        ('"Quoted Title"', "Quoted Title"),
        ("A  spaced   title ...", "A spaced title ..."),
        ("", ""),
    ],
)
def test_clean_title(raw, title):
    assert clean_title(raw) == title
