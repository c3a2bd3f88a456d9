"""A token-level n-gram language model for shallow fusion in the CTC beam search.

Built from the training transcripts' token ids (jamo for Korean) and stored inside the checkpoint, so a
model carries the domain's word shapes with it. At the jamo level it mostly teaches the decoder what a
well-formed syllable and a known command word look like (a vowel with no initial consonant, "ㅣ십칠",
is never seen), while unseen words still get a smoothed, non-zero probability — dialect endings are
penalised, not forbidden.

Smoothing: interpolated Witten–Bell, down to a uniform distribution over the vocabulary.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

BOS = -1  # sentence start (context only)
EOS = -2  # sentence end (predicted only)


class NgramLM:
    def __init__(self, order: int, vocab_size: int, counts: dict[tuple[int, ...], dict[int, int]]) -> None:
        """counts: context tuple (0..order-1 tokens) → {next token: count}."""
        if order < 1:
            raise ValueError(f"n-gram order must be at least 1, got {order}")
        self.order = order
        self.vocab_size = vocab_size
        self.counts = counts
        self._totals = {h: (sum(c.values()), len(c)) for h, c in counts.items()}
        self._cache: dict[tuple[tuple[int, ...], int], float] = {}

    @classmethod
    def build(cls, sequences: Iterable[Sequence[int]], order: int, vocab_size: int) -> NgramLM:
        counts: dict[tuple[int, ...], dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for seq in sequences:
            padded = [BOS] * (order - 1) + list(seq) + [EOS]
            for i in range(order - 1, len(padded)):
                for k in range(order):  # contexts of length 0 .. order-1
                    counts[tuple(padded[i - k : i])][padded[i]] += 1
        return cls(order, vocab_size, {h: dict(c) for h, c in counts.items()})

    def context(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """The last order-1 tokens of ``prefix``, padded with BOS at the sentence start."""
        n = self.order - 1
        if n == 0:
            return ()
        tail = tuple(prefix[-n:])
        return (BOS,) * (n - len(tail)) + tail

    def logp(self, context: tuple[int, ...], token: int) -> float:
        """Natural-log P(token | context); ``token`` may be EOS."""
        key = (context, token)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = math.log(self._prob(context, token))
        return hit

    def _prob(self, context: tuple[int, ...], token: int) -> float:
        lower = 1.0 / (self.vocab_size + 1) if not context else self._prob(context[1:], token)
        if context and context not in self._totals:
            return lower
        total, types = self._totals.get(context, (0, 0))
        if total == 0:
            return lower
        return (self.counts[context].get(token, 0) + types * lower) / (total + types)

    def to_dict(self) -> dict:
        rows = [[list(h), tok, c] for h, nxt in self.counts.items() for tok, c in nxt.items()]
        return {"order": self.order, "vocab_size": self.vocab_size, "counts": rows}

    @classmethod
    def from_dict(cls, d: dict) -> NgramLM:
        counts: dict[tuple[int, ...], dict[int, int]] = defaultdict(dict)
        for h, tok, c in d["counts"]:
            counts[tuple(h)][tok] = c
        return cls(d["order"], d["vocab_size"], dict(counts))
