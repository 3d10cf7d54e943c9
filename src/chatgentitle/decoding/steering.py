"""Titles the author steers: phrases that must appear, and a target length in words.

`steered_search` is the shared-prefill beam search of search.py with two additions:

- **Phrases** (lexically constrained decoding with dynamic beam allocation, Post & Vilar 2018). Each
  step, every beam may also continue the phrase it is writing or start a phrase it has not written;
  the candidates are grouped into banks by how many phrase tokens they hold, and the k beams are
  dealt out over the banks (the fullest first, then round by round, best first within a bank), so
  beams that have placed a phrase survive beside better-scored beams that have not yet. A title may
  end only once every phrase is in it, and when the tokens left are just enough for the phrases still
  missing, only phrase tokens may follow. Phrases are whole words: one starts after a space or a
  non-word character, and the token after it may not glue letters or digits onto its last word.
- **A target length** (`words`): a finished title's score loses `WORD_WEIGHT` per word it is away
  from the target, ending is always among the candidates from one word short of it, and a search
  is not over while its running beams could still end closer.

Scores are otherwise the beam search's own (log-probability / length**length_penalty, repetitions
penalised).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from chatgentitle.data.prompt import word_count
from chatgentitle.decoding.options import GenerationOptions
from chatgentitle.decoding.steps import NEG, BeamRows, encode_prompts, penalised
from chatgentitle.errors import OptionError

WORD_WEIGHT = 0.3  # score lost per word away from the target (a title's score is its mean log-prob per token)


class Steering:
    """The phrases and the length asked for, in this tokenizer's tokens; checked against the budget."""

    def __init__(self, tokenizer, options: GenerationOptions):
        self.tokenizer = tokenizer
        self.phrases = [p.strip() for p in options.include]
        self.words = options.words
        # a phrase in any case a title writes it ("dark matter", "Dark matter", "Dark Matter"), after a space
        # (" NGC 3351") or at the start / after punctuation ("NGC 3351")
        self.spellings = [_unique([tokenizer(lead + v, add_special_tokens=False)["input_ids"]
                                   for v in _cases(p) for lead in (" ", "")], tokenizer.unk_token_id)
                          for p in self.phrases]
        if not all(self.spellings):
            raise OptionError("include: a phrase is made of words this model's tokenizer does not know")
        self.glue, self.breaks, self.ends_word = _token_kinds(tokenizer)
        needed = sum(min(map(len, s)) for s in self.spellings)
        if needed > options.max_new_tokens - 1:  # one token is left for the end of the title
            raise OptionError(f"include: the phrases take {needed} tokens; a title has at most "
                              f"{options.max_new_tokens} (max_new_tokens), one of which ends it")

    def needed(self, state: Hypothesis) -> int:
        """Tokens that the phrases still missing take at least."""
        need = sum(min(map(len, s)) for i, s in enumerate(self.spellings) if i not in state.met)
        if state.writing:
            phrase, spelling, position = state.writing
            need += len(self.spellings[phrase][spelling]) - position - min(map(len, self.spellings[phrase]))
        return need

    def next_tokens(self, state: Hypothesis, at_boundary: bool) -> set[int]:
        """Tokens that continue the phrase being written or start one still missing."""
        found = set()
        if state.writing:
            phrase, spelling, position = state.writing
            found.add(self.spellings[phrase][spelling][position])
        for phrase, spellings in enumerate(self.spellings):
            if phrase not in state.met and (not state.writing or state.writing[0] != phrase):
                found.update(s[0] for j, s in enumerate(spellings) if j == 0 or at_boundary)
        return found

    def after(self, state: Hypothesis, token: int, at_boundary: bool) -> Hypothesis:
        """The state once `token` is written."""
        met, tokens = state.met, state.tokens + (token,)
        if state.writing:
            phrase, spelling, position = state.writing
            if self.spellings[phrase][spelling][position] == token:
                if position + 1 == len(self.spellings[phrase][spelling]):
                    return Hypothesis(tokens, met | {phrase}, None, True)
                return Hypothesis(tokens, met, (phrase, spelling, position + 1), False)
        for phrase, spellings in enumerate(self.spellings):  # a phrase (re)started here
            if phrase in met:
                continue
            for j, spelling in enumerate(spellings):
                if spelling[0] == token and (j == 0 or at_boundary):
                    if len(spelling) == 1:
                        return Hypothesis(tokens, met | {phrase}, None, True)
                    return Hypothesis(tokens, met, (phrase, j, 1), False)
        return Hypothesis(tokens, met, None, False)

    def word_count(self, tokens: tuple[int, ...]) -> int:
        return word_count(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def length_cost(self, tokens: tuple[int, ...], finished: bool = True) -> float:
        """What a title's score loses for its distance from the target length: a finished title for the
        words it is away; a running one (which may still grow) only for the words it is already over."""
        if not self.words:
            return 0.0
        away = self.word_count(tokens) - self.words
        return WORD_WEIGHT * (abs(away) if finished else max(0, away))

    def kinds(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(glue, breaks) as wide as the model's logits: a model's vocabulary may be padded past its
        tokenizer's, and a token the tokenizer does not have is never written."""
        extra = width - len(self.glue)
        return (torch.cat([self.glue, torch.zeros(extra, dtype=torch.bool)]),
                torch.cat([self.breaks, torch.ones(extra, dtype=torch.bool)]))

    def ends_boundary(self, tokens: tuple[int, ...]) -> bool:
        """Whether a phrase may start after these tokens without its first word gluing onto the last one."""
        return not tokens or not self.ends_word[tokens[-1]]


@dataclass(frozen=True)
class Hypothesis:
    """A running title and how far it is with the phrases."""

    tokens: tuple[int, ...] = ()
    met: frozenset[int] = field(default_factory=frozenset)
    """The phrases written."""
    writing: tuple[int, int, int] | None = None
    """(phrase, spelling, tokens written) of the phrase being written."""
    glued: bool = False
    """A phrase has just ended: the next token must not continue its last word."""

    def progress(self, steering: Steering) -> int:
        """Phrase tokens written: the bank this hypothesis competes in."""
        done = sum(min(map(len, steering.spellings[p])) for p in self.met)
        return done + (self.writing[2] if self.writing else 0)


@torch.inference_mode()
def steered_search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, steering: Steering, *,
                   num_beams: int, max_new_tokens: int, eos_token_id: int, repetition_penalty: float = 1.0,
                   length_penalty: float = 1.0, should_stop: Callable[[], bool] | None = None) -> list[list[list[int]]]:
    """The num_beams best titles of each left-padded prompt that hold every phrase (and score best with
    the length asked for), best first, EOS removed."""
    k, batch, device = num_beams, input_ids.shape[0], input_ids.device
    prefill = encode_prompts(model, input_ids, attention_mask, max_new_tokens)
    logits, decoder = prefill.logits, BeamRows(model, prefill, attention_mask, k, max_new_tokens)
    seen = torch.zeros(batch, logits.shape[-1], dtype=torch.bool, device=device)
    seen.scatter_(1, torch.where(attention_mask.bool(), input_ids, input_ids[:, -1:]), True)
    glue, breaks = (kind.to(device) for kind in steering.kinds(logits.shape[-1]))

    alive = list(range(batch))
    beams = [[(0.0, Hypothesis())] for _ in range(batch)]  # per abstract still searched: (score, hypothesis)
    finished: list[list[tuple[float, tuple[int, ...]]]] = [[] for _ in range(batch)]
    for step in range(max_new_tokens):
        log_probs = penalised(torch.log_softmax(logits.float(), dim=-1), seen, repetition_penalty)
        log_probs.masked_fill_(breaks, NEG)
        last = step + 1 == max_new_tokens or bool(should_stop and should_stop())
        rows = [(a, score, hyp) for a in alive for score, hyp in beams[a]]
        _mask(log_probs, rows, steering, max_new_tokens - step, eos_token_id, glue)
        totals = log_probs + torch.tensor([score for _, score, _ in rows], device=device)[:, None]
        per = len(beams[alive[0]])
        top = totals.view(len(alive), -1).topk(2 * k, dim=-1).indices.tolist()
        own = log_probs.topk(2, dim=-1).indices.tolist()  # each beam's own best: a phrase-holding beam goes on

        going, sources, tokens = [], [], []
        for n, a in enumerate(alive):
            rows_of = slice(n * per, (n + 1) * per)
            found = _expand(steering, beams[a], totals[rows_of], top[n], own[rows_of], eos_token_id, step, last,
                            length_penalty, finished[a])
            finished[a] = sorted(finished[a], key=lambda f: -f[0])[:k]
            chosen = _allocate(found, k, steering)
            if last or not chosen or not _unsettled(finished[a], chosen, k, step, length_penalty, steering):
                continue
            going.append(n)
            beams[a] = [(score, hyp) for score, _, hyp in chosen]
            sources.extend(n * per + b for _, b, _ in chosen)
            tokens.extend(hyp.tokens[-1] for _, _, hyp in chosen)
        if not going:
            break

        keep = None if len(going) == len(alive) else torch.tensor(going, device=device)
        alive = [alive[n] for n in going]
        rows_t, token_t = torch.tensor(sources, device=device), torch.tensor(tokens, device=device)
        seen = seen[rows_t]
        seen.scatter_(1, token_t[:, None], True)
        logits = decoder.next_logits(step, rows_t, keep, torch.tensor(alive, device=device), token_t)
    return [[[t for t in tokens if t != eos_token_id] for _, tokens in ended] for ended in finished]


def _expand(steering: Steering, beams: list, totals: torch.Tensor, top: list[int], own: list[list[int]],
            eos_token_id: int, step: int, last: bool, length_penalty: float, finished: list) -> list:
    """One abstract's step: its candidates (the best of all its beams, each beam's own best, phrase tokens,
    an end near the target length); those that end here join `finished` if they hold every phrase, the
    others come back as (score, source beam, hypothesis)."""
    vocab = totals.shape[-1]
    offered = {(index // vocab, index % vocab) for index in top}
    for b, (_, hyp) in enumerate(beams):
        offered.update((b, t) for t in _extra(steering, hyp, eos_token_id) | set(own[b]))
    found = []
    for b, token in offered:
        score = totals[b, token].item()
        if score <= NEG / 2:
            continue
        hyp = beams[b][1]
        if token == eos_token_id:
            finished.append((score / (step + 1) ** length_penalty - steering.length_cost(hyp.tokens), hyp.tokens))
            continue
        then = steering.after(hyp, token, steering.ends_boundary(hyp.tokens))
        if not last:
            found.append((score, b, then))
        elif len(then.met) == len(steering.phrases) and not then.writing:  # the last token may complete a phrase
            finished.append((score / (step + 1) ** length_penalty - steering.length_cost(then.tokens), then.tokens))
    return found


def _mask(log_probs: torch.Tensor, rows: list, steering: Steering, left: int, eos_token_id: int,
          glue: torch.Tensor) -> None:
    """Forbid, row by row: ending before every phrase is written, gluing onto a phrase's last word, and
    any token but a phrase's when the tokens `left` are just enough for the phrases missing."""
    for row, (_, _, hyp) in enumerate(rows):
        if hyp.glued:
            log_probs[row].masked_fill_(glue, NEG)
        need = steering.needed(hyp)
        if need or hyp.writing:
            log_probs[row, eos_token_id] = NEG
        if need >= left:
            allowed = torch.full_like(log_probs[row], NEG)
            nexts = list(steering.next_tokens(hyp, steering.ends_boundary(hyp.tokens))) if need == left else []
            allowed[nexts] = log_probs[row, nexts]
            log_probs[row] = allowed


def _extra(steering: Steering, hyp: Hypothesis, eos_token_id: int) -> set[int]:
    """Candidates offered besides the best-scored: phrase tokens, and ending near the target length."""
    extra = steering.next_tokens(hyp, steering.ends_boundary(hyp.tokens))
    if steering.words and steering.word_count(hyp.tokens) >= steering.words - 1:
        extra.add(eos_token_id)
    return extra


def _allocate(found: list, k: int, steering: Steering) -> list:
    """k of the candidates that go on, dealt over the banks of phrase progress: one from each bank,
    fullest first, best first within a bank, round after round."""
    banks: dict[int, list] = {}
    for candidate in sorted(found, key=lambda c: -c[0]):
        banks.setdefault(candidate[2].progress(steering), []).append(candidate)
    order = [banks[p] for p in sorted(banks, reverse=True)]
    chosen = []
    while len(chosen) < k and any(order):
        for bank in order:
            if bank and len(chosen) < k:
                chosen.append(bank.pop(0))
    while chosen and len(chosen) < k:  # a shared prompt cache needs k rows per abstract: repeat the worst
        score, b, hyp = chosen[-1]
        chosen.append((NEG, b, hyp))
    return chosen


def _unsettled(finished: list, chosen: list, k: int, step: int, length_penalty: float, steering: Steering) -> bool:
    """Whether an abstract still searches: fewer than k titles have ended, or its best running beam (at
    this length, and already past the target length if one is asked) still beats the worst ended one."""
    if len(finished) < k:
        return True
    best = max(score / (step + 1) ** length_penalty - steering.length_cost(hyp.tokens, finished=False)
               for score, _, hyp in chosen if score > NEG / 2) if any(c[0] > NEG / 2 for c in chosen) else NEG
    return best > finished[-1][0]


_KINDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per tokenizer: decoding 50k tokens takes ~0.8 s


def _token_kinds(tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
    """Per token of the vocabulary: whether it would glue onto a word before it (written after a letter,
    it continues that word), whether it breaks the line (a title is one line: it ends with EOS, not with
    a newline or a special token), and whether it ends in a letter or digit (a list: read per token)."""
    if tokenizer not in _KINDS:
        head = tokenizer("a", add_special_tokens=False)["input_ids"][:1]
        lead = len(tokenizer.decode(head))
        after = [text[lead:] for text in tokenizer.batch_decode([head + [i] for i in range(len(tokenizer))])]
        breaks = torch.tensor(["\n" in text for text in after])
        breaks[[i for i in tokenizer.all_special_ids if i != tokenizer.eos_token_id]] = True  # role markers
        _KINDS[tokenizer] = (torch.tensor([bool(text) and text[0].isalnum() for text in after]), breaks,
                             [bool(text) and text[-1].isalnum() for text in after])
    return _KINDS[tokenizer]


def _cases(phrase: str) -> list[str]:
    """The phrase as given, with a capital first letter, with every word capitalised, and in lower case."""
    first = phrase[:1].upper() + phrase[1:]
    capitalised = " ".join(w[:1].upper() + w[1:] for w in phrase.split())
    return list(dict.fromkeys([phrase, first, capitalised, phrase.lower()]))


def _unique(spellings: list[list[int]], unknown: int | None) -> tuple[tuple[int, ...], ...]:
    """The distinct spellings, none empty and none with the unknown token (it would not write the phrase)."""
    return tuple(dict.fromkeys(tuple(s) for s in spellings if s and unknown not in s))
