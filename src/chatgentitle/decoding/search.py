"""Decoding a plan: `decode(models, tokenizer, batch, options)` runs the way `options.mode` names
(greedy, sampling, beam search, consensus) and returns each abstract's decoded candidates.

Beam search and sampling run with one prefill per abstract: the prompt is encoded once and its KV
cache shared by the beams and the samples (a consensus encodes each prompt once per model).

transformers' `generate(num_beams=K)` copies every prompt K times before encoding it, so K-1 of
every K prompt tokens are computed for nothing (the prompt is ~250 tokens, the title ~20). This
search encodes each prompt once, expands its cache to K rows after the first step, and drops the
rows of an abstract as soon as its beams are settled. Scoring follows transformers' beam search
(log-softmax, repetition penalty on the log-probabilities, 2K candidates per step, length
penalty on finished titles, its stopping rule with early_stopping=False), so it returns the same
titles, with one difference by design: the repetition penalty counts the real tokens of a prompt,
not its left padding (transformers also penalises the pad token, i.e. EOS for models whose pad is
EOS, in the shorter prompts of a batch, so its titles there depend on their neighbours).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from threading import Thread

import torch

from chatgentitle.decoding.options import DecodingMode, GenerationOptions
from chatgentitle.decoding.shared_prefix import SharedPrefixCache
from chatgentitle.decoding.steering import Steering, steered_search
from chatgentitle.decoding.steps import NEG, BeamRows, Prefill, encode_prompts, penalised, step_mask


@torch.inference_mode()
def beam_search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, num_beams: int,
                max_new_tokens: int, eos_token_id: int, repetition_penalty: float = 1.0,
                length_penalty: float = 1.0, should_stop: Callable[[], bool] | None = None,
                prefill: Prefill | None = None, with_scores: bool = False) -> list[list]:
    """The num_beams best continuations of each left-padded prompt, best first, EOS removed (`prefill`:
    the prompts already encoded, e.g. shared with sampling). `with_scores`: (tokens, score) pairs, the
    score being the search's own (log-probability / length**length_penalty, repetitions penalised)."""
    k, batch, device = num_beams, input_ids.shape[0], input_ids.device
    prefill = prefill or encode_prompts(model, input_ids, attention_mask, max_new_tokens)
    logits, decoder = prefill.logits, BeamRows(model, prefill, attention_mask, k, max_new_tokens)
    # tokens already in each row (prompt without padding, then the title so far), for the repetition penalty
    seen = torch.zeros(batch, logits.shape[-1], dtype=torch.bool, device=device)
    seen.scatter_(1, torch.where(attention_mask.bool(), input_ids, input_ids[:, -1:]), True)

    alive = torch.arange(batch, device=device)  # the abstracts still searched, in row-block order
    running_scores = torch.zeros(batch, 1, device=device)  # one beam per abstract before the first step
    running_tokens = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)
    finished = {"scores": torch.full((batch, k), NEG, device=device),  # the k best ended titles per abstract
                "tokens": torch.zeros(batch, k, max_new_tokens, dtype=torch.long, device=device),
                "lengths": torch.zeros(batch, k, dtype=torch.long, device=device)}
    for step in range(max_new_tokens):  # `step` tokens generated so far
        log_probs = penalised(torch.log_softmax(logits.float(), dim=-1), seen, repetition_penalty)
        beams, vocab = running_scores.shape[1], log_probs.shape[-1]
        totals = (log_probs.view(len(alive), beams, vocab) + running_scores[..., None]).view(len(alive), -1)
        top_scores, top_index = totals.topk(2 * k, dim=-1)  # 2k: at least k that do not end here
        source, token = top_index // vocab, top_index % vocab
        ends = (token == eos_token_id) | (step + 1 == max_new_tokens) | bool(should_stop and should_stop())
        sequences = torch.cat([running_tokens.gather(1, source[..., None].expand(-1, -1, step)),
                               token[..., None]], dim=-1)

        # titles that end here, if among the k best candidates, compete for the k finished slots
        new_scores = (top_scores / (step + 1) ** length_penalty).masked_fill(~ends, NEG)
        new_scores[:, k:] = NEG
        _finish(finished, alive, new_scores, sequences, step)
        if bool(ends.all()):
            break

        # the k best candidates that go on
        running_scores, pick = (top_scores + ends * NEG).topk(k, dim=-1)
        source, token, running_tokens = source.gather(1, pick), token.gather(1, pick), sequences.gather(
            1, pick[..., None].expand(-1, -1, step + 1))
        going = _unsettled(finished["scores"][alive], running_scores, step, length_penalty)
        if not bool(going.any()):
            break

        # next rows: the source beam of each kept candidate, for the abstracts still going
        rows = (torch.arange(len(alive), device=device)[:, None] * beams + source)[going].reshape(-1)
        keep = None if bool(going.all()) else going.nonzero().squeeze(-1)
        alive, running_scores, running_tokens = alive[going], running_scores[going], running_tokens[going]
        seen = seen[rows]
        seen.scatter_(1, token[going].reshape(-1, 1), True)
        logits = decoder.next_logits(step, rows, keep, alive, token[going].reshape(-1))

    return _ranked(finished, eos_token_id, with_scores)


def _unsettled(slots: torch.Tensor, running_scores: torch.Tensor, step: int, length_penalty: float) -> torch.Tensor:
    """Which abstracts still search: one is settled when all its k finished slots are filled and its best
    running beam, at this length, scores below the worst of them (transformers' rule, early_stopping=False)."""
    worst = torch.where(slots.gt(NEG).all(-1), slots.min(-1).values, NEG)
    return running_scores[:, 0] / (step + 1) ** length_penalty > worst


def _finish(finished: dict, alive: torch.Tensor, new_scores: torch.Tensor, sequences: torch.Tensor, step: int):
    """Merge the titles that end at this step into the k finished slots of their abstracts (best k kept)."""
    k, max_new_tokens = finished["scores"].shape[1], finished["tokens"].shape[2]
    best, order = torch.cat([finished["scores"][alive], new_scores], dim=1).topk(k, dim=-1)
    padded = torch.nn.functional.pad(sequences, (0, max_new_tokens - step - 1))
    finished["tokens"][alive] = torch.cat([finished["tokens"][alive], padded], dim=1).gather(
        1, order[..., None].expand(-1, -1, max_new_tokens))
    lengths = torch.full_like(new_scores, step + 1, dtype=torch.long)
    finished["lengths"][alive] = torch.cat([finished["lengths"][alive], lengths], dim=1).gather(1, order)
    finished["scores"][alive] = best


def _ranked(finished: dict, eos_token_id: int, with_scores: bool = False) -> list[list]:
    """Each abstract's finished titles, best first, EOS removed (with their scores if asked)."""
    results = []
    for scores, tokens, lengths in zip(*(finished[key].tolist() for key in ("scores", "tokens", "lengths")),
                                       strict=True):
        ranked = sorted(zip(scores, tokens, lengths, strict=True), key=lambda s: -s[0])
        found = [([t for t in seq[:n] if t != eos_token_id], score) for score, seq, n in ranked if score > NEG]
        results.append(found if with_scores else [seq for seq, _ in found])
    return results


@torch.inference_mode()
def sample(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, num_samples: int, max_new_tokens: int,
           eos_token_id: int, temperature: float = 1.0, epsilon: float = 0.02, seed: int = 0,
           should_stop: Callable[[], bool] | None = None, prefill: Prefill | None = None) -> list[list[list[int]]]:
    """num_samples continuations of each left-padded prompt, EOS removed, by epsilon sampling: tokens
    below probability `epsilon` are never drawn (the most likely one always may be), the evidence that
    minimum Bayes risk decoding works best with (Freitag et al., 2023). The prompt is encoded once per
    abstract (or given: `prefill`, shared with the beam search) and its cache shared by the samples.

    A sample that has ended leaves the batch. Each abstract draws one uniform number per sample and
    step from its own generator seeded with `seed`, whether the sample still runs or not, so a sample
    depends neither on the other abstracts of the batch nor on which of its siblings ended first."""
    n, batch, device = num_samples, input_ids.shape[0], input_ids.device
    logits, cache, cache_arg, shared = prefill or encode_prompts(model, input_ids, attention_mask, max_new_tokens)
    logits = logits.repeat_interleave(n, dim=0)
    generators = [torch.Generator(device).manual_seed(seed) for _ in range(batch)]
    prompt_lengths = attention_mask.sum(-1)
    tokens = torch.full((batch * n, max_new_tokens), eos_token_id, dtype=torch.long, device=device)
    slots = torch.arange(batch * n, device=device)  # the sample each row decodes (its abstract: slot // n)
    ended = torch.zeros(batch * n, dtype=torch.bool, device=device)
    # at most 1/epsilon tokens reach epsilon: drawing among that many is drawing among all (and far cheaper)
    width = min(logits.shape[-1], math.ceil(1 / epsilon) if epsilon > 0 else logits.shape[-1])
    for step in range(max_new_tokens):
        probs, candidates = torch.log_softmax(logits.float() / temperature, dim=-1).topk(width, dim=-1)
        probs = probs.exp()
        probs[:, 1:] = probs[:, 1:].masked_fill(probs[:, 1:] < epsilon, 0.0)  # the most likely always may be
        uniforms = torch.cat([torch.rand(n, generator=g, device=device) for g in generators])[slots]
        cumulative = probs.cumsum(-1)  # inverse-CDF draw: the first token whose cumulative mass passes u
        drawn = torch.searchsorted(cumulative, uniforms[:, None] * cumulative[:, -1:]).clamp(max=width - 1)
        token = candidates.gather(1, drawn).squeeze(-1).masked_fill(ended, eos_token_id)
        tokens[slots[~ended], step] = token[~ended]
        ended |= token == eos_token_id
        if bool(ended.all()) or step + 1 == max_new_tokens or bool(should_stop and should_stop()):
            break
        rows, abstracts = _going(ended, slots // n, shared)
        slots, ended, token = slots[rows], ended[rows], token[rows]
        if shared and step == 0:  # one prompt per abstract; the samples' titles per row
            cache = SharedPrefixCache(cache, attention_mask, len(rows) // len(abstracts), max_new_tokens, abstracts)
        elif shared:
            cache.advance(rows, abstracts)
        else:
            if step == 0:
                cache.batch_repeat_interleave(n)
            cache.reorder_cache(rows)
        owner = slots // n
        mask = step_mask(attention_mask, owner, len(rows), 1, step, shared)
        logits = model(input_ids=token[:, None], attention_mask=mask, **{cache_arg: cache},
                       position_ids=(prompt_lengths[owner] + step)[:, None], use_cache=True,
                       **({"shared_prefix": cache} if shared else {})).logits[:, -1]
    samples = [[t for t in row if t != eos_token_id] for row in tokens.tolist()]
    return [samples[i:i + n] for i in range(0, batch * n, n)]


@torch.inference_mode()
def title_log_probs(model, prompt: list[int], titles: list[list[int]], pad_token_id: int) -> list[float]:
    """Each title's mean log-probability per token after the prompt (its token ids, EOS included): how
    likely the model finds a title of its own or the author's, on one scale. The prompt is encoded once
    and its cache shared by the titles, which then run as one right-padded batch."""
    device = next(model.parameters()).device
    ids, width = torch.tensor([prompt], device=device), max(map(len, titles))
    logits, cache, cache_arg, _ = encode_prompts(model, ids, torch.ones_like(ids), width)  # predicts each first token
    cache.batch_repeat_interleave(len(titles))
    padded = torch.tensor([t + [pad_token_id] * (width - len(t)) for t in titles], device=device)
    lengths = torch.tensor([len(t) for t in titles], device=device)
    mask = torch.cat([torch.ones(len(titles), len(prompt), dtype=torch.long, device=device),
                      (torch.arange(width, device=device) < lengths[:, None]).long()], dim=1)
    positions = (len(prompt) + torch.arange(width - 1, device=device)).expand(len(titles), -1)
    # the title's tokens but the last, after the prompt: their logits predict the title's next tokens
    rest = model(input_ids=padded[:, :-1], attention_mask=mask[:, :-1], position_ids=positions, use_cache=True,
                 **{cache_arg: cache}).logits if width > 1 else logits.new_zeros(len(titles), 0, logits.shape[-1])
    predicted = torch.cat([logits.expand(len(titles), -1)[:, None], rest], dim=1)
    chosen = torch.log_softmax(predicted.float(), dim=-1).gather(-1, padded[..., None]).squeeze(-1)
    return [chosen[i, :n].mean().item() for i, n in enumerate(lengths.tolist())]


def _going(ended: torch.Tensor, owner: torch.Tensor, shared: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows that decode on (indices into the current rows) and, with a shared prompt cache, the
    abstracts they belong to (indices into the current abstracts; None without one). A shared cache
    needs the same number of rows per abstract: each keeps its running samples first, padded with
    ended ones up to the busiest abstract's count (their tokens are not written); abstracts whose
    samples all ended leave."""
    if not shared:
        return (~ended).nonzero().squeeze(-1), None
    abstracts = torch.unique_consecutive(owner).numel()
    running = (~ended).view(abstracts, -1)
    per = running.shape[1]
    counts = running.sum(-1)
    kept = counts.nonzero().squeeze(-1)
    order = running.int().argsort(dim=-1, descending=True, stable=True)[kept, : int(counts.max())]
    return (kept[:, None] * per + order).reshape(-1), kept


def decode(models: list, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor, options: GenerationOptions,
           should_stop: Callable[[], bool] | None = None) -> list[list[str]]:
    """Each left-padded prompt's decoded candidates (before cleaning), best first, as `options.mode` says.
    models[0] decodes; the others (an ensemble run's members) join only the consensus pool."""
    eos = tokenizer.eos_token_id
    mode = options.mode
    if mode is DecodingMode.CONSENSUS:
        pools = [[] for _ in range(input_ids.shape[0])]
        for model in models:
            found = _beams_and_samples(model, input_ids, attention_mask, options, options.consensus, eos,
                                       should_stop)
            for pool, more in zip(pools, found, strict=True):
                pool.extend(more)
    elif mode is DecodingMode.BEAM_SEARCH and options.num_candidates > 1:  # beams, then samples: alternatives
        pools = _beams_and_samples(models[0], input_ids, attention_mask, options, options.pool // 2, eos,
                                       should_stop)
    elif mode is DecodingMode.BEAM_SEARCH:
        pools = _beams(models[0], input_ids, attention_mask, options.beams, options, eos, should_stop)
    elif mode is DecodingMode.STEERED:
        pools = steered_search(models[0], input_ids, attention_mask, Steering(tokenizer, options),
                               num_beams=options.beams, max_new_tokens=options.max_new_tokens, eos_token_id=eos,
                               repetition_penalty=options.repetition_penalty,
                               length_penalty=options.length_penalty, should_stop=should_stop)
    else:  # greedy, sampling and beams without repeated n-grams: transformers' generate
        return _generate(models[0], tokenizer, input_ids, attention_mask, options, should_stop)
    return [[tokenizer.decode(seq, skip_special_tokens=True) for seq in pool] for pool in pools]


def stream(model, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor, options: GenerationOptions,
           should_stop: Callable[[], bool] | None = None, hold=contextlib.nullcontext) -> Iterator[str]:
    """One prompt's text as it grows, token by token (a plan that streams: greedy or sampling). The
    decoding thread runs inside `hold()` (e.g. the model's lock)."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = _generate_kwargs(tokenizer, options, should_stop)

    def run():
        with hold():
            _run_generate(model, input_ids, attention_mask, streamer, kwargs)

    thread = Thread(target=run, daemon=True)
    thread.start()
    yield from streamer
    thread.join()


def _beams_and_samples(model, input_ids, attention_mask, options: GenerationOptions, num_samples: int,
                       eos_token_id: int, should_stop) -> list[list[list[int]]]:
    """Each prompt's beams (best first), then num_samples epsilon samples, from one prefill when the search
    leaves the prompt cache as it is."""
    prefill = encode_prompts(model, input_ids, attention_mask, options.max_new_tokens)
    beams = _beams(model, input_ids, attention_mask, options.beams, options, eos_token_id, should_stop,
                   prefill if prefill.shared else None)
    drawn = sample(model, input_ids, attention_mask, num_samples=num_samples, max_new_tokens=options.max_new_tokens,
                   eos_token_id=eos_token_id, should_stop=should_stop, prefill=prefill)
    return [found + more for found, more in zip(beams, drawn, strict=True)]


def _beams(model, input_ids, attention_mask, num_beams: int, options: GenerationOptions, eos_token_id: int,
           should_stop, prefill: Prefill | None = None) -> list[list[list[int]]]:
    """The shared-prefill beam search with these options' penalties and limits."""
    return beam_search(model, input_ids, attention_mask, num_beams=num_beams, max_new_tokens=options.max_new_tokens,
                       eos_token_id=eos_token_id, repetition_penalty=options.repetition_penalty,
                       length_penalty=options.length_penalty, should_stop=should_stop, prefill=prefill)


def _generate(model, tokenizer, input_ids, attention_mask, options, should_stop) -> list[list[str]]:
    output = _run_generate(model, input_ids, attention_mask, None, _generate_kwargs(tokenizer, options, should_stop))
    # decode only the new tokens: no searching for a response marker
    flat = tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
    per_abstract = len(flat) // input_ids.shape[0]
    return [flat[i:i + per_abstract] for i in range(0, len(flat), per_abstract)]


def _generate_kwargs(tokenizer, options: GenerationOptions, should_stop) -> dict:
    kwargs = options.generate_kwargs()
    kwargs.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if should_stop:
        from transformers import StoppingCriteriaList

        kwargs["stopping_criteria"] = StoppingCriteriaList([_StopWhen(should_stop)])
    return kwargs


@torch.inference_mode()
def _run_generate(model, input_ids, attention_mask, streamer, kwargs) -> torch.Tensor:
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, streamer=streamer, **kwargs)


class _StopWhen:
    """A transformers stopping criterion that ends decoding for every row when asked to."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)
