"""Alerts over a computed drift window: which slices are out of bounds, stored once, resolved when clear.

    summary = evaluate_alerts(catalog_url, window_end, 3600, AlertConfig.from_settings(settings))
    open_alerts(session, kinds=["wer_regression"], since=last_training)   # what the retraining DAG asks

Rules (each a function over the window's ``SliceMetric`` rows, chosen from :data:`RULES`):

- ``wer_regression`` (metric wer or cer): online rate above the offline baseline by more than
  ``wer_margin`` *and* the bootstrap interval's lower bound above the baseline, on at least
  ``min_labeled`` transcribed utterances — so a handful of unlucky utterances does not page anyone;
- ``input_drift`` (metric psi_<feature>): PSI at or above ``psi_threshold`` on ``min_traffic`` utterances;
- ``confidence_drop``: mean confidence below the previous windows' by ``confidence_drop`` or more;
- ``voc_spike``: complaints per 1,000 utterances at ``voc_spike_factor`` × the previous windows' rate
  (or above ``voc_per_1k_max`` with no history), with at least ``voc_min_count`` complaints;
- ``no_traffic``: no utterances in a slice that averaged ``no_traffic_min_expected`` per window.

An alert is an incident: the row's ``window_end`` is the first window that fired; while later windows keep
firing the same (kind, slice, metric, model version) it is updated (``detail.last_window_end``,
``detail.windows``), not duplicated; the first window that evaluates clear resolves it (``resolved_at`` =
that window's end). A window without enough data to decide leaves an open alert open. Evaluate windows
oldest first; re-evaluating a window changes nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from collection.models import Alert, SliceMetric, aware

from .drift import DAY, catalog_session
from .reference import FEATURES

log = logging.getLogger(__name__)

KINDS = ("wer_regression", "input_drift", "confidence_drop", "voc_spike", "no_traffic")
PIPELINE_FAILURE = "pipeline_failure"  # a DAG task that failed for good (voiceloop.orchestration.record_failure)


@dataclass(frozen=True)
class AlertConfig:
    """Margins and thresholds (rates as fractions: 0.02 = 2 WER points)."""

    wer_margin: float = 0.02
    min_labeled: int = 30
    psi_threshold: float = 0.2
    min_traffic: int = 200
    confidence_drop: float = 0.05
    voc_spike_factor: float = 2.0
    voc_min_count: int = 5
    voc_per_1k_max: float = 20.0
    no_traffic_min_expected: float = 50.0
    labeled_window_s: int = 7 * DAY

    @classmethod
    def from_settings(cls, settings: object) -> AlertConfig:
        """From ``voiceloop.settings.Settings`` (fields ``alert_<name>``, plus ``drift_labeled_window_s``)."""
        values = {f.name: getattr(settings, f"alert_{f.name}") for f in fields(cls)
                  if hasattr(settings, f"alert_{f.name}")}
        if hasattr(settings, "drift_labeled_window_s"):
            values["labeled_window_s"] = settings.drift_labeled_window_s
        return cls(**values)


@dataclass(frozen=True)
class Firing:
    kind: str
    slice_key: str
    slice_value: str
    metric: str
    model_version: str
    value: float | None
    baseline: float | None
    threshold: float | None
    detail: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return self.kind, self.slice_key, self.slice_value, self.metric, self.model_version


Rows = dict[tuple[str, str, str], dict[str, SliceMetric]]  # (slice_key, slice_value, version) -> metric -> row
# A rule returns what fires and the keys it could decide on (only those may resolve).
Rule = Callable[[Rows, Rows, AlertConfig], tuple[list[Firing], set[tuple[str, str, str, str, str]]]]


def _wer_regression(_traffic: Rows, labeled: Rows, cfg: AlertConfig):  # noqa: ANN202 - a Rule
    firing, decided = [], set()
    for (sk, sv, ver), metrics in labeled.items():
        for metric in ("wer", "cer"):
            row, base = metrics.get(metric), metrics.get(f"{metric}_baseline")
            if row is None or base is None or row.value is None or base.value is None or row.n < cfg.min_labeled:
                continue
            decided.add(("wer_regression", sk, sv, metric, ver))
            ci_low = row.ci_low if row.ci_low is not None else row.value
            if row.value - base.value > cfg.wer_margin and ci_low > base.value:
                firing.append(Firing("wer_regression", sk, sv, metric, ver, row.value, base.value,
                                     base.value + cfg.wer_margin,
                                     {"n": row.n, "ci": [row.ci_low, row.ci_high], "baseline_n": base.n}))
    return firing, decided


def _input_drift(traffic: Rows, _labeled: Rows, cfg: AlertConfig):  # noqa: ANN202 - a Rule
    firing, decided = [], set()
    for (sk, sv, ver), metrics in traffic.items():
        if ver:  # the inputs do not depend on the model that answered: overall only
            continue
        for name in FEATURES:
            row = metrics.get(f"psi_{name}")
            if row is None or row.value is None or row.n < cfg.min_traffic:
                continue
            decided.add(("input_drift", sk, sv, row.metric, ver))
            if row.value >= cfg.psi_threshold:
                ks = metrics.get(f"ks_{name}")
                firing.append(Firing("input_drift", sk, sv, row.metric, ver, row.value, 0.0, cfg.psi_threshold,
                                     {"n": row.n, "ks": ks.value if ks is not None else None}))
    return firing, decided


def _confidence_drop(traffic: Rows, _labeled: Rows, cfg: AlertConfig):  # noqa: ANN202 - a Rule
    firing, decided = [], set()
    for (sk, sv, ver), metrics in traffic.items():
        drift, ref = metrics.get("confidence_drift"), metrics.get("confidence_ref")
        if drift is None or ref is None or drift.value is None or drift.n < cfg.min_traffic:
            continue
        decided.add(("confidence_drop", sk, sv, "confidence_mean", ver))
        if drift.value <= -cfg.confidence_drop:
            firing.append(Firing("confidence_drop", sk, sv, "confidence_mean", ver, ref.value + drift.value,
                                 ref.value, ref.value - cfg.confidence_drop, {"n": drift.n}))
    return firing, decided


def _voc_spike(traffic: Rows, _labeled: Rows, cfg: AlertConfig):  # noqa: ANN202 - a Rule
    firing, decided = [], set()
    for (sk, sv, ver), metrics in traffic.items():
        row = metrics.get("voc_per_1k")
        if row is None or row.value is None:
            continue
        decided.add(("voc_spike", sk, sv, "voc_per_1k", ver))
        ref = metrics.get("voc_per_1k_ref")
        reference = ref.value if ref is not None and ref.value else None
        threshold = cfg.voc_spike_factor * reference if reference else cfg.voc_per_1k_max
        if row.n >= cfg.voc_min_count and row.value >= threshold:
            firing.append(Firing("voc_spike", sk, sv, "voc_per_1k", ver, row.value, reference, threshold,
                                 {"complaints": row.n}))
    return firing, decided


def _no_traffic(traffic: Rows, _labeled: Rows, cfg: AlertConfig):  # noqa: ANN202 - a Rule
    firing, decided = [], set()
    for (sk, sv, ver), metrics in traffic.items():
        row, ref = metrics.get("utterances"), metrics.get("utterances_ref")
        if ver or row is None or ref is None or ref.value is None or ref.value < cfg.no_traffic_min_expected:
            continue
        decided.add(("no_traffic", sk, sv, "utterances", ver))
        if not row.value:
            firing.append(Firing("no_traffic", sk, sv, "utterances", ver, 0.0, ref.value, 0.0,
                                 {"expected_per_window": ref.value}))
    return firing, decided


RULES: dict[str, Rule] = {"wer_regression": _wer_regression, "input_drift": _input_drift,
                          "confidence_drop": _confidence_drop, "voc_spike": _voc_spike, "no_traffic": _no_traffic}


@dataclass(frozen=True)
class AlertSummary:
    window_end: datetime
    opened: list[Firing]
    continuing: list[Firing]
    resolved: list[str]  # alert ids


def _index(rows: Iterable[SliceMetric]) -> Rows:
    out: Rows = defaultdict(dict)
    for r in rows:
        out[(r.slice_key, r.slice_value, r.model_version)][r.metric] = r
    return out


def evaluate_alerts(session_or_url: Session | sessionmaker[Session] | str, window_end: datetime, window_s: int,
                    config: AlertConfig | None = None, kinds: Sequence[str] = KINDS) -> AlertSummary:
    """Run the rules over the window's rows (computed by ``compute_window`` first) and store the result."""
    config = config or AlertConfig()
    unknown = set(kinds) - set(RULES)
    if unknown:
        raise ValueError(f"unknown alert kinds {sorted(unknown)}; valid: {', '.join(RULES)}")
    end = aware(window_end)
    with catalog_session(session_or_url) as session:
        rows = session.scalars(select(SliceMetric).where(
            SliceMetric.window_end == end, SliceMetric.window_s.in_((window_s, config.labeled_window_s)))).all()
        traffic = _index(r for r in rows if r.window_s == window_s)
        labeled = _index(r for r in rows if r.window_s == config.labeled_window_s)
        firing: list[Firing] = []
        decided: set = set()
        for kind in kinds:
            f, d = RULES[kind](traffic, labeled, config)
            firing += f
            decided |= d
        summary = _store(session, end, window_s, firing, decided, kinds)
        session.flush()
    log.debug("alerts for the window ending %s: %d opened, %d still firing, %d resolved", end.isoformat(),
             len(summary.opened), len(summary.continuing), len(summary.resolved))
    return summary


def _store(session: Session, end: datetime, window_s: int, firing: list[Firing], decided: set,
           kinds: Sequence[str]) -> AlertSummary:
    # Incidents that cover this window: started at or before it and not resolved by then.
    incidents: dict[tuple, Alert] = {}
    for alert in session.scalars(select(Alert).where(
            Alert.kind.in_(kinds), Alert.window_end <= end,
            or_(Alert.status == "open", Alert.resolved_at > end)).order_by(Alert.window_end)):
        if (alert.detail or {}).get("window_s") == window_s:
            incidents[_key(alert)] = alert
    opened, continuing = [], []
    for fire in firing:
        alert = incidents.pop(fire.key, None)
        if alert is None:
            alert = session.scalar(select(Alert).where(
                Alert.kind == fire.kind, Alert.slice_key == fire.slice_key, Alert.slice_value == fire.slice_value,
                Alert.metric == fire.metric, Alert.model_version == fire.model_version, Alert.window_end == end))
        if alert is None:
            session.add(Alert(kind=fire.kind, slice_key=fire.slice_key, slice_value=fire.slice_value,
                              metric=fire.metric, model_version=fire.model_version, window_end=end,
                              value=fire.value, baseline=fire.baseline, threshold=fire.threshold, status="open",
                              detail={**fire.detail, "window_s": window_s, "last_window_end": end.isoformat(),
                                      "windows": 1}))
            opened.append(fire)
            continue
        continuing.append(fire)
        detail = dict(alert.detail or {})
        last = datetime.fromisoformat(detail.get("last_window_end", aware(alert.window_end).isoformat()))
        if end >= last:
            if end > last:
                detail["windows"] = int(detail.get("windows", 1)) + 1
            detail.update(fire.detail, window_s=window_s, last_window_end=end.isoformat())
            alert.value, alert.baseline, alert.threshold, alert.detail = (fire.value, fire.baseline,
                                                                          fire.threshold, detail)
        if aware(alert.window_end) == end and alert.status == "resolved":  # this very window, re-evaluated
            alert.status, alert.resolved_at = "open", None
    resolved = []
    for key, alert in incidents.items():
        if alert.status == "open" and key in decided:
            alert.status, alert.resolved_at = "resolved", end
            resolved.append(alert.id)
    return AlertSummary(end, opened, continuing, resolved)


def _key(alert: Alert) -> tuple[str, str, str, str, str]:
    return alert.kind, alert.slice_key, alert.slice_value, alert.metric, alert.model_version


def open_alerts(session_or_url: Session | sessionmaker[Session] | str, kinds: Sequence[str] | None = None,
                since: datetime | None = None, slice_key: str | None = None) -> list[Alert]:
    """Open alerts, newest first: of ``kinds`` (default all), first fired in a window ending at or after
    ``since``, on ``slice_key``. What the retraining DAG calls to decide whether to retrain."""
    if kinds is not None:
        unknown = set(kinds) - {*KINDS, PIPELINE_FAILURE}
        if unknown:
            raise ValueError(f"unknown alert kinds {sorted(unknown)}; valid: {', '.join((*KINDS, PIPELINE_FAILURE))}")
    query = select(Alert).where(Alert.status == "open")
    if kinds is not None:
        query = query.where(Alert.kind.in_(kinds))
    if since is not None:
        query = query.where(Alert.window_end >= aware(since))
    if slice_key is not None:
        query = query.where(Alert.slice_key == slice_key)
    with catalog_session(session_or_url) as session:
        return list(session.scalars(query.order_by(Alert.window_end.desc(), Alert.kind, Alert.slice_key,
                                                   Alert.slice_value)))


def record_pipeline_failure(session: Session, *, dag_id: str, task_id: str, when: datetime,
                            detail: dict | None = None) -> Alert:
    """Open (once) a ``pipeline_failure`` alert for a DAG task that failed for good at its logical time
    ``when``: slice ``dag``/<dag id>, metric <task id>. A second failure of the same task and logical
    date updates the row. The drift rules never resolve it; ops close it when the pipeline runs again."""
    end = aware(when)
    alert = session.scalar(select(Alert).where(
        Alert.kind == PIPELINE_FAILURE, Alert.slice_key == "dag", Alert.slice_value == dag_id[:64],
        Alert.metric == task_id[:32], Alert.model_version == "", Alert.window_end == end))
    if alert is None:
        alert = Alert(kind=PIPELINE_FAILURE, slice_key="dag", slice_value=dag_id[:64], metric=task_id[:32],
                      model_version="", window_end=end, status="open", detail={})
        session.add(alert)
    alert.status, alert.resolved_at = "open", None
    alert.detail = {**(alert.detail or {}), **(detail or {}), "task_id": task_id, "dag_id": dag_id}
    session.flush()
    return alert
