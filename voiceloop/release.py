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
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from asr.evaluate import EvalReport, evaluate
from asr.gate import GateConfig, GateDecision, compare, first_release, scored_from_report
from collection.manifest import RECORDINGS, SUPERVISIONS, Utterance, load_split, manifest_hash, read_jsonl, write_jsonl

from .settings import Settings

log = logging.getLogger(__name__)

GOLD = "gold"
PRODUCTION = "production"
LATENCY_UTTERANCES = 40  # utterances timed one at a time (each on both models) for the latency budget


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
                 use_cache: bool = True) -> tuple[EvalReport, str]:
    """(report, model version) of a model on the evaluation set. Registry models' reports are cached per
    version and set (a version never changes)."""
    from asr.inference import Recognizer
    from asr.registry import resolve_checkpoint

    from .pipeline import connect_mlflow

    pinned = model_uri.removeprefix("models:/")
    if model_uri.startswith("models:/") and "@" not in pinned:
        connect_mlflow(settings)
        version = pinned  # models:/<name>/<version> names its label: no download to learn it
    elif model_uri.startswith(("models:/", "runs:/")):
        connect_mlflow(settings)
        _, version = resolve_checkpoint(model_uri)
    else:
        version = model_uri
    cache = settings.data_dir / "eval" / "cache" / f"{_safe(version)}--{evalset.manifest_hash}-{decoder}.json"
    if use_cache and model_uri.startswith("models:/") and cache.exists():
        return EvalReport.from_dict(json.loads(cache.read_text())), version
    report = evaluate(Recognizer.load(model_uri, decoder=decoder, version=version), evalset.utterances())
    if model_uri.startswith("models:/"):
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(report.to_dict(), ensure_ascii=False))
    return report, version


def latency_p50_ms(checkpoints: Sequence[Path], utterances: Sequence[Utterance],
                   decoder: str = "greedy") -> list[float]:
    """Median wall time (ms) of transcribing one utterance at a time — what a device request costs — for
    each checkpoint, measured interleaved (A, B, A, B, …) so both see the same machine load. The median,
    not a tail percentile: the tail of a few dozen timings on a shared machine is whatever else ran (the
    loop demo measured 11 vs 38 ms "p95" for two models of the same architecture)."""
    from asr.audio import load_audio
    from asr.inference import Recognizer

    recognizers = [Recognizer.load(str(path), decoder=decoder) for path in checkpoints]
    wavs = [load_audio(u.audio_path) for u in utterances]
    if not wavs:
        return [0.0 for _ in recognizers]
    for r in recognizers:
        r.transcribe(wavs[0])  # warm-up
    times: list[list[float]] = [[] for _ in recognizers]
    for wav in wavs:
        for r, out in zip(recognizers, times, strict=True):
            t = time.perf_counter()
            r.transcribe(wav)
            out.append(1000 * (time.perf_counter() - t))
    return [round(float(np.percentile(t, 50)), 1) for t in times]


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
    from sqlalchemy import select

    from asr.registry import CHECKPOINT_FILE, MlflowTracker, alias_version, register, resolve_checkpoint, set_alias
    from collection.db import session_scope
    from collection.models import ReleaseDecision
    from collection.releases import record_decision

    from .pipeline import connect_mlflow

    config = config or GateConfig.from_settings(settings)
    connect_mlflow(settings)
    with session_scope(settings.catalog) as session:  # a retried task: the step was decided already
        done = session.scalar(select(ReleaseDecision).where(
            ReleaseDecision.model_name == settings.model_name, ReleaseDecision.run_id == run_id,
            ReleaseDecision.stage == "gate", ReleaseDecision.run_key == run_key))
        if done is not None and done.numbers:
            log.info("gate for run %s (%s) was decided already: %s", run_id, run_key, done.verdict)
            return GateOutcome(GateDecision.from_dict(done.numbers), done.model_version, done.champion_version,
                               evalset)
    champion_version = alias_version(settings.model_name, "champion")
    challenger_uri = f"runs:/{run_id}/checkpoint"
    challenger_path, _ = resolve_checkpoint(challenger_uri)
    challenger, _ = model_report(settings, str(challenger_path), evalset, decoder=decoder)
    if champion_version is None:
        decision = first_release(scored_from_report(challenger), config)
    else:
        champion_uri = f"models:/{settings.model_name}/{champion_version}"
        champion, _ = model_report(settings, champion_uri, evalset, decoder=decoder)
        champion_path, _ = resolve_checkpoint(champion_uri)
        latency = latency_p50_ms([champion_path, challenger_path], evalset.utterances()[:LATENCY_UTTERANCES],
                                 decoder)
        decision = compare(scored_from_report(champion), scored_from_report(challenger), config,
                           latency_ms=(latency[0], latency[1]), latency_stat="p50",
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


# -- live steps: shadow, canary, promote, rollback ------------------------------------------------------
def _versions(settings: Settings) -> tuple[str | None, str | None]:
    from asr.registry import alias_version

    from .pipeline import connect_mlflow

    connect_mlflow(settings)
    return alias_version(settings.model_name, "champion"), alias_version(settings.model_name, "challenger")


def start_step(settings: Settings, stage: str) -> dict[str, Any]:
    """Put ``@challenger`` on ``shadow`` (a copy of every request) or ``canary`` (``rollout_canary_share`` of
    requests, shadow off); serving follows on its next poll. Returns the versions and the step's start (the
    live gate judges traffic from then on). Setting the same state again is harmless.

    Raises:
        LookupError: no champion or no challenger to release.
    """
    from collection.models import utcnow
    from serving.rollout import set_rollout

    if stage not in ("shadow", "canary"):
        raise ValueError(f"unknown release step {stage!r}; valid: shadow, canary")
    champion, challenger = _versions(settings)
    if champion is None or challenger is None:
        raise LookupError(f"nothing to release: {settings.model_name} has champion {champion} and "
                          f"challenger {challenger}")
    share = settings.rollout_canary_share if stage == "canary" else 0.0
    set_rollout(settings.model_name, shadow=stage == "shadow", canary_share=share, challenger=challenger)
    return {"stage": stage, "champion": champion, "challenger": challenger, "since": utcnow().isoformat(),
            "canary_share": share}


def judge_step(settings: Settings, step: dict[str, Any], *, run_key: str, now: datetime | None = None
               ) -> dict[str, Any]:
    """The live gate over the step's traffic so far (``serving.rollout.live_gate``): ``wait`` while there is
    too little traffic or too few reviewed transcripts (``fail`` once ``rollout_max_wait_s`` has passed),
    else ``pass`` or ``fail``. A decided step is recorded (MLflow is not: live numbers go to the catalog
    row and the dashboard)."""
    from collection.db import session_scope
    from collection.models import utcnow
    from collection.releases import record_decision
    from serving.rollout import live_gate

    now = now or utcnow()
    since = datetime.fromisoformat(step["since"])
    name = settings.model_name
    with session_scope(settings.catalog) as session:
        gate = live_gate(session, f"{name}/{step['champion']}", f"{name}/{step['challenger']}",
                         stage=step["stage"], since=since, until=now, config=GateConfig.from_settings(settings),
                         min_utterances=settings.rollout_min_utterances, min_labeled=settings.rollout_min_labeled,
                         error_margin=settings.rollout_error_margin)
        verdict, reasons = gate.verdict, list(gate.reasons)
        if verdict == "wait" and (now - since).total_seconds() > settings.rollout_max_wait_s:
            verdict = "fail"
            reasons.append(f"not enough traffic to judge within {settings.rollout_max_wait_s} s")
        summary = gate.decision.summary if gate.decision is not None and verdict == "pass" else "; ".join(reasons)
        if verdict != "wait":
            record_decision(session, model_name=name, run_id=None, model_version=step["challenger"],
                            champion_version=step["champion"], stage=step["stage"], run_key=run_key,
                            verdict=verdict, decision=gate.decision, summary=summary)
    return {**step, "verdict": verdict, "summary": summary, "labeled": gate.labeled}


def promote(settings: Settings, step: dict[str, Any], *, run_key: str) -> dict[str, Any]:
    """``@champion`` → the challenger; ``@challenger`` unset, rollout tags cleared. The previous champion is
    recorded (``champion_version``) as the rollback target. Serving follows within one poll, without
    failed requests (a swap replaces one reference; in-flight requests finish on their model)."""
    from asr.registry import delete_alias, set_alias
    from collection.db import session_scope
    from collection.releases import record_decision
    from serving.rollout import clear_rollout

    champion, challenger = _versions(settings)
    if challenger is not None and challenger == step["challenger"]:
        set_alias(settings.model_name, "champion", challenger)
        delete_alias(settings.model_name, "challenger")
    clear_rollout(settings.model_name)
    with session_scope(settings.catalog) as session:
        record_decision(session, model_name=settings.model_name, run_id=None, model_version=step["challenger"],
                        champion_version=step["champion"], stage="promote", run_key=run_key, verdict="promoted",
                        summary=f"@champion {step['champion']} → {step['challenger']}")
    return {"champion": step["challenger"], "previous": step["champion"]}


def rollback(settings: Settings, step: dict[str, Any] | None, *, run_key: str,
             reason: str = "") -> dict[str, Any]:
    """Stop the release: rollout tags cleared, ``@challenger`` unset, ``@champion`` back on the version the
    release started from when it had moved. Idempotent."""
    from asr.registry import delete_alias, set_alias
    from collection.db import session_scope
    from collection.releases import record_decision
    from serving.rollout import clear_rollout

    champion, challenger = _versions(settings)
    clear_rollout(settings.model_name)
    if step is not None and champion != step["champion"]:
        set_alias(settings.model_name, "champion", step["champion"])
    if step is None or challenger == step["challenger"]:
        delete_alias(settings.model_name, "challenger")
    with session_scope(settings.catalog) as session:
        record_decision(session, model_name=settings.model_name, run_id=None,
                        model_version=step["challenger"] if step else challenger,
                        champion_version=step["champion"] if step else champion, stage="rollback",
                        run_key=run_key, verdict="rolled_back", summary=reason or "rolled back")
    return {"champion": step["champion"] if step else champion, "reason": reason}


__all__ = ["EvalSet", "GateOutcome", "checkpoint_mb", "eval_set", "freeze_gold", "gate_training_run",
           "judge_step", "latency_p50_ms", "model_report", "promote", "rollback", "start_step"]
