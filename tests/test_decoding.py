"""The shared-prefill beam search returns what transformers' beam search returns (tiny model, fp32)."""

import pytest
import torch

from chatgentitle.decoding.search import beam_search, sample
from chatgentitle.decoding.shared_prefix import SHARED, register_shared_attention

PROMPTS = ["we propose a novel method", "graph neural networks for quantum field theory spectra of the data",
           "attention"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    register_shared_attention()  # what the generator does when it readies a model
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def left_padded(tokenizer, prompts):
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    return (torch.tensor([[pad] * (width - len(r)) + r for r in ids]),
            torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids]))


def reference(model, tokenizer, input_ids, attention_mask, beams, max_new_tokens, penalty, length_penalty=1.0):
    """transformers' beam search, every beam, new tokens up to the first EOS."""
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=beams,
                             num_return_sequences=beams, max_new_tokens=max_new_tokens, do_sample=False,
                             repetition_penalty=penalty, length_penalty=length_penalty,
                             eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
    rows = []
    for seq in out[:, input_ids.shape[1]:].tolist():
        seq = seq[: seq.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in seq else seq
        rows.append(seq)
    return [rows[i:i + beams] for i in range(0, len(rows), beams)]


def strip_fill(rows, pad):
    """transformers fills finished sequences with pad: compare without trailing pads."""
    def strip(seq):
        while seq and seq[-1] == pad:
            seq = seq[:-1]
        return seq
    return [[strip(seq) for seq in item] for item in rows]


@pytest.mark.parametrize("attention", ["sdpa", SHARED])
@pytest.mark.parametrize(("batch", "beams", "max_new_tokens"), [(1, 4, 12), (3, 4, 12), (3, 2, 3), (3, 6, 20)])
def test_same_sequences_as_transformers(model_and_tokenizer, attention, batch, beams, max_new_tokens):
    model, tokenizer = model_and_tokenizer
    model.set_attn_implementation(attention)
    try:
        ids, mask = left_padded(tokenizer, PROMPTS[:batch])
        # transformers penalises the left padding too: compare the penalty where there is none
        penalty = 1.3 if batch == 1 else 1.0
        ours = beam_search(model, ids, mask, num_beams=beams, max_new_tokens=max_new_tokens,
                           eos_token_id=tokenizer.eos_token_id, repetition_penalty=penalty)
        model.set_attn_implementation("sdpa")
        theirs = reference(model, tokenizer, ids, mask, beams, max_new_tokens, penalty)
        pad = tokenizer.pad_token_id
        assert strip_fill(ours, pad) == strip_fill(theirs, pad)  # exact token ids, every beam, in order
        if max_new_tokens == 3:  # every beam hit the limit
            assert all(len(seq) <= 3 for item in ours for seq in item)
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.5])
def test_length_penalty_as_transformers(model_and_tokenizer, length_penalty):
    model, tokenizer = model_and_tokenizer
    ids, mask = left_padded(tokenizer, PROMPTS)
    ours = beam_search(model, ids, mask, num_beams=4, max_new_tokens=20, eos_token_id=tokenizer.eos_token_id,
                       repetition_penalty=1.0, length_penalty=length_penalty)
    theirs = reference(model, tokenizer, ids, mask, 4, 20, 1.0, length_penalty)
    pad = tokenizer.pad_token_id
    assert strip_fill(ours, pad) == strip_fill(theirs, pad)


def test_penalty_with_padding_counts_real_tokens_only(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids, mask = left_padded(tokenizer, PROMPTS)
    batched = beam_search(model, ids, mask, num_beams=3, max_new_tokens=10, eos_token_id=tokenizer.eos_token_id,
                          repetition_penalty=1.3)
    for i, prompt in enumerate(PROMPTS):  # each title as if decoded alone: the batch does not change it
        one_ids, one_mask = left_padded(tokenizer, [prompt])
        alone = beam_search(model, one_ids, one_mask, num_beams=3, max_new_tokens=10,
                            eos_token_id=tokenizer.eos_token_id, repetition_penalty=1.3)
        assert batched[i] == alone[0]


def test_stop_request_ends_the_search(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids, mask = left_padded(tokenizer, PROMPTS)
    stopped = beam_search(model, ids, mask, num_beams=4, max_new_tokens=30, eos_token_id=tokenizer.eos_token_id,
                          should_stop=lambda: True)
    assert all(len(seq) <= 1 for item in stopped for seq in item) and all(item for item in stopped)


def test_length_penalty_changes_the_choice(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids, mask = left_padded(tokenizer, PROMPTS)
    runs = [beam_search(model, ids, mask, num_beams=4, max_new_tokens=20, eos_token_id=tokenizer.eos_token_id,
                        length_penalty=lp) for lp in (0.0, 2.0)]
    assert runs[0] != runs[1]  # the option reaches the scores


@pytest.mark.parametrize("attention", ["sdpa", SHARED])
def test_samples_of_an_abstract_do_not_depend_on_the_batch(model_and_tokenizer, attention):
    model, tokenizer = model_and_tokenizer
    model.set_attn_implementation(attention)
    try:
        ids, mask = left_padded(tokenizer, PROMPTS)
        # the tiny model's next-token distribution is nearly flat: sample from all of it (epsilon 0)
        batched = sample(model, ids, mask, num_samples=5, max_new_tokens=12, eos_token_id=tokenizer.eos_token_id,
                         epsilon=0.0)
        for i, prompt in enumerate(PROMPTS):  # seeded per abstract: alone, the same five titles
            one_ids, one_mask = left_padded(tokenizer, [prompt])
            alone = sample(model, one_ids, one_mask, num_samples=5, max_new_tokens=12,
                           eos_token_id=tokenizer.eos_token_id, epsilon=0.0)
            assert batched[i] == alone[0]
        assert len(batched) == 3 and all(len(item) == 5 for item in batched)
        assert any(len(set(map(tuple, item))) > 1 for item in batched)  # samples, not five copies of one
    finally:
        model.set_attn_implementation("sdpa")


def test_shared_prompt_samples_equal_plain_cache_samples(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids, mask = left_padded(tokenizer, PROMPTS)
    runs = []
    for attention in ("sdpa", SHARED):
        model.set_attn_implementation(attention)
        runs.append(sample(model, ids, mask, num_samples=4, max_new_tokens=15, eos_token_id=tokenizer.eos_token_id,
                           seed=3, epsilon=0.0))
    model.set_attn_implementation("sdpa")
    assert runs[0] == runs[1]


def test_epsilon_sampling_never_draws_an_unlikely_token(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids, mask = left_padded(tokenizer, PROMPTS[:1])
    with torch.inference_mode():
        probs = model(input_ids=ids, attention_mask=mask).logits[0, -1].softmax(-1)
    epsilon = float(probs.sort(descending=True).values[3])  # the fourth most likely token's probability
    drawn = sample(model, ids, mask, num_samples=64, max_new_tokens=1, eos_token_id=tokenizer.eos_token_id,
                   epsilon=epsilon)[0]
    firsts = {seq[0] if seq else tokenizer.eos_token_id for seq in drawn}
    assert all(probs[t] >= epsilon for t in firsts) and len(firsts) > 1


@pytest.mark.parametrize("attention", ["sdpa", SHARED])
def test_ended_samples_leave_the_batch(model_and_tokenizer, attention):
    """Rows that reached EOS are not decoded on: later steps run fewer rows (a shared prompt cache keeps
    the same count per abstract, the busiest abstract's)."""
    model, tokenizer = model_and_tokenizer
    model.set_attn_implementation(attention)
    rows = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        ids, mask = left_padded(tokenizer, PROMPTS)
        drawn = sample(model, ids, mask, num_samples=8, max_new_tokens=30, eos_token_id=tokenizer.eos_token_id,
                       epsilon=0.0, seed=1)
    finally:
        hook.remove()
        model.set_attn_implementation("sdpa")
    lengths = sorted(len(seq) for item in drawn for seq in item)
    assert lengths[0] < lengths[-1]  # samples end at different steps
    assert rows[0] == len(PROMPTS) and rows[1] == 3 * 8 and min(rows[1:]) < 3 * 8


def test_beams_from_a_shared_prefill_are_the_same(model_and_tokenizer):
    """A consensus encodes each prompt once for its beams and its samples: the beams do not change."""
    from chatgentitle.decoding.search import encode_prompts

    model, tokenizer = model_and_tokenizer
    model.set_attn_implementation(SHARED)
    try:
        ids, mask = left_padded(tokenizer, PROMPTS)
        prefill = encode_prompts(model, ids, mask, 20)
        assert prefill.shared
        kwargs = {"num_beams": 4, "max_new_tokens": 20, "eos_token_id": tokenizer.eos_token_id}
        alone = beam_search(model, ids, mask, **kwargs)
        assert beam_search(model, ids, mask, prefill=prefill, **kwargs) == alone
        drawn = sample(model, ids, mask, num_samples=4, max_new_tokens=20, eos_token_id=tokenizer.eos_token_id,
                       prefill=prefill, epsilon=0.0)
        assert drawn == sample(model, ids, mask, num_samples=4, max_new_tokens=20,
                               eos_token_id=tokenizer.eos_token_id, epsilon=0.0)
        assert beam_search(model, ids, mask, prefill=prefill, **kwargs) == alone  # the prefill is left as it was
    finally:
        model.set_attn_implementation("sdpa")
