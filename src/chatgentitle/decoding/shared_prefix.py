"""The shared prompt of a beam search: a KV cache that holds each prompt once and each beam's title apart,
and the attention that reads it (registered with transformers when a model is readied, never at import).
decoding.beam_search expands to it after its first step."""

from __future__ import annotations

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

SHARED = "sdpa_shared_prefix"  # the attention implementation that reads a SharedPrefixCache


class SharedPrefixCache(DynamicCache):
    """The prompt's keys/values once per abstract, the title's per beam (preallocated, written in place).

    Reordering the beams moves only the title part (~20 tokens), never the prompt (~250).
    """

    def __init__(self, prompt_cache: DynamicCache, prompt_mask: torch.Tensor, beams: int, max_new_tokens: int,
                 abstracts: torch.Tensor | None = None):
        super().__init__()
        self.prompt = [(layer.keys, layer.values) for layer in prompt_cache.layers]
        self.prompt_mask = prompt_mask.bool()  # (abstracts, prompt length): False on left padding
        if abstracts is not None:
            self._keep(abstracts)
        rows = self.prompt_mask.shape[0] * beams
        self.title = [(keys.new_zeros(rows, keys.shape[1], max_new_tokens, keys.shape[3]),
                       values.new_zeros(rows, values.shape[1], max_new_tokens, values.shape[3]))
                      for keys, values in self.prompt]
        self.length = 0  # title tokens stored

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = self.title[layer_idx]
        keys[:, :, self.length] = key_states[:, :, 0]
        values[:, :, self.length] = value_states[:, :, 0]
        return keys[:, :, : self.length + 1], values[:, :, : self.length + 1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.prompt[0][0].shape[2] + self.length

    def advance(self, rows: torch.Tensor | None, abstracts: torch.Tensor | None) -> None:
        """After a step: keep the title rows `rows` (beam order; None: all, as they are), and the prompts
        of `abstracts`."""
        self.length += 1
        if rows is not None:
            self.title = [(keys.index_select(0, rows), values.index_select(0, rows)) for keys, values in self.title]
        if abstracts is not None:
            self._keep(abstracts)

    def _keep(self, abstracts: torch.Tensor) -> None:
        self.prompt = [(keys.index_select(0, abstracts), values.index_select(0, abstracts))
                       for keys, values in self.prompt]
        self.prompt_mask = self.prompt_mask.index_select(0, abstracts)


def shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                            shared_prefix: SharedPrefixCache | None = None, **kwargs):
    """One decoding step's attention over a shared prompt and per-beam titles; plain sdpa otherwise.

    query (rows, heads, 1, dim) with rows = abstracts x beams; key/value: the titles' (rows, kv heads,
    t, dim); the prompts' (abstracts, kv heads, W, dim) come from the cache.
    """
    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    prompt_keys, prompt_values = shared_prefix.prompt[module.layer_idx]
    abstracts, kv_heads, width, dim = prompt_keys.shape
    rows, heads = query.shape[:2]
    beams, group = rows // abstracts, heads // kv_heads
    scaling = scaling if scaling is not None else dim ** -0.5
    # every query of an abstract (beams x grouped heads) against its one prompt: a batched matmul
    q = query.view(abstracts, beams, kv_heads, group, dim).transpose(1, 2).reshape(abstracts, kv_heads, -1, dim)
    prompt_scores = (q @ prompt_keys.transpose(-1, -2)).float() * scaling
    prompt_scores = prompt_scores.masked_fill(~shared_prefix.prompt_mask[:, None, None, :], float("-inf"))
    title_scores = (query.view(rows, kv_heads, group, dim) @ key.transpose(-1, -2)).float() * scaling
    title_scores = title_scores.view(abstracts, beams, kv_heads, group, -1).transpose(1, 2).reshape(
        abstracts, kv_heads, beams * group, -1)
    probs = torch.cat([prompt_scores, title_scores], dim=-1).softmax(dim=-1).to(query.dtype)

    def per_row(x):  # (abstracts, kv heads, beams x group, n) -> (rows, kv heads, group, n)
        return x.view(abstracts, kv_heads, beams, group, -1).transpose(1, 2).reshape(rows, kv_heads, group, -1)

    out = per_row(probs[..., :width] @ prompt_values) + per_row(probs[..., width:]) @ value
    return out.reshape(rows, heads, 1, dim).transpose(1, 2), None


def register_shared_attention() -> str:
    """Make SHARED known to transformers' attention and mask registries and return its name; done when a
    model is readied for decoding (titling/generator.py), never at import."""
    AttentionInterface.register(SHARED, shared_prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SHARED, sdpa_mask)
    return SHARED
