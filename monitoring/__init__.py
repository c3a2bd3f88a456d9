"""Monitoring: Prometheus metrics (``monitoring.metrics``), VOC intake and triage (``monitoring.voc``,
``monitoring.voc_queries``), drift per slice and alerts (``monitoring.drift``, ``.alerts``), the ops
dashboard's queries (``monitoring.dashboard``) and the HTML report (``monitoring.report``). Every query
takes a :class:`TimeRange` or checks its range the same way and raises :class:`MonitoringError`."""

from monitoring.timerange import MonitoringError, TimeRange, check_range
from monitoring.voc import (
    CATEGORIES,
    CAUSES,
    STATUSES,
    TRANSITIONS,
    TriageConfig,
    intake_device_feedback,
    log_complaint,
    send_to_labeling,
    set_status,
    sync_labeled,
    triage,
)
from monitoring.voc_queries import (
    FeedbackFilter,
    FeedbackPage,
    VocRate,
    char_diff,
    feedback_detail,
    linked_audio,
    list_feedback,
    voc_rate,
)

__all__ = [
    "CATEGORIES", "CAUSES", "STATUSES", "TRANSITIONS", "FeedbackFilter", "FeedbackPage", "MonitoringError",
    "TimeRange", "TriageConfig", "VocRate", "char_diff", "check_range", "feedback_detail", "intake_device_feedback",
    "linked_audio", "list_feedback", "log_complaint", "send_to_labeling", "set_status", "sync_labeled", "triage",
    "voc_rate",
]  # fmt: skip

# -- drift per slice, alerts, catalog metrics (monitoring.drift, .alerts, .baseline, .reference, .catalog_metrics)
from monitoring.alerts import KINDS as ALERT_KINDS  # noqa: E402
from monitoring.alerts import AlertConfig, AlertSummary, evaluate_alerts, open_alerts  # noqa: E402
from monitoring.baseline import Baseline, MlflowBaselines  # noqa: E402
from monitoring.catalog_metrics import CatalogCollector, install_catalog_metrics  # noqa: E402
from monitoring.drift import DriftConfig, WindowResult, align, compute_window, window_ends  # noqa: E402
from monitoring.reference import ReferenceProfile, build_reference, champion_reference  # noqa: E402

__all__ += [
    "ALERT_KINDS", "AlertConfig", "AlertSummary", "Baseline", "CatalogCollector", "DriftConfig", "MlflowBaselines",
    "ReferenceProfile", "WindowResult", "align", "build_reference", "champion_reference", "compute_window",
    "evaluate_alerts", "install_catalog_metrics", "open_alerts", "window_ends",
]  # fmt: skip

# -- the ops dashboard and the report (monitoring.dashboard, .report)
from monitoring.dashboard import Drift, Overview, data_status, drift, jsonable, overview  # noqa: E402
from monitoring.report import build_report, write_report  # noqa: E402

__all__ += ["Drift", "Overview", "build_report", "data_status", "drift", "jsonable", "overview", "write_report"]
