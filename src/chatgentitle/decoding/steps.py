"""What every search shares: the prompts encoded once (the prefill), one step's attention mask, the
cache's rows for the next step, and the repetition penalty."""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from transformers import DynamicCache

from chatgentitle.decoding.shared_prefix import SHARED, SharedPrefixCache

NEG = -1.0e9  # the score of a slot that must not be chosen (as in transformers)


class Prefill(NamedTuple):
    """The prompts encoded once: what beam search and sampling start from."""

    logits: torch.Tensor  # (abstracts, vocab): the next token's logits after each prompt
    cache: DynamicCache
    cache_arg: str  # the model forward's name for the cache argument
    shared: bool  # the rows of an abstract can share its prompt's cache (SharedPrefixCache)


def encode_prompts(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> Prefill:
    """Encode the prompts once."""
    window = getattr(model.config, "sliding_window", None)
    shared = model.config._attn_implementation == SHARED and (
        not window or input_ids.shape[1] + max_new_tokens <= window)
    cache = DynamicCache(config=model.config)
    # transformers renamed past_key_values to cache (5.2x; the old name goes in 5.40)
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **{cache_arg: cache}, use_cache=True,
                   position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=1).logits[:, -1]
    return Prefill(logits, cache, cache_arg, shared)


def step_mask(attention_mask: torch.Tensor, alive: torch.Tensor, rows: int, per: int, step: int, shared: bool):
    """The attention mask of one decoding step for `rows` rows, `per` per abstract still decoding."""
    length = attention_mask.shape[1] + step + 1
    if shared:  # a 4D mask is passed through untouched; the attention reads the cache's own masks
        return torch.ones(rows, 1, 1, length, dtype=torch.bool, device=attention_mask.device)
    return torch.cat([attention_mask[alive].repeat_interleave(per, dim=0),
                      torch.ones(rows, step + 1, dtype=attention_mask.dtype, device=attention_mask.device)], dim=1)


def reorder_cache(cache, shared: bool, step: int, rows: torch.Tensor, keep, attention_mask, beams: int,
                  max_new_tokens: int):
    """The cache for the next step's rows (`rows`: each kept beam's source row; `keep`: the abstracts
    still going, None for all)."""
    if shared and step == 0:  # one prompt per abstract from now on; titles per beam
        return SharedPrefixCache(cache, attention_mask, beams, max_new_tokens, keep)
    if shared:
        cache.advance(rows, keep)
    else:
        cache.reorder_cache(rows)  # the whole cache: the first step turns one row into k
    return cache


class BeamRows:
    """A beam search's model and prompt cache: each step keeps the rows of the chosen beams and runs the
    model on their next tokens (beam_search and steered_search share it)."""

    def __init__(self, model, prefill: Prefill, attention_mask: torch.Tensor, beams: int, max_new_tokens: int):
        self.model, self.cache, self.cache_arg, self.shared = model, prefill.cache, prefill.cache_arg, prefill.shared
        self.attention_mask, self.beams, self.max_new_tokens = attention_mask, beams, max_new_tokens
        self.prompt_lengths = attention_mask.sum(-1)

    def next_logits(self, step: int, rows: torch.Tensor, keep, alive: torch.Tensor, tokens: torch.Tensor):
        """The next token's logits for each kept beam after its `tokens` (`rows`: each kept beam's source row;
        `keep`: the abstracts still going among the last step's, None for all; `alive`: their prompts)."""
        self.cache = reorder_cache(self.cache, self.shared, step, rows, keep, self.attention_mask, self.beams,
                                   self.max_new_tokens)
        mask = step_mask(self.attention_mask, alive, len(rows), self.beams, step, self.shared)
        positions = (self.prompt_lengths[alive].repeat_interleave(self.beams) + step)[:, None]
        return self.model(input_ids=tokens[:, None], attention_mask=mask, **{self.cache_arg: self.cache},
                          position_ids=positions, use_cache=True,
                          **({"shared_prefix": self.cache} if self.shared else {})).logits[:, -1]


def penalised(log_probs: torch.Tensor, seen: torch.Tensor, repetition_penalty: float) -> torch.Tensor:
    """transformers' repetition penalty on the log-probabilities of the tokens already `seen` in each row."""
    if repetition_penalty == 1.0:
        return log_probs
    penalised = torch.where(log_probs < 0, log_probs * repetition_penalty, log_probs / repetition_penalty)
    return torch.where(seen, penalised, log_probs)
