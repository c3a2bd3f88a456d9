"""CTC decoding: greedy and prefix beam search with hotword (command lexicon) biasing.

Inputs are per-utterance log-posteriors ``log_probs: (T frames, V tokens)`` (log-softmax over the
tokenizer's vocabulary, blank = 0); tensors on any device/dtype are accepted and read on the CPU.

Scores and confidences
----------------------
- ``Hypothesis.score`` is log-domain and never includes hotword bonuses. Greedy: the log-probability
  of the single best frame path. Beam search: log P(prefix | audio) summed over the alignments the
  beam kept (a lower bound of the exact CTC probability, ``ctc_log_prob``).
- ``Hypothesis.confidence`` (0..1) is the same for both decoders: the mean, over the emitted tokens,
  of the highest frame posterior among the frames that emitted the token. Greedy uses its own
  frame path; beam search uses the Viterbi alignment of its best token sequence (which is the greedy
  path when the two agree). An empty hypothesis gets the mean blank posterior (silence decoded as
  silence is confident); zero frames give 0.0.

Hotword biasing (icefall/k2 "context graph" semantics)
-----------------------------------------------------
Each hotword (normalised text: "로봇청소기", "안방", spaces included) is tokenised into a trie of
token ids with Aho–Corasick failure links. Every hypothesis carries its automaton state. Appending a
token that extends the current partial match adds ``hotword_bonus``; when the match breaks, the
bonus of the unfinished part is refunded, so at the end only completed hotwords keep their boost.
Completing a hotword locks its bonus in (tokens already paid for along the same match are not paid
twice; a hotword that ends as a suffix inside a longer running match is credited when it ends).
Ranking inside the beam uses acoustic score + locked bonus + pending bonus; the final choice uses
acoustic score + locked bonus.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .lm import EOS

log = logging.getLogger(__name__)

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """One decoded utterance: ``text`` (tokenizer-decoded), CTC-collapsed ``token_ids``,
    ``confidence`` in [0, 1] and ``score`` (log-domain, see the module docstring)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    confidence: float = 0.0
    score: float = 0.0


def _as_numpy(log_probs: torch.Tensor | np.ndarray, tokenizer=None) -> np.ndarray:
    """(T, V) float64 array on the CPU; checks the shape against the tokenizer."""
    if isinstance(log_probs, torch.Tensor):
        arr = log_probs.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(log_probs, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"log_probs must have shape (frames, vocab); got shape {tuple(arr.shape)}")
    if tokenizer is not None and arr.shape[1] != len(tokenizer):
        raise ValueError(
            f"log_probs has {arr.shape[1]} classes but the tokenizer has {len(tokenizer)} symbols; "
            "the model and tokenizer do not belong together"
        )
    return arr


def _empty_confidence(lp: np.ndarray, blank_id: int) -> float:
    return float(np.exp(lp[:, blank_id]).mean()) if len(lp) else 0.0


def _greedy_np(lp: np.ndarray, tokenizer) -> Hypothesis:
    blank = tokenizer.blank_id
    if len(lp) == 0:
        return Hypothesis("", [], 0.0, 0.0)
    best = lp.argmax(axis=1)
    best_lp = lp[np.arange(len(lp)), best]
    ids: list[int] = []
    peaks: list[float] = []
    prev = blank
    for k, v in zip(best.tolist(), best_lp.tolist(), strict=True):
        if k != blank:
            if k != prev:
                ids.append(k)
                peaks.append(v)
            elif v > peaks[-1]:
                peaks[-1] = v  # same run: keep the frame where the token peaked
        prev = k
    confidence = float(np.exp(peaks).mean()) if ids else _empty_confidence(lp, blank)
    return Hypothesis(tokenizer.decode(ids), ids, confidence, float(best_lp.sum()))


def greedy_decode(log_probs: torch.Tensor | np.ndarray, tokenizer) -> Hypothesis:
    """Best path: argmax per frame, merge repeats, drop blanks. ``log_probs``: (T, V)."""
    return _greedy_np(_as_numpy(log_probs, tokenizer), tokenizer)


class GreedyDecoder:
    """``greedy_decode`` behind the decoder interface (``.decode(log_probs) -> Hypothesis``)."""

    def __init__(self, tokenizer, **_: object) -> None:
        self.tokenizer = tokenizer

    def decode(self, log_probs: torch.Tensor | np.ndarray) -> Hypothesis:
        return greedy_decode(log_probs, self.tokenizer)


def ctc_log_prob(log_probs: torch.Tensor | np.ndarray, token_ids: Sequence[int], blank_id: int = 0) -> float:
    """Exact log P(token_ids | audio) summed over all CTC alignments (−inf if impossible)."""
    lp = torch.from_numpy(_as_numpy(log_probs))
    targets = torch.tensor([list(token_ids)], dtype=torch.long)
    loss = torch.nn.functional.ctc_loss(
        lp.unsqueeze(1), targets, torch.tensor([lp.shape[0]]), torch.tensor([len(token_ids)]),
        blank=blank_id, reduction="sum", zero_infinity=False,
    )  # fmt: skip
    return -float(loss)


def _alignment_confidence(lp: np.ndarray, ids: Sequence[int], blank: int) -> float:
    """Mean over tokens of the peak posterior on the frames the Viterbi alignment gives each token."""
    if not ids:
        return _empty_confidence(lp, blank)
    T = len(lp)
    ext = np.full(2 * len(ids) + 1, blank, dtype=np.int64)
    ext[1::2] = ids
    S = len(ext)
    # a state may be entered from s-2 when it is a token different from the token two states back
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    skip_penalty = np.where(skip, 0.0, NEG_INF)
    emit = lp[:, ext]  # (T, S) log-posterior of each state's symbol
    buf = np.full(S + 2, NEG_INF)  # buf[2:] = delta; the two leading -inf stand for "before state 0"
    buf[2] = emit[0, 0]
    buf[3] = emit[0, 1]
    back = np.zeros((T, S), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, T):
        stay, from_prev, from_skip = buf[2:], buf[1:-1], buf[:-2] + skip_penalty
        step = (from_prev > stay).astype(np.int8)
        best = np.maximum(stay, from_prev)
        jump = from_skip > best
        step[jump] = 2
        back[t] = step
        buf[2:] = np.where(jump, from_skip, best) + emit[t]
    delta = buf[2:]
    s = S - 1 if delta[S - 1] >= delta[S - 2] else S - 2
    if not np.isfinite(delta[s]):
        return 0.0  # the sequence cannot be aligned to these frames
    peaks = [NEG_INF] * len(ids)
    back_rows, emit_rows = back.tolist(), emit.tolist()
    for t in range(T - 1, -1, -1):
        if s % 2:
            peaks[s // 2] = max(peaks[s // 2], emit_rows[t][s])
        s -= back_rows[t][s]
    return float(np.exp(peaks).mean())


class _HotwordGraph:
    """Aho–Corasick automaton over token ids with per-token bonuses.

    Node arrays: ``depth`` (tokens matched), ``lock`` (depth of the deepest complete hotword on the
    node's own root path, 0 if none), ``output`` (depth of the longest hotword ending at this node,
    itself or via failure links; 0 if none). ``step`` caches transitions.
    """

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.depth = [0]
        self.is_end = [False]
        for seq in sequences:
            node = 0
            for tok in seq:
                nxt = self.children[node].get(tok)
                if nxt is None:
                    nxt = len(self.depth)
                    self.children[node][tok] = nxt
                    self.children.append({})
                    self.depth.append(self.depth[node] + 1)
                    self.is_end.append(False)
                node = nxt
            self.is_end[node] = True
        n = len(self.depth)
        self.fail = [0] * n
        self.lock = [0] * n
        self.output = [0] * n
        order = [0]
        for node in order:  # breadth first: parents before children, failure targets before nodes
            for tok, child in self.children[node].items():
                order.append(child)
                if node:
                    f = self.fail[node]
                    while f and tok not in self.children[f]:
                        f = self.fail[f]
                    self.fail[child] = self.children[f].get(tok, 0)
                self.lock[child] = self.depth[child] if self.is_end[child] else self.lock[node]
                self.output[child] = self.depth[child] if self.is_end[child] else self.output[self.fail[child]]
        self._cache: dict[tuple[int, int], tuple[int, int, int]] = {}

    def goto(self, node: int, tok: int) -> int:
        while node and tok not in self.children[node]:
            node = self.fail[node]
        return self.children[node].get(tok, 0)

    def step(self, node: int, tok: int) -> tuple[int, int, int]:
        """→ (next node, tokens newly locked in, pending tokens at next node)."""
        key = (node, tok)
        hit = self._cache.get(key)
        if hit is None:
            nxt = self.goto(node, tok)
            if nxt and self.children[node].get(tok) == nxt:  # the match goes on
                locked = nxt_pending = 0
                if self.is_end[nxt]:
                    locked = self.depth[nxt] - self.lock[node]  # pay the tokens not paid yet
                nxt_pending = self.depth[nxt] - self.lock[nxt]
            else:  # the match broke (or restarted on a shorter suffix): pending bonus is refunded
                locked = self.depth[nxt] if self.is_end[nxt] else 0
                nxt_pending = self.depth[nxt] - self.lock[nxt]
            if not self.is_end[nxt] and self.output[nxt]:
                locked += self.output[nxt]  # a shorter hotword ended inside a longer running match
            hit = self._cache[key] = (nxt, locked, nxt_pending)
        return hit


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


class BeamSearchDecoder:
    """CTC prefix beam search (blank / non-blank log-probabilities per prefix) with hotword biasing.

    ``beam_size``: prefixes kept per frame. ``hotwords``: normalised phrases to favour.
    ``hotword_bonus``: log-domain bonus per matched token. ``token_prune``: only the best
    ``token_prune`` non-blank tokens of each frame are tried; ``token_threshold``: ...and only those
    within this many nats of the frame's best token; ``beam_threshold``: a prefix is not extended by
    a token when the result would rank more than this many nats below the best reachable rank.
    ``lm``: an ``asr.lm.NgramLM`` over token ids fused with weight ``lm_weight``; each emitted token also
    earns ``insertion_bonus`` (the LM alone would favour short outputs).
    ``beam_size=1`` without hotwords or LM is exactly ``greedy_decode``: a single summed-probability prefix
    could otherwise stall on a prefix whose blank-plus-repeat mass beats the frame's best token, which
    is not what anyone means by "beam 1".
    """

    def __init__(
        self,
        tokenizer,
        beam_size: int = 8,
        hotwords: Sequence[str] = (),
        hotword_bonus: float = 1.5,
        token_prune: int = 12,
        token_threshold: float = 12.0,
        beam_threshold: float = 12.0,
        lm=None,
        lm_weight: float = 0.5,
        insertion_bonus: float = 1.0,
        **_: object,
    ) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        if token_prune < 1:
            raise ValueError(f"token_prune must be at least 1, got {token_prune}")
        self.tokenizer = tokenizer
        self.beam_size = int(beam_size)
        self.hotword_bonus = float(hotword_bonus)
        self.token_prune = int(token_prune)
        self.token_threshold = float(token_threshold)
        self.beam_threshold = float(beam_threshold)
        self.hotwords = tuple(hotwords)
        sequences = []
        for word in self.hotwords:
            ids = tokenizer.encode(word)
            if not ids:
                continue
            if tokenizer.unk_id in ids:
                log.warning("hotword %r contains characters the tokenizer does not know; ignored", word)
                continue
            sequences.append(ids)
        self.graph = _HotwordGraph(sequences) if sequences and self.hotword_bonus else None
        self.lm = lm if lm is not None and lm_weight else None
        self.lm_weight = float(lm_weight)
        self.insertion_bonus = float(insertion_bonus) if self.lm is not None else 0.0

    def decode(self, log_probs: torch.Tensor | np.ndarray) -> Hypothesis:
        """``log_probs``: (T, V) log-posteriors of one utterance → best hypothesis."""
        lp = _as_numpy(log_probs, self.tokenizer)
        if self.beam_size == 1 and self.graph is None and self.lm is None:
            return _greedy_np(lp, self.tokenizer)
        blank = self.tokenizer.blank_id
        graph = self.graph
        bonus = self.hotword_bonus
        T, V = lp.shape
        if T == 0:
            return Hypothesis("", [], 0.0, 0.0)

        # candidate tokens per frame: top-k non-blank, within token_threshold of the frame's best,
        # best first (so a beam can stop at the first token that falls below the frame's cutoff)
        masked = lp.copy()
        masked[:, blank] = NEG_INF
        k = min(self.token_prune, V - 1)
        top = np.argpartition(-masked, k - 1, axis=1)[:, :k] if k < V - 1 else np.argsort(-masked, axis=1)[:, :k]
        top_lp = np.take_along_axis(masked, top, axis=1)
        order = np.argsort(-top_lp, axis=1, kind="stable")
        top, top_lp = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_lp, order, axis=1)
        frame_max = lp.max(axis=1)
        floor = frame_max - self.token_threshold
        rows = lp.tolist()
        lae = _logaddexp
        head_room = (bonus if graph is not None else 0.0) + max(0.0, self.insertion_bonus)  # most a token adds
        lm, lm_weight, ins = self.lm, self.lm_weight, self.insertion_bonus

        # beams: (prefix, [log P ending in blank, log P ending in non-blank, hotword node, locked tokens,
        #                  weighted LM score + insertion bonuses of the prefix], rank)
        beams: list[tuple[tuple[int, ...], list, float]] = [((), [0.0, NEG_INF, 0, 0, 0.0], 0.0)]
        for t in range(T):
            row = rows[t]
            lp_blank = row[blank]
            n_keep = int(np.count_nonzero(top_lp[t] >= floor[t]))
            cands = list(zip(top[t, :n_keep].tolist(), top_lp[t, :n_keep].tolist(), strict=True))
            # an extension whose rank cannot come within beam_threshold of the best reachable rank
            cutoff = beams[0][2] + float(frame_max[t]) - self.beam_threshold - head_room
            nxt: dict[tuple[int, ...], list] = {}
            for prefix, (pb, pnb, node, locked, lm_score), rank in beams:
                total = lae(pb, pnb)
                # stay on the same prefix: a blank, or a repeat of the last token merged into it
                stay_nb = pnb + row[prefix[-1]] if prefix else NEG_INF
                entry = nxt.get(prefix)
                if entry is None:
                    nxt[prefix] = [total + lp_blank, stay_nb, node, locked, lm_score]
                else:
                    entry[0] = lae(entry[0], total + lp_blank)
                    entry[1] = lae(entry[1], stay_nb)
                last = prefix[-1] if prefix else -1
                min_v = cutoff - rank
                for tok, v in cands:
                    if v < min_v:
                        break
                    # the same token again only starts a new label after a blank
                    score = (pb if tok == last else total) + v
                    if score == NEG_INF:
                        continue
                    new = (*prefix, tok)
                    entry = nxt.get(new)
                    if entry is not None:
                        entry[1] = lae(entry[1], score)
                        continue
                    new_lm = lm_score if lm is None else lm_score + lm_weight * lm.logp(lm.context(prefix), tok) + ins
                    if graph is None:
                        nxt[new] = [NEG_INF, score, 0, 0, new_lm]
                    else:
                        node2, gained, _ = graph.step(node, tok)
                        nxt[new] = [NEG_INF, score, node2, locked + gained, new_lm]
            beams = self._prune(nxt, graph, bonus)

        def final(item: tuple[tuple[int, ...], list, float]) -> float:
            pb, pnb, _, locked, lm_score = item[1]
            end = 0.0 if lm is None else lm_weight * lm.logp(lm.context(item[0]), EOS)
            return lae(pb, pnb) + bonus * locked + lm_score + end  # pending (unfinished) bonus refunded

        prefix, (pb, pnb, _, _, _), _ = max(beams, key=final)
        ids = list(prefix)
        confidence = _alignment_confidence(lp, ids, blank)
        return Hypothesis(self.tokenizer.decode(ids), ids, confidence, lae(pb, pnb))

    def _prune(
        self, beams: dict[tuple[int, ...], list], graph: _HotwordGraph | None, bonus: float
    ) -> list[tuple[tuple[int, ...], list, float]]:
        """The ``beam_size`` best prefixes, best first, with their rank (acoustic + locked + pending)."""
        lae = _logaddexp
        if graph is None:
            ranked = [(lae(e[0], e[1]) + e[4], p, e) for p, e in beams.items()]
        else:
            depth, lock = graph.depth, graph.lock
            ranked = [(lae(e[0], e[1]) + e[4] + bonus * (e[3] + depth[e[2]] - lock[e[2]]), p, e)
                      for p, e in beams.items()]
        # prefixes are unique, so ties on rank are settled by the prefix tuple, never by the lists
        best = heapq.nlargest(self.beam_size, ranked)
        return [(p, e, r) for r, p, e in best]


def decode_batch(
    log_probs: torch.Tensor | np.ndarray, lengths: torch.Tensor | Sequence[int] | None, decoder
) -> list[Hypothesis]:
    """Decode a padded batch: ``log_probs`` (B, T, V), ``lengths`` (B,) valid frames per item
    (``None``: all T). ``decoder``: anything with ``.decode((T, V)) -> Hypothesis``."""
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must have shape (batch, frames, vocab); got {tuple(log_probs.shape)}")
    B, T = log_probs.shape[0], log_probs.shape[1]
    if isinstance(log_probs, torch.Tensor):
        log_probs = log_probs.detach().to("cpu", torch.float32)
    if lengths is None:
        lens = [T] * B
    else:
        lens = [int(n) for n in (lengths.tolist() if hasattr(lengths, "tolist") else lengths)]
    if len(lens) != B:
        raise ValueError(f"lengths has {len(lens)} entries for a batch of {B}")
    return [decoder.decode(log_probs[i, : min(n, T)]) for i, n in enumerate(lens)]
