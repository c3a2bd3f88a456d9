"""Accuracy benchmark: train from scratch on studio data within a time budget, then evaluate.

    .venv/bin/python bench/accuracy.py                 # 30 training minutes on the demo plan
    .venv/bin/python bench/accuracy.py --minutes 10    # shorter

Prints (and writes to bench/out/accuracy/):
- the learning curve: dev CER against training minutes (table + learning_curve.png);
- CER / WER / command exact-match on test_seen (new speakers, sentences seen in training) and
  test_unseen (new speakers, sentences never seen), against the targets;
- per-slice CER on test_heldout (dialect and older speakers, all held out of training);
- streaming vs offline on the test sets (identical transcripts, CER difference, max |Δ log-prob|);
- greedy vs beam search with the model's n-gram LM, with and without hotword biasing.

    .venv/bin/python bench/accuracy.py --checkpoint bench/out/accuracy/run/model.pt   # evaluate only
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from asr.audio import load_audio
from asr.backends import load_checkpoint
from asr.evaluate import evaluate, score
from asr.inference import Recognizer
from asr.plots import plot_learning_curve, plot_slices
from asr.train import TrainResult, load_train_config, train
from collection.manifest import load_split
from collection.studio import command_lexicon, synthesize_plan

TARGETS = {"test_seen": {"cer": 0.05, "exact_match": 0.90}, "test_unseen": {"cer": 0.15}}
console = Console(width=None if sys.stdout.isatty() else 150)  # whole tables in logs too


def target_verdict(metric: str, target: float, m) -> str:
    ok = m.cer <= target if metric == "cer" else m.exact_match >= target
    return f"{metric}{'≤' if metric == 'cer' else '≥'}{target:.0%} {'✓' if ok else '✗'}"


def streaming_vs_offline(recognizer: Recognizer, utterances, piece_s: float = 0.1) -> dict:
    """Stream every utterance in ``piece_s`` pieces; compare with the offline greedy result."""
    refs, offline, streamed, max_diff = [], [], [], 0.0
    piece = int(16000 * piece_s)
    for u in utterances:
        wav = load_audio(u.audio_path)
        lp_off = recognizer.log_probs([wav])[0]
        stream = recognizer.loaded.model.stream()
        parts = [stream.accept(wav[i : i + piece]) for i in range(0, len(wav), piece)] + [stream.finish()]
        lp_str = torch.cat(parts)
        max_diff = max(max_diff, float((lp_off - lp_str).abs().max()))
        refs.append(recognizer.normalize(u.text))
        offline.append(recognizer.decoder.decode(lp_off).text)
        streamed.append(recognizer.decoder.decode(lp_str).text)
    slices = [{}] * len(refs)
    return {
        "n": len(refs),
        "identical_transcripts": sum(a == b for a, b in zip(offline, streamed, strict=True)),
        "cer_offline": score(refs, offline, slices).overall.cer,
        "cer_streaming": score(refs, streamed, slices).overall.cer,
        "max_abs_logprob_diff": max_diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training-time budget")
    parser.add_argument("--plan", default="demo")
    parser.add_argument("--config", default="baseline")
    parser.add_argument("--data", type=Path, default=Path("data/studio"))
    parser.add_argument("--out", type=Path, default=Path("bench/out/accuracy"))
    parser.add_argument("--eval-every", type=float, default=3.0, help="minutes between learning-curve points")
    parser.add_argument("--checkpoint", type=Path, help="skip training; evaluate this checkpoint")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console)])

    synthesize_plan(args.plan, args.data)
    cfg = load_train_config(args.config, max_minutes=args.minutes, eval_every_minutes=args.eval_every)
    t0 = time.time()
    if args.checkpoint:
        history = json.loads((args.checkpoint.parent / "history.json").read_text())
        meta = load_checkpoint(args.checkpoint).meta
        result = TrainResult(args.checkpoint, meta["step"], meta["train_minutes"], history)
    else:
        result = train(cfg, load_split(args.data / "train"), load_split(args.data / "dev"), args.out / "run")
    wall = time.time() - t0

    curve = Table("training minutes", "step", "train loss", "dev CER", title=f"learning curve ({args.config})")
    for p in result.history:
        curve.add_row(f"{p['minutes']:.1f}", str(p["step"]), f"{p['loss']:.3f}", f"{p['dev_cer']:.1%}")
    console.print(curve)
    plot_learning_curve({args.config: result.history}, args.out / "learning_curve.png")

    greedy = Recognizer.load(str(result.checkpoint))
    beam_lm = Recognizer.load(str(result.checkpoint), decoder="beam")
    beam_hot = Recognizer.load(str(result.checkpoint), decoder="beam", hotwords=command_lexicon())
    decoders = (("greedy", greedy), ("beam+lm", beam_lm), ("beam+lm+hotwords", beam_hot))
    summary = Table("split", "decoder", "n", "CER", "WER", "exact match", "target", title="accuracy")
    results: dict = {"train_minutes": result.train_minutes, "steps": result.steps, "wall_seconds": wall,
                     "config": cfg.__dict__ | {"model": cfg.model}, "history": result.history, "splits": {}}
    for split in ("test_seen", "test_unseen", "test_heldout"):
        utts = load_split(args.data / split)
        for name, rec in decoders:
            report = evaluate(rec, utts)
            report.write_json(args.out / f"{split}.{name}.json")
            m = report.overall
            verdict = " ".join(target_verdict(k, v, m) for k, v in TARGETS.get(split, {}).items())
            summary.add_row(split, name, str(m.n), f"{m.cer:.1%} ({m.cer_ci[0]:.1%}–{m.cer_ci[1]:.1%})",
                            f"{m.wer:.1%}", f"{m.exact_match:.1%}", verdict)
            results["splits"][f"{split}.{name}"] = report.to_dict() | {"utterances": None}
            if split == "test_heldout" and name == "beam+lm":
                report.print(title="test_heldout by slice (beam+lm)", console=console)
                rows = [(f"{k}={v}", s.cer, *s.cer_ci) for k, vals in report.slices.items()
                        for v, s in sorted(vals.items())]
                plot_slices(rows, args.out / "cer_by_slice.png", "CER by slice, test_heldout")
    console.print(summary)

    stream_rows = Table("split", "n", "identical transcripts", "CER offline", "CER streaming", "max |Δ log-prob|",
                        title="streaming (100 ms pieces, 320 ms chunks) vs offline, beam+lm")
    for split in ("test_seen", "test_unseen"):
        s = streaming_vs_offline(beam_lm, load_split(args.data / split))
        results["splits"][f"{split}.streaming"] = s
        stream_rows.add_row(split, str(s["n"]), f"{s['identical_transcripts']}/{s['n']}", f"{s['cer_offline']:.2%}",
                            f"{s['cer_streaming']:.2%}", f"{s['max_abs_logprob_diff']:.1e}")
    console.print(stream_rows)

    (args.out / "accuracy.json").write_text(json.dumps(results, ensure_ascii=False, indent=1, default=str))
    console.print(f"wrote {args.out}/accuracy.json, learning_curve.png, cer_by_slice.png "
                  f"({result.steps} steps, {result.train_minutes:.1f} training minutes, {wall / 60:.1f} min wall)")


if __name__ == "__main__":
    main()
