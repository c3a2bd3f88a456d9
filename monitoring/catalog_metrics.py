"""Drift results and open alerts as Prometheus metrics, read from the catalog by every service that scrapes.

The drift job runs elsewhere (a CLI or DAG task, once per window), so its numbers cannot live in a
process-local counter. Instead each service (the API app, the Kafka worker's metrics server) registers
one :class:`CatalogCollector`: at scrape time it reads the newest ``SliceMetric`` rows of every window
length and the open ``Alert`` rows, cached for ``ttl_s`` seconds so a scrape every few seconds costs one
small query every 30 s. Every replica exports the same numbers: aggregate with ``max by (...)``.

Label values are bounded: slice keys and values come from closed vocabularies (the device profile),
model versions are registry versions; ``model_version="all"`` is every version together.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from collection.models import Alert, SliceMetric, aware

from .reference import FEATURES

log = logging.getLogger(__name__)

SLICE_LABELS = ("slice_key", "slice_value", "model_version")
# SliceMetric.metric -> (family, help); psi_*/ks_* add a ``feature`` label.
GAUGES: dict[str, tuple[str, str]] = {
    "wer": ("voiceloop_online_wer", "Online word error rate on human-transcribed production utterances"),
    "cer": ("voiceloop_online_cer", "Online character error rate on human-transcribed production utterances"),
    "wer_baseline": ("voiceloop_offline_wer_baseline", "The model version's offline WER on the same slice"),
    "cer_baseline": ("voiceloop_offline_cer_baseline", "The model version's offline CER on the same slice"),
    "utterances": ("voiceloop_drift_window_utterances", "Utterances in the newest drift window"),
    "confidence_mean": ("voiceloop_drift_confidence_mean", "Mean confidence in the newest drift window"),
    "confidence_drift": ("voiceloop_drift_confidence_change",
                         "Mean confidence minus that of the previous windows (negative: less sure)"),
    "out_of_grammar_share": ("voiceloop_drift_out_of_grammar_share", "Share of hypotheses that parse to no command"),
    "voc_per_1k": ("voiceloop_voc_per_1k_utterances", "Complaints per 1,000 utterances in the newest window"),
}
CI_GAUGES = {"wer": "voiceloop_online_wer", "cer": "voiceloop_online_cer"}  # + _ci_low / _ci_high
FEATURE_GAUGES = {"psi": ("voiceloop_input_psi", "Population stability index of an input feature vs training"),
                  "ks": ("voiceloop_input_ks", "Kolmogorov-Smirnov distance (at bin edges) vs training")}
LABELED_N = ("voiceloop_online_labeled_utterances", "Human-transcribed utterances behind the online WER")
WINDOW_END = ("voiceloop_drift_last_window_end_timestamp_seconds", "End of the newest computed drift window")
ALERTS = ("voiceloop_alerts_open", "Open monitoring alerts in the catalog",
          ("kind", "metric", "slice_key", "slice_value", "model_version"))
# Window lengths whose newest window ended this long before the newest of all are no longer exported (a job
# that stopped); the freshness gauge tells when the drift job itself stopped.
LOOKBACK = timedelta(days=3)


def _families() -> dict[str, GaugeMetricFamily]:
    fams = {name: GaugeMetricFamily(name, doc, labels=SLICE_LABELS) for name, doc in GAUGES.values()}
    for base in CI_GAUGES.values():
        for bound in ("low", "high"):
            fams[f"{base}_ci_{bound}"] = GaugeMetricFamily(f"{base}_ci_{bound}", f"{base}: 95 % bootstrap {bound}",
                                                           labels=SLICE_LABELS)
    for name, doc in FEATURE_GAUGES.values():
        fams[name] = GaugeMetricFamily(name, doc, labels=("feature", *SLICE_LABELS))
    fams[LABELED_N[0]] = GaugeMetricFamily(*LABELED_N, labels=SLICE_LABELS)
    fams[WINDOW_END[0]] = GaugeMetricFamily(*WINDOW_END)
    fams[ALERTS[0]] = GaugeMetricFamily(ALERTS[0], ALERTS[1], labels=ALERTS[2])
    return fams


def metric_names() -> list[str]:
    """Every family name this collector exports."""
    return sorted(_families())


def read_families(session: Session) -> list[GaugeMetricFamily]:
    """The newest drift numbers and the open alerts as gauge families (queries, no caching)."""
    fams = _families()
    sm = SliceMetric
    newest = session.scalar(select(func.max(sm.window_end)).where(sm.metric == "utterances"))
    if newest is None:
        latest = []
    else:
        fams[WINDOW_END[0]].add_metric([], aware(newest).timestamp())
        latest = session.execute(select(sm.window_s, func.max(sm.window_end))
                                 .where(sm.window_end >= newest - LOOKBACK).group_by(sm.window_s)).all()
    seen: set[tuple] = set()
    # Shorter windows first: when two window lengths carry the same metric, the fresher one is exported.
    for window_s, window_end in sorted(latest):
        for r in session.scalars(select(sm).where(sm.window_s == window_s, sm.window_end == window_end)):
            labels = [r.slice_key, r.slice_value, r.model_version or "all"]
            if r.value is None or (r.metric, *labels) in seen:
                continue
            seen.add((r.metric, *labels))
            kind, _, feature = r.metric.partition("_")
            if r.metric in GAUGES:
                fams[GAUGES[r.metric][0]].add_metric(labels, r.value)
            elif kind in FEATURE_GAUGES and feature in FEATURES:
                fams[FEATURE_GAUGES[kind][0]].add_metric([feature, *labels], r.value)
            if r.metric in CI_GAUGES:
                base = CI_GAUGES[r.metric]
                if r.ci_low is not None:
                    fams[f"{base}_ci_low"].add_metric(labels, r.ci_low)
                    fams[f"{base}_ci_high"].add_metric(labels, r.ci_high)
                if r.metric == "wer":
                    fams[LABELED_N[0]].add_metric(labels, r.n)
    counts = session.execute(select(Alert.kind, Alert.metric, Alert.slice_key, Alert.slice_value,
                                    Alert.model_version, func.count())
                             .where(Alert.status == "open")
                             .group_by(Alert.kind, Alert.metric, Alert.slice_key, Alert.slice_value,
                                       Alert.model_version)).all()
    for kind, metric, sk, sv, ver, n in counts:
        fams[ALERTS[0]].add_metric([kind, metric, sk, sv, ver or "all"], n)
    return list(fams.values())


class CatalogCollector(Collector):
    """A prometheus_client collector over the catalog (``catalog``: a session factory), cached ``ttl_s``."""

    def __init__(self, catalog: sessionmaker[Session], ttl_s: float = 30.0):
        self.catalog, self.ttl_s = catalog, ttl_s
        self._cached: list[GaugeMetricFamily] = list(_families().values())  # names, no samples, until a read
        self._at = float("-inf")
        self._lock = threading.Lock()

    def describe(self) -> list[GaugeMetricFamily]:
        # Names only: registering must not query the catalog.
        return list(_families().values())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                try:
                    with self.catalog() as session:
                        self._cached = read_families(session)
                except Exception as e:  # a scrape must answer even when the catalog does not
                    log.warning("catalog metrics not refreshed: %s: %s", type(e).__name__, e)
                self._at = time.monotonic()
            families = self._cached
        yield from families

    def invalidate(self) -> None:
        """Read the catalog again at the next scrape (tests, after a drift run in the same process)."""
        with self._lock:
            self._at = float("-inf")


_installed: dict[int, CatalogCollector] = {}
_install_lock = threading.Lock()


def install_catalog_metrics(catalog: sessionmaker[Session], ttl_s: float = 30.0,
                            registry: CollectorRegistry = REGISTRY) -> CatalogCollector:
    """Register the catalog collector in ``registry`` once per process; a later call (another app in the
    same process) points it at its catalog instead of registering a second one."""
    with _install_lock:
        collector = _installed.get(id(registry))
        if collector is None:
            collector = CatalogCollector(catalog, ttl_s)
            registry.register(collector)
            _installed[id(registry)] = collector
        else:
            collector.catalog, collector.ttl_s = catalog, ttl_s
            collector.invalidate()
        return collector
