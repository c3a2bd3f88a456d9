"""Text agreement between transcripts, and the simulated labeler's character error model.

Pure functions over strings (no catalog access); :mod:`collection.labeling` uses them for double
transcription and the simulated labeler.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from asr.text import get_language_pack


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance (substitutions, deletions, insertions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def agreement_cer(a: str, b: str, language: str) -> float:
    """CER between two transcripts of the same audio, in [0, 1]: edits over the longer one's length.

    Both are normalised with the language pack and compared over its ``cer_units`` (Korean: spaces
    ignored). Symmetric, so it does not matter which round is the reference; two empty texts agree (0).
    """
    pack = get_language_pack(language)
    ua, ub = pack.cer_units(pack.normalize(a)), pack.cer_units(pack.normalize(b))
    longest = max(len(ua), len(ub))
    return edit_distance(ua, ub) / longest if longest else 0.0


def corrupt(text: str, error_rate: float, rng: random.Random, alphabet: Sequence[str]) -> str:
    """``text`` with character errors: each non-space character, with probability ``error_rate``, is
    substituted (60 %) by another character of ``alphabet``, deleted (20 %) or followed by an inserted
    one (20 %). Each is one edit, so the CER against ``text`` is about ``error_rate``."""
    out = []
    for ch in text:
        if ch.isspace() or rng.random() >= error_rate:
            out.append(ch)
            continue
        op = rng.random()
        choices = [c for c in alphabet if c != ch]
        if op < 0.6 and choices:
            out.append(rng.choice(choices))
        elif op < 0.8 or not choices:
            continue
        else:
            out.extend((ch, rng.choice(choices)))
    return "".join(out)
