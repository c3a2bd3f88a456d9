"""A release in serving: the rollout state in the registry, and how the challenger does on live traffic.

The ``deploy`` DAG moves a challenger through shadow → canary → promote (or rollback). It never talks to
serving: it writes the **rollout state** as tags on the registered model, and every API replica and Kafka
worker reads them on its next alias poll (``serving.model_manager``), so the fleet follows without a
restart::

    set_rollout("voiceloop-asr", shadow=True, canary_share=0.0)    # shadow @challenger on a copy of traffic
    set_rollout("voiceloop-asr", shadow=False, canary_share=0.2)   # 20 % of requests answered by it
    clear_rollout("voiceloop-asr")                                  # back to the settings' defaults

Tags (on the registered model, not on a version; all three are written together):

- ``voiceloop.rollout.shadow``: ``"true"`` / ``"false"``
- ``voiceloop.rollout.canary_share``: a decimal in [0, 1] (``"0.2"``)
- ``voiceloop.rollout.challenger``: the version ``@challenger`` pointed at when the state was set. The state
  applies only while ``@challenger`` still points there: a retrain that registers a new challenger in the
  middle of a canary does not inherit the old one's traffic share (it falls back to the settings).
- ``voiceloop.rollout.updated_at``: when it was set (ISO 8601, UTC), for people reading the registry.

Precedence, per field: the tag when set (and pinned to the current challenger) > the service's settings
(``VOICELOOP_SHADOW``, ``VOICELOOP_CANARY_SHARE``) > off.

The second half scores a release step from the catalog: :func:`live_records` (per-utterance records for
:func:`asr.gate.compare` — paired for shadow, unpaired for canary), :func:`live_stats` (traffic, p95
latency, error share, agreement) and :func:`live_gate` (the verdict: ``wait`` | ``pass`` | ``fail``).
MLflow is imported only by the registry functions; it must be configured first (``asr.registry.configure``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from asr.gate import GateConfig, GateDecision, Scored, compare, scored
from asr.text import get_language_pack
from collection.models import Label, ProductionUtterance, Recording, ShadowResult, aware, utcnow
from monitoring.slices import SLICE_KEYS, UNKNOWN
from monitoring.timerange import as_utc

TAG_PREFIX = "voiceloop.rollout."
SHADOW_TAG = TAG_PREFIX + "shadow"
CANARY_TAG = TAG_PREFIX + "canary_share"
CHALLENGER_TAG = TAG_PREFIX + "challenger"
UPDATED_TAG = TAG_PREFIX + "updated_at"
TAGS = (SHADOW_TAG, CANARY_TAG, CHALLENGER_TAG, UPDATED_TAG)

STAGES = ("shadow", "canary")
Stage = Literal["shadow", "canary"]
Verdict = Literal["wait", "pass", "fail"]
STREAM_CHANNEL = "ws"  # its latency_ms is end of speech → final, not a whole-utterance decode


# -- the rollout state ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutState:
    """How serving uses ``@challenger``: ``shadow`` (decode a copy of every request, store the result) and
    ``canary_share`` (the share of requests, in [0, 1], it answers). ``challenger``: the version this state
    was set for (None: any challenger — the settings' defaults are not pinned)."""

    shadow: bool = False
    canary_share: float = 0.0
    challenger: str | None = None

    def __post_init__(self) -> None:
        _check_state(self.shadow, self.canary_share)

    @property
    def uses_challenger(self) -> bool:
        return self.shadow or self.canary_share > 0

    def for_challenger(self, version: str | None, defaults: RolloutState) -> RolloutState:
        """This state when ``@challenger`` is the version it was set for (or it is not pinned), else
        ``defaults``: a new challenger never inherits another one's canary share."""
        if self.challenger is None or self.challenger == version:
            return self
        return defaults


def _check_state(shadow: object, canary_share: object) -> None:
    if not isinstance(shadow, bool):
        raise ValueError(f"shadow must be True or False, got {shadow!r}")
    if isinstance(canary_share, bool) or not isinstance(canary_share, int | float):
        raise ValueError(f"canary_share must be a number within [0, 1], got {canary_share!r}")
    if math.isnan(canary_share) or not 0.0 <= canary_share <= 1.0:
        raise ValueError(f"canary_share must be within [0, 1] (0.2 = 20 % of requests), got {canary_share}")


def _client():  # noqa: ANN202 - mlflow's client; imported here so that serving a local file needs no MLflow
    from mlflow import MlflowClient

    return MlflowClient()


def _registered_tags(model_name: str) -> dict[str, str] | None:
    """The registered model's tags, or None when there is no such registered model."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(_client().get_registered_model(model_name).tags)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _require_model(model_name: str) -> None:
    if not model_name:
        raise ValueError("model_name must not be empty")
    if _registered_tags(model_name) is None:
        raise ValueError(f"no registered model {model_name!r} in the registry (register a version first: "
                         f"voiceloop register)")


def set_rollout(model_name: str, *, shadow: bool, canary_share: float,
                challenger: str | int | None = None) -> RolloutState:
    """Write the rollout state for ``model_name``'s challenger; serving follows on its next poll.

    ``challenger``: the version the state is for; by default the one ``@challenger`` points at now.
    Turning shadow or a canary on needs a challenger.

    Raises:
        ValueError: ``shadow`` not a bool, ``canary_share`` outside [0, 1], no such registered model, or
            shadow/canary asked for while ``@challenger`` is unset.
    """
    from asr.registry import alias_version

    _check_state(shadow, canary_share)
    _require_model(model_name)
    version = str(challenger) if challenger is not None else alias_version(model_name, "challenger")
    if version is None and (shadow or canary_share > 0):
        raise ValueError(f"{model_name}@challenger is not set: point it at a version before shadowing or a "
                         f"canary (voiceloop register --alias challenger)")
    state = RolloutState(shadow, float(canary_share), version)
    client = _client()
    client.set_registered_model_tag(model_name, SHADOW_TAG, "true" if shadow else "false")
    client.set_registered_model_tag(model_name, CANARY_TAG, repr(float(canary_share)))
    if version is None:
        _delete_tags(model_name, (CHALLENGER_TAG,))
    else:
        client.set_registered_model_tag(model_name, CHALLENGER_TAG, version)
    client.set_registered_model_tag(model_name, UPDATED_TAG, utcnow().isoformat(timespec="seconds"))
    return state


def rollout_state(model_name: str, defaults: RolloutState = RolloutState()) -> RolloutState:
    """The rollout state in the registry; each unset tag (or an unknown model) reads as ``defaults``.

    Raises:
        ValueError: a tag holds something set_rollout would not write (named in the message).
    """
    tags = _registered_tags(model_name) or {}
    shadow, share = defaults.shadow, defaults.canary_share
    if SHADOW_TAG in tags:
        text = tags[SHADOW_TAG].strip().lower()
        if text not in ("true", "false"):
            raise ValueError(f"registered model {model_name!r}: tag {SHADOW_TAG}={tags[SHADOW_TAG]!r}; "
                             f"expected 'true' or 'false'")
        shadow = text == "true"
    if CANARY_TAG in tags:
        try:
            share = float(tags[CANARY_TAG])
            _check_state(shadow, share)
        except ValueError as e:
            raise ValueError(f"registered model {model_name!r}: tag {CANARY_TAG}={tags[CANARY_TAG]!r}; expected "
                             f"a number within [0, 1]") from e
    pinned = tags.get(CHALLENGER_TAG) if (SHADOW_TAG in tags or CANARY_TAG in tags) else None
    return RolloutState(shadow, share, pinned or None)


def _delete_tags(model_name: str, keys: Iterable[str]) -> None:
    client = _client()
    present = _registered_tags(model_name) or {}
    for key in keys:
        if key in present:
            client.delete_registered_model_tag(model_name, key)


def clear_rollout(model_name: str) -> None:
    """Remove the rollout tags: serving falls back to its settings. Clearing twice is harmless.

    Raises:
        ValueError: no such registered model.
    """
    _require_model(model_name)
    _delete_tags(model_name, TAGS)


# -- live comparison --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Window:
    stage: Stage
    champion: str
    challenger: str
    since: datetime
    until: datetime


def _window(champion_version: str, challenger_version: str, since: datetime, until: datetime,
            stage: str) -> _Window:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    if not champion_version or not challenger_version:
        raise ValueError("champion_version and challenger_version are the versions serving records "
                         "('<model name>/<version>', as in production_utterances.model_version)")
    if champion_version == challenger_version:
        raise ValueError(f"champion and challenger are the same version ({champion_version}): nothing to compare")
    since, until = as_utc(since), as_utc(until)
    if since >= until:
        raise ValueError(f"empty time range: since {since.isoformat()} is not before until {until.isoformat()}")
    return _Window(stage, champion_version, challenger_version, since, until)  # type: ignore[arg-type]


def _slices(row: Any) -> dict[str, str]:
    return {key: getattr(row, key) or UNKNOWN for key in SLICE_KEYS}


def _reference_query(window: _Window, versions: Sequence[str]):  # noqa: ANN202 - a Select
    """Production utterances of the window served by ``versions`` whose kept audio has a reviewed label."""
    pu, lb, rec = ProductionUtterance, Label, Recording
    return (select(pu.request_id, pu.model_version, pu.hypothesis, pu.dialect, pu.age_band, pu.environment,
                   pu.device_type, lb.text.label("reference"), lb.reviewed_at, rec.language)
            .join(lb, and_(lb.recording_id == pu.recording_id, lb.status == "reviewed", lb.text.is_not(None)))
            .join(rec, rec.id == pu.recording_id)
            .where(pu.created_at >= window.since, pu.created_at < window.until,
                   pu.model_version.in_(list(versions))))


def _newest_label(rows: Iterable[Any]) -> dict[str, Any]:
    """One row per request: a recording reviewed more than once counts with its newest review (as drift)."""
    newest: dict[str, Any] = {}
    for r in rows:
        seen = newest.get(r.request_id)
        if seen is None or (r.reviewed_at is not None
                            and (seen.reviewed_at is None or aware(r.reviewed_at) > aware(seen.reviewed_at))):
            newest[r.request_id] = r
    return newest


def _normalizer() -> Callable[[str, str], str]:
    """``normalize(text, language)`` with the language pack's normaliser (no model loaded), cached."""
    packs: dict[str, Callable[[str], str]] = {}

    def normalize(text: str, language: str) -> str:
        if language not in packs:
            packs[language] = get_language_pack(language).normalize
        return packs[language](text)

    return normalize


def live_records(session: Session, champion_version: str, challenger_version: str, *, since: datetime,
                 until: datetime, stage: Stage) -> tuple[list[Scored], list[Scored]]:
    """(champion, challenger) per-utterance records for :func:`asr.gate.compare` from production traffic in
    ``[since, until)``. Versions as serving records them (``"voiceloop-asr/3"``).

    - ``shadow``: requests the champion answered that the challenger shadowed — the same audio, so both
      lists hold the same ids in the same order (paired). A failed shadow (no hypothesis) is left out here
      and counted by :func:`live_stats`.
    - ``canary``: requests each version answered (different requests: unpaired).

    Only requests whose kept recording has a reviewed label count (the reference); reference and
    hypotheses are normalised by the recording's language pack. Slices: the request's dialect, age band,
    environment and device type (missing → ``unknown``). A request without a stored hypothesis (no consent
    for the text) is left out.
    """
    window = _window(champion_version, challenger_version, since, until, stage)
    normalize = _normalizer()
    champion: list[Scored] = []
    challenger: list[Scored] = []
    if window.stage == "shadow":
        sr = ShadowResult
        query = (_reference_query(window, [window.champion]).add_columns(sr.hypothesis.label("shadow_hypothesis"))
                 .join(sr, and_(sr.request_id == ProductionUtterance.request_id,
                                sr.model_version == window.challenger))
                 .where(ProductionUtterance.hypothesis.is_not(None), sr.hypothesis.is_not(None)))
        rows = _newest_label(session.execute(query))
        ids = sorted(rows)
        refs = [normalize(rows[i].reference, rows[i].language) for i in ids]
        slices = [_slices(rows[i]) for i in ids]
        champion = scored(ids, refs, [normalize(rows[i].hypothesis, rows[i].language) for i in ids], slices)
        challenger = scored(ids, refs, [normalize(rows[i].shadow_hypothesis, rows[i].language) for i in ids], slices)
        return champion, challenger
    query = _reference_query(window, [window.champion, window.challenger]).where(
        ProductionUtterance.hypothesis.is_not(None))
    rows = _newest_label(session.execute(query))
    for i in sorted(rows):
        r = rows[i]
        out = champion if r.model_version == window.champion else challenger
        out.extend(scored([i], [normalize(r.reference, r.language)], [normalize(r.hypothesis, r.language)],
                          [_slices(r)]))
    return champion, challenger


@dataclass(frozen=True)
class VersionStats:
    """One model's live numbers in a window: ``utterances`` it decoded (served, or shadowed), ``errors``
    among them (decodes recorded without a result), ``p95_latency_ms`` over ``timed`` of them (None without
    timings)."""

    version: str
    utterances: int
    errors: int
    p95_latency_ms: float | None
    timed: int = 0

    @property
    def error_share(self) -> float:
        return self.errors / self.utterances if self.utterances else 0.0


@dataclass(frozen=True)
class LiveStats:
    """Both models' numbers for one release step; ``agreement``: the share of shadowed requests where both
    said the same (spaces ignored; shadow only, None without pairs), over ``compared`` requests."""

    stage: Stage
    champion: VersionStats
    challenger: VersionStats
    agreement: float | None = None
    compared: int = 0


def _p95(values: Sequence[float | None]) -> tuple[float | None, int]:
    """(p95, how many values it is over): None and 0 without values."""
    vals = [v for v in values if v is not None]
    return (round(float(np.percentile(vals, 95)), 2) if vals else None), len(vals)


def _same(a: str, b: str) -> bool:
    return a.replace(" ", "") == b.replace(" ", "")


def live_stats(session: Session, champion_version: str, challenger_version: str, *, since: datetime,
               until: datetime, stage: Stage) -> LiveStats:
    """Traffic, p95 latency and error share per version in ``[since, until)``, and (shadow) agreement.

    What counts as an error is what the catalog records as a decode without a result: a shadow result or a
    production utterance without a confidence (the hypothesis alone cannot tell: it is also empty when the
    device has no consent for its text). Latency: ``canary`` compares each
    version's production ``latency_ms``; ``shadow`` compares, over the requests the challenger shadowed,
    the champion's production ``latency_ms`` with the shadow decode's — WebSocket requests left out, since
    their ``latency_ms`` is end of speech → final of a streaming decode, not a whole-utterance decode.
    """
    window = _window(champion_version, challenger_version, since, until, stage)
    pu = ProductionUtterance
    in_window = (pu.created_at >= window.since, pu.created_at < window.until)
    if window.stage == "canary":
        per_version = {}
        for version in (window.champion, window.challenger):
            rows = session.execute(select(pu.latency_ms, pu.confidence)
                                   .where(*in_window, pu.model_version == version)).all()
            per_version[version] = VersionStats(version, len(rows), sum(r.confidence is None for r in rows),
                                                *_p95([r.latency_ms for r in rows]))
        return LiveStats("canary", per_version[window.champion], per_version[window.challenger])

    sr = ShadowResult
    served = session.execute(select(func.count(), func.count().filter(pu.confidence.is_(None)))
                             .where(*in_window, pu.model_version == window.champion)).one()
    rows = session.execute(
        select(pu.latency_ms, pu.channel, pu.hypothesis, sr.latency_ms.label("shadow_latency_ms"),
               sr.hypothesis.label("shadow_hypothesis"), sr.confidence.label("shadow_confidence"))
        .join(sr, and_(sr.request_id == pu.request_id, sr.model_version == window.challenger))
        .where(*in_window, pu.model_version == window.champion)).all()
    timed = [r for r in rows if r.channel != STREAM_CHANNEL]
    both = [r for r in rows if r.hypothesis is not None and r.shadow_hypothesis is not None]
    agreement = round(sum(_same(r.hypothesis, r.shadow_hypothesis) for r in both) / len(both), 4) if both else None
    return LiveStats(
        "shadow",
        VersionStats(window.champion, served[0], served[1], *_p95([r.latency_ms for r in timed])),
        VersionStats(window.challenger, len(rows), sum(r.shadow_confidence is None for r in rows),
                     *_p95([r.shadow_latency_ms for r in timed])),
        agreement, len(both))


@dataclass(frozen=True)
class LiveGate:
    """The verdict on one release step. ``wait``: not enough traffic or labels yet (``decision`` None,
    ``reasons`` says what is missing); ``pass``: the gate promotes and the error rule holds; ``fail``:
    ``reasons`` lists every rule that failed, with the numbers."""

    stage: Stage
    verdict: Verdict
    decision: GateDecision | None
    stats: LiveStats
    labeled: int  # scored utterances on the smaller side
    reasons: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return f"{self.stage}: {self.verdict}" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self, prefix: str | None = None) -> dict[str, float]:
        """Flat numbers for MLflow (``rollout.shadow.pass``, ``rollout.shadow.error_share.challenger``, …)."""
        prefix = prefix or f"rollout.{self.stage}"
        out = {f"{prefix}.pass": float(self.verdict == "pass"), f"{prefix}.wait": float(self.verdict == "wait"),
               f"{prefix}.labeled": float(self.labeled)}
        for side in ("champion", "challenger"):
            s: VersionStats = getattr(self.stats, side)
            out[f"{prefix}.utterances.{side}"] = float(s.utterances)
            out[f"{prefix}.error_share.{side}"] = s.error_share
            if s.p95_latency_ms is not None:
                out[f"{prefix}.latency_p95_ms.{side}"] = s.p95_latency_ms
        if self.stats.agreement is not None:
            out[f"{prefix}.agreement"] = self.stats.agreement
        if self.decision is not None:
            out.update(self.decision.metrics(prefix))
        return out


def error_rule(stats: LiveStats, margin: float) -> str | None:
    """The error-rate budget: the challenger's error share may exceed the champion's by at most ``margin``
    (a fraction: 0.005 = half a point). Returns the failure in words, or None when it holds."""
    champion, challenger = stats.champion.error_share, stats.challenger.error_share
    if challenger <= champion + margin:
        return None
    return (f"error rate {challenger:.2%} ({stats.challenger.errors}/{stats.challenger.utterances}) over the "
            f"budget {champion + margin:.2%} (champion {champion:.2%} + {margin:.2%})")


def live_gate(session: Session, champion_version: str, challenger_version: str, *, stage: Stage,
              since: datetime, until: datetime, config: GateConfig = GateConfig(), min_utterances: int = 200,
              min_labeled: int = 50, error_margin: float = 0.005) -> LiveGate:
    """Judge one release step on live traffic with the release gate (:func:`asr.gate.compare`: per-slice
    CER with bootstrap intervals, p95 latency budget — judged once each side has ``config.min_latency_n``
    timings) plus the error-rate rule (:func:`error_rule`).

    ``wait`` until each model decoded ``min_utterances`` requests in the window and ``min_labeled`` of them
    (on the smaller side) have reviewed transcripts; then ``pass`` or ``fail``.

    Raises:
        ValueError: unknown stage, empty range, same version twice, or a negative threshold.
    """
    if min_utterances < 1 or min_labeled < 1 or error_margin < 0:
        raise ValueError(f"min_utterances and min_labeled must be >= 1 and error_margin >= 0 "
                         f"(got {min_utterances}, {min_labeled}, {error_margin})")
    stats = live_stats(session, champion_version, challenger_version, since=since, until=until, stage=stage)
    champion, challenger = live_records(session, champion_version, challenger_version, since=since, until=until,
                                        stage=stage)
    labeled = min(len(champion), len(challenger))
    waiting = [f"{s.version} decoded {s.utterances} of the {min_utterances} requests needed"
               for s in (stats.champion, stats.challenger) if s.utterances < min_utterances]
    if labeled < min_labeled:
        waiting.append(f"{labeled} labeled requests on the smaller side, {min_labeled} needed")
    if waiting:
        return LiveGate(stats.stage, "wait", None, stats, labeled, waiting)
    latency = None
    if stats.champion.p95_latency_ms is not None and stats.challenger.p95_latency_ms is not None:
        latency = (stats.champion.p95_latency_ms, stats.challenger.p95_latency_ms)
    decision = compare(champion, challenger, config, latency_ms=latency,
                       latency_n=min(stats.champion.timed, stats.challenger.timed))
    reasons = list(decision.reasons)
    if (error := error_rule(stats, error_margin)) is not None:
        reasons.append(error)
    return LiveGate(stats.stage, "fail" if reasons else "pass", decision, stats, labeled, reasons)


__all__ = ["CANARY_TAG", "CHALLENGER_TAG", "SHADOW_TAG", "STAGES", "TAGS", "UPDATED_TAG", "LiveGate", "LiveStats",
           "RolloutState", "VersionStats", "clear_rollout", "error_rule", "live_gate", "live_records", "live_stats",
           "rollout_state", "set_rollout"]
