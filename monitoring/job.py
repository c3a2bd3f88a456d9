"""The drift job as the CLI (``voiceloop monitor drift``) and the ``monitor_drift`` DAG run it: compute one
window's slice metrics, then its alerts, with the champion's offline baselines and training-set input
reference read from MLflow once per job."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitoring.alerts import AlertConfig, AlertSummary, evaluate_alerts
from monitoring.drift import DriftConfig, WindowResult, compute_window


@dataclass
class DriftJob:
    catalog: Any  # a sessionmaker (collection.db.connect)
    baselines: Any = None  # monitoring.baseline.MlflowBaselines, or None: no WER baseline, no PSI
    reference: Any = None  # monitoring.reference.ReferenceProfile
    drift_config: DriftConfig | None = None
    alert_config: AlertConfig | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, baselines: bool = True) -> DriftJob:  # noqa: ANN401 - Settings
        """``baselines``: read the champion's offline evaluation and input reference from MLflow."""
        from collection.db import connect

        job = cls(connect(settings.catalog), drift_config=DriftConfig.from_settings(settings),
                  alert_config=AlertConfig.from_settings(settings))
        if baselines:
            from asr.registry import configure
            from monitoring.baseline import MlflowBaselines
            from monitoring.reference import champion_reference

            configure(settings.tracking_uri, settings.artifact_root)
            job.baselines = MlflowBaselines(settings.model_name, settings.drift_baseline_splits)
            job.reference = champion_reference(settings.model_name, settings.data_dir, settings.language)
        return job

    def run(self, window_end: datetime, window_s: int) -> tuple[WindowResult, AlertSummary]:
        """Compute (upsert) the window ending at ``window_end`` and evaluate its alerts. Idempotent."""
        result = compute_window(self.catalog, window_end, window_s, baselines=self.baselines,
                                reference=self.reference, config=self.drift_config)
        return result, evaluate_alerts(self.catalog, window_end, window_s, self.alert_config)
