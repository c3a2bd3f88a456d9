"""Render a plan to audio and lhotse-compatible manifests.

Chain per utterance (all randomness from the utterance's own seed, so the order and the
number of worker processes never change a byte): eSpeak (22050 Hz) → resample to the plan's
rate → persona age effects → leading/trailing silence → environment at the planned SNR →
level normalisation → PCM16 WAV. Files that already exist are not rendered again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from math import gcd
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import signal
from tqdm.auto import tqdm

from collection.manifest import RECORDINGS, SUPERVISIONS, AudioSource, Recording, Supervision, write_jsonl
from collection.studio.environments import get_environment
from collection.studio.espeak import EspeakEngine
from collection.studio.grammar import COMMAND_KEYS
from collection.studio.plan import Plan, UtteranceSpec, load_plan, plan_utterances

logger = logging.getLogger(__name__)

AUDIO_DIR = "audio"
LEAD_SILENCE_S = (0.10, 0.35)
TRAIL_SILENCE_S = (0.15, 0.40)
SPEECH_LEVEL_DBFS = (-26.0, -18.0)  # RMS of the speech reference after normalisation
PEAK_LIMIT = 0.98
PARALLEL_THRESHOLD = 200  # below this many utterances to render, stay in one process


def resample(audio: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Polyphase resampling from ``from_hz`` to ``to_hz`` (e.g. 22050 → 16000 Hz)."""
    if from_hz == to_hz:
        return audio
    g = gcd(from_hz, to_hz)
    return signal.resample_poly(audio, to_hz // g, from_hz // g)


def render_utterance(spec: UtteranceSpec) -> np.ndarray:
    """The utterance's audio: float32 mono in [-1, 1] at ``spec.sample_rate`` Hz."""
    sr = spec.sample_rate
    rng = np.random.default_rng(spec.seed)
    engine = EspeakEngine.get()
    raw = engine.synthesize(spec.sentence.text, spec.persona.voice_settings(spec.language), seed=spec.seed)
    if len(raw) == 0:
        raise RuntimeError(f"eSpeak produced no audio for {spec.recording_id}: {spec.sentence.text!r}")
    speech = spec.persona.apply(resample(raw.astype(np.float64), engine.sample_rate, sr), sr, rng)
    lead, trail = (int(sr * rng.uniform(*r)) for r in (LEAD_SILENCE_S, TRAIL_SILENCE_S))
    speech = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    mix = get_environment(spec.environment).render(speech, sr, rng, snr_db=spec.snr_db)
    target_rms = 10 ** (rng.uniform(*SPEECH_LEVEL_DBFS) / 20.0)
    gain = target_rms / (np.sqrt(np.mean(mix.speech**2)) + 1e-12)
    peak = float(np.max(np.abs(mix.audio))) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return (mix.audio * gain).astype(np.float32)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> int:
    """Write mono PCM16 WAV atomically (no partial files on interruption); returns samples."""
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, to_pcm16(audio), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return len(audio)


def _render_to_file(spec: UtteranceSpec, audio_dir: str) -> tuple[str, int]:
    path = Path(audio_dir) / f"{spec.recording_id}.wav"
    return spec.recording_id, write_wav(path, render_utterance(spec), spec.sample_rate)


def _manifest_pair(spec: UtteranceSpec, num_samples: int) -> tuple[Recording, Supervision]:
    duration = num_samples / spec.sample_rate
    rec = Recording(id=spec.recording_id,
                    sources=[AudioSource("file", [0], f"{AUDIO_DIR}/{spec.recording_id}.wav")],
                    sampling_rate=spec.sample_rate, num_samples=num_samples, duration=duration, channel_ids=[0])
    p, s = spec.persona, spec.sentence
    custom: dict[str, Any] = {
        "age_band": p.age_band, "dialect": p.dialect, "environment": spec.environment, "snr_db": spec.snr_db,
        "persona": p.to_dict(), "voice": p.voice_settings(spec.language).voice_name, "sentence_id": s.id,
        "standard_text": s.standard_text, "command": {k: s.command.get(k) for k in COMMAND_KEYS},
        "split": spec.split, "seen_sentence": spec.seen_sentence, "source": "synthetic",
    }
    sup = Supervision(id=spec.recording_id, recording_id=spec.recording_id, start=0.0, duration=duration,
                      channel=0, text=s.text, language=spec.language, speaker=p.id, gender=p.gender, custom=custom)
    return rec, sup


def _default_workers(todo: int) -> int:
    return 1 if todo < PARALLEL_THRESHOLD else max(1, min(os.cpu_count() or 1, 8))


def _render_all(todo: list[UtteranceSpec], audio_dir: Path, workers: int, progress: bool) -> dict[str, int]:
    done: dict[str, int] = {}
    bar = tqdm(total=len(todo), desc="synthesizing", unit="utt", disable=not progress or not todo)
    try:
        if workers <= 1:
            for spec in todo:
                rid, n = _render_to_file(spec, str(audio_dir))
                done[rid] = n
                bar.update()
        else:
            # spawn: eSpeak keeps process-global state; each worker loads its own private copy.
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_render_to_file, spec, str(audio_dir)) for spec in todo]
                for fut in as_completed(futures):
                    rid, n = fut.result()
                    done[rid] = n
                    bar.update()
    finally:
        bar.close()
    return done


def synthesize_plan(plan: str | Path | Mapping[str, Any] | Plan, out_dir: str | Path, *,
                    workers: int | None = None, progress: bool = True,
                    splits: Collection[str] | None = None) -> dict[str, Path]:
    """Render every utterance of ``plan`` under ``out_dir`` and write one manifest directory
    per split (``<out>/<split>/{recordings,supervisions}.jsonl``, audio in ``<out>/audio``);
    ``splits``: only these (the others' speakers and sentences are drawn all the same, so a split
    reads the same whether rendered alone or with the rest).

    Same plan + seed ⇒ byte-identical manifests and audio. Audio files that already exist are
    kept (ids carry a hash of everything that shapes the audio, so a changed plan gets new
    files). ``workers``: processes for rendering (default: 1 for small jobs, else the CPU
    count, at most 8). Returns {split name: manifest directory}.
    """
    plan = plan if isinstance(plan, Plan) else load_plan(plan)
    out = Path(out_dir)
    audio_dir = out / AUDIO_DIR
    audio_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    specs = plan_utterances(plan)
    if splits is not None:
        unknown = set(splits) - set(specs)
        if unknown:
            raise ValueError(f"plan {plan.name} has no split(s) {sorted(unknown)}; it has {sorted(specs)}")
        specs = {name: s for name, s in specs.items() if name in set(splits)}
    all_specs = [s for split in specs.values() for s in split]
    todo = [s for s in all_specs if not (audio_dir / f"{s.recording_id}.wav").exists()]
    logger.info("plan %s: %d utterances in %d splits, %d to render, %d already on disk", plan.name,
                len(all_specs), len(specs), len(todo), len(all_specs) - len(todo))
    lengths = _render_all(todo, audio_dir, workers or _default_workers(len(todo)), progress)
    result: dict[str, Path] = {}
    for split, split_specs in specs.items():
        pairs = []
        for spec in sorted(split_specs, key=lambda s: s.recording_id):
            n = lengths.get(spec.recording_id)
            if n is None:
                n = sf.info(str(audio_dir / f"{spec.recording_id}.wav")).frames
            pairs.append(_manifest_pair(spec, n))
        split_dir = out / split
        write_jsonl(split_dir / RECORDINGS, (r for r, _ in pairs))
        write_jsonl(split_dir / SUPERVISIONS, (s for _, s in pairs))
        result[split] = split_dir
    (out / "plan.json").write_text(json.dumps(plan.to_dict(), ensure_ascii=False, indent=1, sort_keys=True) + "\n",
                                   encoding="utf-8")
    logger.info("plan %s: wrote %s in %.1f s", plan.name, {k: len(v) for k, v in specs.items()},
                time.perf_counter() - start)
    return result
