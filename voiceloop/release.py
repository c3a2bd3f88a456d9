"""The offline release gate: score the champion and a newly trained model on the same evaluation set,
apply :func:`asr.gate.compare`, record the decision, and register the model as ``@challenger`` only
when it passes.

The evaluation set is the **frozen gold set** plus **recent labeled production data**:

- the gold set (``<data dir>/eval/gold/<part>/``) is copied once, with absolute audio paths, from the split
  directories it is first frozen from (the demo: the studio's held-out and unseen speakers), and never
  changes afterwards — every model of the service's life is compared on it;
- the production part is the production recordings (reviewed labels, consent to training) in the test
  split of the dataset version the model was trained on: dataset versions split by speaker, so none of
  them was trained on, and each retrain is also judged on what devices really heard lately.

Both models are scored on exactly the same utterances (a paired comparison), the champion's scores are
cached per (model version, evaluation set hash), and each decision is recorded twice: in MLflow (on the
challenger's training run: ``gate.*`` metrics, the ``gate.decision`` tag and ``gate.json``) and in the
catalog (:class:`~collection.models.ReleaseDecision`, one row per model version, stage and run key, which
the ops dashboard lists). Running it again for the same run key changes nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr.evaluate import EvalReport, evaluate
from asr.gate import GateConfig, GateDecision, compare, first_release, scored_from_report
from collection.manifest import RECORDINGS, SUPERVISIONS, Utterance, load_split, manifest_hash, read_jsonl, write_jsonl

from .settings import Settings

log = logging.getLogger(__name__)

GOLD = "gold"
PRODUCTION = "production"
LATENCY_UTTERANCES = 20  # utterances timed one at a time for the latency budget


# -- the evaluation set ------------------------------------------------------------------------------
def gold_dir(settings: Settings) -> Path:
    return settings.data_dir / "eval" / GOLD


def freeze_gold(settings: Settings, sources: dict[str, Path]) -> Path:
    """Freeze the gold set once: each ``part name → split directory`` is copied to
    ``<data dir>/eval/gold/<part>/`` with absolute audio paths. When the gold set exists already it is
    returned unchanged (whatever ``sources`` say): the yardstick never moves.

    Raises:
        FileNotFoundError: a source is not a split directory.
    """
    root = gold_dir(settings)
    if (root / "gold.json").exists():
        return root
    tmp = root.with_name(".gold-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part, split_dir in sources.items():
        _copy_split(Path(split_dir), tmp / part)
    (tmp / "gold.json").write_text(json.dumps({"parts": {p: str(Path(s).resolve()) for p, s in sources.items()},
                                               "manifest_hash": manifest_hash(tmp)}, indent=1))
    tmp.rename(root)  # all or nothing: a crash leaves no half-frozen gold set
    log.info("gold evaluation set frozen at %s (%s)", root, ", ".join(sources))
    return root


def _copy_split(split_dir: Path, out: Path, keep: Sequence[str] | None = None) -> int:
    """Copy a split's manifests with absolute audio paths (only the supervisions in ``keep`` when given)."""
    utterances = [u for u in load_split(split_dir) if keep is None or u.id in keep]
    out.mkdir(parents=True, exist_ok=True)
    recordings = []
    for u in utterances:
        rec = u.recording.to_dict()
        rec["sources"] = [{**s, "source": str((u.root / s["source"]).resolve())} for s in rec["sources"]]
        recordings.append(rec)
    write_jsonl(out / RECORDINGS, recordings)
    write_jsonl(out / SUPERVISIONS, [u.supervision for u in utterances])
    return len(utterances)


@dataclass(frozen=True)
class EvalSet:
    """The split directories a release is judged on and their combined manifest hash."""

    parts: dict[str, Path]
    manifest_hash: str

    def utterances(self) -> list[Utterance]:
        return [u for split in self.parts.values() for u in load_split(split)]


def eval_set(settings: Settings, dataset_root: Path | None = None) -> EvalSet:
    """The gold set's parts, plus the production recordings of ``dataset_root``'s test split (written once
    to ``<data dir>/eval/production/<dataset version>/``).

    Raises:
        FileNotFoundError: no gold set frozen yet (:func:`freeze_gold`).
    """
    root = gold_dir(settings)
    if not (root / "gold.json").exists():
        raise FileNotFoundError(f"no gold evaluation set at {root}; freeze one first (voiceloop.release.freeze_gold)")
    parts = {f"{GOLD}/{p.name}": p for p in sorted(root.iterdir()) if p.is_dir()}
    if dataset_root is not None and (Path(dataset_root) / "test" / SUPERVISIONS).exists():
        test = Path(dataset_root) / "test"
        production = [s["id"] for s in read_jsonl(test / SUPERVISIONS)
                      if (s.get("custom") or {}).get("source") == PRODUCTION]
        if production:
            out = settings.data_dir / "eval" / PRODUCTION / Path(dataset_root).name
            if not (out / SUPERVISIONS).exists():
                tmp = out.with_name(f".{out.name}-tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                _copy_split(test, tmp, keep=set(production))
                tmp.rename(out)
            parts[f"{PRODUCTION}/{out.name}"] = out
    digest = "-".join(manifest_hash(p)[:16] for p in parts.values())
    return EvalSet(parts, digest)


# -- scoring a model on it ---------------------------------------------------------------------------
def model_report(settings: Settings, model_uri: str, evalset: EvalSet, *, decoder: str = "greedy",
                 use_cache: bool = True) -> tuple[EvalReport, str, float]:
    """(report, model version, p95 latency in ms of one utterance) of a model on the evaluation set.
    Registry models' results are cached per version and set (a version never changes)."""
    from asr.inference import Recognizer
    from asr.registry import resolve_checkpoint

    from .pipeline import connect_mlflow

    if model_uri.startswith(("models:/", "runs:/")):
        connect_mlflow(settings)
        _, version = resolve_checkpoint(model_uri)
    else:
        version = model_uri
    cache = settings.data_dir / "eval" / "cache" / f"{_safe(version)}--{evalset.manifest_hash}-{decoder}.json"
    if use_cache and model_uri.startswith("models:/") and cache.exists():
        saved = json.loads(cache.read_text())
        return EvalReport.from_dict(saved["report"]), version, saved["latency_p95_ms"]
    recognizer = Recognizer.load(model_uri, decoder=decoder, version=version)
    utterances = evalset.utterances()
    report = evaluate(recognizer, utterances)
    latency = latency_p95_ms(recognizer, utterances[:LATENCY_UTTERANCES])
    if model_uri.startswith("models:/"):
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"report": report.to_dict(), "latency_p95_ms": latency}, ensure_ascii=False))
    return report, version, latency


def latency_p95_ms(recognizer, utterances: Sequence[Utterance]) -> float:  # noqa: ANN001 - asr.inference.Recognizer
    """p95 wall time of transcribing one utterance at a time (what a device request costs), in ms."""
    from asr.audio import load_audio

    wavs = [load_audio(u.audio_path) for u in utterances]
    if not wavs:
        return 0.0
    recognizer.transcribe(wavs[0])  # warm-up
    times = []
    for wav in wavs:
        t = time.perf_counter()
        recognizer.transcribe(wav)
        times.append(1000 * (time.perf_counter() - t))
    return round(float(np.percentile(times, 95)), 1)


def checkpoint_mb(path: Path) -> float:
    return round(Path(path).stat().st_size / 1e6, 2)


def _safe(version: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in version)


# -- the gate ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateOutcome:
    decision: GateDecision
    challenger_version: str | None  # the registry version registered as @challenger (None: refused)
    champion_version: str | None
    evalset: EvalSet


def gate_training_run(settings: Settings, run_id: str, evalset: EvalSet, *, run_key: str,
                      config: GateConfig | None = None, decoder: str = "greedy") -> GateOutcome:
    """Judge the model trained in MLflow run ``run_id`` against ``@champion`` on ``evalset``; record the
    decision; register the model and point ``@challenger`` at it only when it passes (the first model,
    with no champion yet, passes on its own numbers and becomes ``@champion``).

    ``run_key`` names the attempt (the Airflow run id, or ``cli-…``): the same run key records once.
    """
    from asr.registry import CHECKPOINT_FILE, MlflowTracker, alias_version, register, resolve_checkpoint, set_alias
    from collection.db import session_scope
    from collection.releases import record_decision

    from .pipeline import connect_mlflow

    config = config or GateConfig.from_settings(settings)
    connect_mlflow(settings)
    champion_version = alias_version(settings.model_name, "champion")
    challenger_uri = f"runs:/{run_id}/checkpoint"
    challenger_path, _ = resolve_checkpoint(challenger_uri)
    challenger, _, challenger_ms = model_report(settings, str(challenger_path), evalset, decoder=decoder)
    if champion_version is None:
        decision = first_release(scored_from_report(challenger), config)
    else:
        champion_uri = f"models:/{settings.model_name}/{champion_version}"
        champion, _, champion_ms = model_report(settings, champion_uri, evalset, decoder=decoder)
        champion_path, _ = resolve_checkpoint(champion_uri)
        decision = compare(scored_from_report(champion), scored_from_report(challenger), config,
                           latency_ms=(champion_ms, challenger_ms),
                           size_mb=(checkpoint_mb(champion_path), checkpoint_mb(challenger_path)))
    registered = None
    if decision.promote:
        registered = register(run_id, settings.model_name)
        set_alias(settings.model_name, "champion" if champion_version is None else "challenger", registered)
    tracker = MlflowTracker(run_id)
    tracker.log_metrics(decision.metrics())
    tracker.set_tag("gate.decision", "promote" if decision.promote else "refuse")
    tracker.set_tag("gate.summary", decision.summary[:5000])
    out = settings.data_dir / "eval" / "gate" / f"{run_id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run_key": run_key, "champion_version": champion_version,
                               "challenger_version": registered, "evalset": evalset.manifest_hash,
                               "decision": decision.to_dict()}, ensure_ascii=False, indent=1))
    tracker.log_artifact(out, "gate")
    with session_scope(settings.catalog) as session:
        record_decision(session, model_name=settings.model_name, run_id=run_id, model_version=registered,
                        champion_version=champion_version, stage="gate", run_key=run_key,
                        verdict="pass" if decision.promote else "fail", decision=decision)
    log.info("gate for run %s (%s): %s", run_id, CHECKPOINT_FILE, decision.summary)
    return GateOutcome(decision, registered, champion_version, evalset)


__all__ = ["EvalSet", "GateOutcome", "checkpoint_mb", "eval_set", "freeze_gold", "gate_training_run",
           "latency_p95_ms", "model_report"]
