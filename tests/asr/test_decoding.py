import itertools
import math

import numpy as np
import pytest
import torch

from asr.decoding import (
    BeamSearchDecoder,
    GreedyDecoder,
    Hypothesis,
    ctc_log_prob,
    decode_batch,
    greedy_decode,
)
from asr.text import CharTokenizer, JamoTokenizer

# vocab: 0 <blank>, 1 <unk>, 2 " ", 3 a, 4 b, 5 c, 6 d, 7 e
TOK = CharTokenizer(list("abcde"))
A, B, C, D, E = (TOK.vocab.index(ch) for ch in "abcde")


def frames(*rows: dict[int, float], vocab: int = len(TOK)) -> torch.Tensor:
    """Log-probs from rows of {token: probability}; the rest of each row is spread evenly."""
    out = []
    for row in rows:
        rest = (1.0 - sum(row.values())) / (vocab - len(row))
        probs = [row.get(k, rest) for k in range(vocab)]
        out.append(probs)
    return torch.tensor(out, dtype=torch.float64).log()


def random_log_probs(rng: np.random.Generator, T: int, V: int, peaky: float = 3.0) -> torch.Tensor:
    logits = rng.normal(size=(T, V)) * peaky
    return torch.log_softmax(torch.from_numpy(logits), dim=-1)


# ---------------------------------------------------------------- greedy


def test_greedy_collapse_rules():
    lp = frames({A: 0.9}, {A: 0.8}, {0: 0.9}, {A: 0.7}, {B: 0.6}, {B: 0.95}, {0: 0.9}, {2: 0.8}, {C: 0.9}, {0: 0.9})
    hyp = greedy_decode(lp, TOK)
    assert isinstance(hyp, Hypothesis)
    assert hyp.token_ids == [A, A, B, 2, C]  # repeats merged, a blank separates the two a's
    assert hyp.text == "aab c"
    # confidence: peak posterior of each emitted token's run
    assert hyp.confidence == pytest.approx(np.mean([0.9, 0.7, 0.95, 0.8, 0.9]))
    assert hyp.score == pytest.approx(float(lp.max(dim=1).values.sum()))


def test_greedy_empty_hypothesis_confidence_is_mean_blank_posterior():
    lp = frames({0: 0.9}, {0: 0.7}, {0: 0.8})
    hyp = greedy_decode(lp, TOK)
    assert hyp.text == "" and hyp.token_ids == []
    assert hyp.confidence == pytest.approx(0.8)
    empty = greedy_decode(torch.zeros(0, len(TOK)), TOK)
    assert empty.text == "" and empty.confidence == 0.0


def test_decoders_reject_mismatched_vocab():
    with pytest.raises(ValueError, match="tokenizer has 8 symbols"):
        greedy_decode(torch.zeros(3, 5), TOK)
    with pytest.raises(ValueError, match="shape"):
        BeamSearchDecoder(TOK).decode(torch.zeros(2, 3, len(TOK)))


def test_greedy_accepts_numpy_and_half_precision():
    lp = frames({A: 0.9}, {0: 0.9}, {B: 0.9})
    assert greedy_decode(lp.numpy(), TOK).text == "ab"
    assert greedy_decode(lp.half(), TOK).text == "ab"


# ---------------------------------------------------------------- beam search


def test_beam_one_equals_greedy_on_random_inputs():
    rng = np.random.default_rng(0)
    tok = JamoTokenizer()
    beam = BeamSearchDecoder(tok, beam_size=1)
    for _ in range(200):
        lp = random_log_probs(rng, int(rng.integers(1, 60)), len(tok), peaky=float(rng.uniform(0.5, 6)))
        g, b = greedy_decode(lp, tok), beam.decode(lp)
        assert (b.token_ids, b.text) == (g.token_ids, g.text)
        assert b.confidence == pytest.approx(g.confidence)


def test_beam_finds_more_probable_sequence_than_greedy():
    # each frame: blank 0.6, a 0.4 → best path is blank blank (""), but P("a") = 0.64 > P("") = 0.36
    lp = frames({0: 0.6, A: 0.4}, {0: 0.6, A: 0.4}, vocab=len(TOK))
    g = greedy_decode(lp, TOK)
    b = BeamSearchDecoder(TOK, beam_size=4).decode(lp)
    assert g.text == "" and b.text == "a"
    assert ctc_log_prob(lp, b.token_ids) > ctc_log_prob(lp, g.token_ids)
    assert b.score == pytest.approx(math.log(0.64))
    assert ctc_log_prob(lp, []) == pytest.approx(math.log(0.36))


def test_wide_beam_is_exact_on_small_inputs():
    """With no pruning the prefix beam search returns the most probable label sequence."""
    rng = np.random.default_rng(1)
    tok = CharTokenizer(list("ab"))  # V = 5: blank, unk, space, a, b
    V, T = len(tok), 4
    sequences = [list(s) for n in range(T + 1) for s in itertools.product(range(1, V), repeat=n)]
    beam = BeamSearchDecoder(tok, beam_size=10_000, token_prune=V, token_threshold=math.inf, beam_threshold=math.inf)
    for _ in range(30):
        lp = random_log_probs(rng, T, V, peaky=1.0)
        scores = {tuple(s): ctc_log_prob(lp, s) for s in sequences}
        best = max(scores, key=scores.__getitem__)
        hyp = beam.decode(lp)
        assert tuple(hyp.token_ids) == best
        assert hyp.score == pytest.approx(scores[best])


def test_beam_beats_or_matches_greedy_probability_on_random_inputs():
    rng = np.random.default_rng(2)
    tok = JamoTokenizer()
    beam = BeamSearchDecoder(tok, beam_size=8)
    for _ in range(30):
        lp = random_log_probs(rng, 30, len(tok), peaky=2.0)
        g, b = greedy_decode(lp, tok), beam.decode(lp)
        assert ctc_log_prob(lp, b.token_ids) >= ctc_log_prob(lp, g.token_ids) - 1e-9
        assert 0.0 <= b.confidence <= 1.0
        assert 0.0 <= g.confidence <= 1.0


def _ambiguous_second_token(second: dict[int, float], third: dict[int, float] | None = None):
    rows = [{A: 0.95}, {0: 0.95}, second, {0: 0.95}]
    if third:
        rows += [third, {0: 0.95}]
    return frames(*rows)


def test_hotword_flips_ambiguous_case():
    lp = _ambiguous_second_token({C: 0.5, B: 0.45})  # acoustics slightly prefer "ac"
    assert BeamSearchDecoder(TOK).decode(lp).text == "ac"
    biased = BeamSearchDecoder(TOK, hotwords=["ab"]).decode(lp)
    assert biased.text == "ab"
    # the reported score is acoustic only (the bonus never leaks into it), a lower bound of the exact
    # CTC probability because pruned alignments are missing
    exact = ctc_log_prob(lp, [A, B])
    assert exact - 1e-3 < biased.score <= exact + 1e-9
    assert 0.0 <= biased.confidence <= 1.0


def test_partial_hotword_match_is_refunded():
    # "eb" vs "ab": a partial match of hotword "abcd" must not win once the match breaks
    lp = frames({E: 0.5, A: 0.45}, {0: 0.95}, {B: 0.95}, {0: 0.95})
    plain = BeamSearchDecoder(TOK).decode(lp)
    assert plain.text == "eb"
    assert BeamSearchDecoder(TOK, hotwords=["abcd"]).decode(lp).text == "eb"
    assert BeamSearchDecoder(TOK, hotwords=["ab"]).decode(lp).text == "ab"  # completed: boosted


def test_hotword_with_internal_space_korean():
    tok = JamoTokenizer()
    target = tok.encode("거실 티비")
    rival = tok.encode("거실 디비")  # ᄐ vs ᄃ on one frame
    assert len(target) == len(rival)
    rows = []
    for t_id, r_id in zip(target, rival, strict=True):
        rows.append({t_id: 0.45, r_id: 0.5} if t_id != r_id else {t_id: 0.95})
        rows.append({0: 0.95})
    lp = frames(*rows, vocab=len(tok))
    assert BeamSearchDecoder(tok).decode(lp).text == "거실 디비"
    assert BeamSearchDecoder(tok, hotwords=["거실 티비", "안방"]).decode(lp).text == "거실 티비"


def test_hotword_bonus_accounting():
    from asr.decoding import _HotwordGraph

    graph = _HotwordGraph([[1, 2], [1, 2, 3], [4, 5]])

    def locked(seq):
        node, total = 0, 0
        for tok in seq:
            node, gained, _ = graph.step(node, tok)
            total += gained
        return total

    assert locked([1, 2]) == 2
    assert locked([1, 2, 3]) == 3  # the chain is paid once per token
    assert locked([1, 2, 9]) == 2  # the completed "12" keeps its bonus, nothing else
    assert locked([1, 9]) == 0  # a broken partial match keeps nothing
    assert locked([7, 1, 2, 4, 5]) == 4
    assert locked([1, 4, 5]) == 2  # restart on a new hotword after a mismatch


def test_unknown_hotwords_are_ignored():
    dec = BeamSearchDecoder(JamoTokenizer(), hotwords=["tv", "", "안방"])
    assert dec.graph is not None
    assert BeamSearchDecoder(JamoTokenizer(), hotwords=["tv"]).graph is None


def test_beam_rejects_bad_options():
    with pytest.raises(ValueError):
        BeamSearchDecoder(TOK, beam_size=0)
    with pytest.raises(ValueError):
        BeamSearchDecoder(TOK, token_prune=0)


def test_beam_empty_and_blank_only_inputs():
    dec = BeamSearchDecoder(TOK, beam_size=4, hotwords=["ab"])
    assert dec.decode(torch.zeros(0, len(TOK))).text == ""
    hyp = dec.decode(frames({0: 0.9}, {0: 0.9}))
    assert hyp.text == "" and hyp.confidence == pytest.approx(0.9)


# ---------------------------------------------------------------- batches


def test_decode_batch_respects_lengths():
    one = frames({A: 0.9}, {0: 0.9}, {B: 0.9})
    two = frames({C: 0.9}, {0: 0.9}, {0: 0.9})
    batch = torch.stack([one, two])
    batch[1, 2] = frames({D: 0.9})[0]  # padding frame: must be ignored with length 2
    hyps = decode_batch(batch, torch.tensor([3, 2]), GreedyDecoder(TOK))
    assert [h.text for h in hyps] == ["ab", "c"]
    hyps = decode_batch(batch, None, BeamSearchDecoder(TOK, beam_size=4))
    assert [h.text for h in hyps] == ["ab", "cd"]
    with pytest.raises(ValueError):
        decode_batch(batch, [3], GreedyDecoder(TOK))
    with pytest.raises(ValueError):
        decode_batch(one, [3], GreedyDecoder(TOK))
