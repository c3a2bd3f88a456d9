"""Token n-gram LM and its fusion into the CTC beam search."""

import math

import numpy as np
import pytest

from asr.decoding import BeamSearchDecoder, greedy_decode
from asr.lm import EOS, NgramLM
from asr.text import JamoTokenizer


def test_probabilities_sum_to_one_and_prefer_seen_continuations():
    lm = NgramLM.build([[3, 4, 5], [3, 4, 6], [3, 4, 5]], order=3, vocab_size=8)
    for context in [lm.context([]), lm.context([3]), lm.context([3, 4]), lm.context([7, 7])]:
        total = sum(math.exp(lm.logp(context, t)) for t in [*range(8), EOS])
        assert total == pytest.approx(1.0, abs=1e-9)
    ctx = lm.context([3, 4])
    assert lm.logp(ctx, 5) > lm.logp(ctx, 6) > lm.logp(ctx, 7)
    assert lm.context([1]) == (-1, 1)


def test_round_trips_through_a_dict():
    lm = NgramLM.build([[3, 4, 5], [4, 4]], order=2, vocab_size=6)
    again = NgramLM.from_dict(lm.to_dict())
    assert again.order == 2 and again.counts == lm.counts


def test_lm_fusion_repairs_an_acoustically_ambiguous_syllable():
    """The acoustics slightly prefer a malformed jamo sequence; the LM knows the word."""
    tok = JamoTokenizer()
    word, wrong = tok.encode("불"), tok.encode("풀")  # ㅂ vs ㅍ: one token differs
    frames = []
    for good, bad in zip(word, wrong, strict=True):
        row = np.full(len(tok), -12.0)
        row[0] = -6.0
        row[bad], row[good] = math.log(0.55), math.log(0.45)
        frames += [row, np.where(np.arange(len(tok)) == 0, -0.01, -12.0)]  # token, then blank
    lp = np.array(frames, dtype=np.float32)
    assert greedy_decode(lp, tok).text == "풀"
    lm = NgramLM.build([tok.encode("불 켜줘"), tok.encode("불 꺼줘")] * 5, order=3, vocab_size=len(tok))
    assert BeamSearchDecoder(tok, beam_size=4).decode(lp).text == "풀"
    assert BeamSearchDecoder(tok, beam_size=4, lm=lm, lm_weight=0.5).decode(lp).text == "불"
