"""What every DAG in dags/ shares: the Assets that chain them, default task arguments (retries,
timeouts, a failure callback that records an alert), and the settings a task builds.

Imported at DAG-parse time by the scheduler every few seconds, so it imports only the standard library
and ``airflow.sdk``; everything heavy is imported inside the task callables (voiceloop.loop).

Data-aware scheduling::

    consolidate_labels ──(DATASET)──┐
    monitor_drift ──(DRIFT_ALERT)───┼──> retrain ──(CHALLENGER)──> deploy
    weekly ─────────────────────────┘
    curate_feedback ── recollect-<day>.yaml ──> collect_and_label (reads <data dir>/plans)
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset

log = logging.getLogger(__name__)

# URIs name what the event means; the data itself lives in the catalog and the data dir.
DATASET = Asset(name="voiceloop_dataset", uri="voiceloop://datasets/main", group="voiceloop")  # a new version
DRIFT_ALERT = Asset(name="voiceloop_drift_alert", uri="voiceloop://alerts/retrain",
                    group="voiceloop")  # alerts opened that call for retraining
CHALLENGER = Asset(name="voiceloop_challenger", uri="voiceloop://models/challenger",
                   group="voiceloop")  # a model passed the gate and is @challenger

START = datetime(2026, 1, 1)  # no catch-up: every DAG sets catchup=False
TAGS = ["voiceloop"]


def settings() -> Any:  # noqa: ANN401 - voiceloop.settings.Settings (imported late: heavy)
    """The task's settings: VOICELOOP_* variables of the Airflow worker (``voiceloop stack up --airflow``
    passes the data dir and the rest through)."""
    from voiceloop.settings import Settings

    return Settings()


def record_failure(context: dict[str, Any]) -> None:
    """``on_failure_callback``: a task that failed for good (retries spent) opens a ``pipeline_failure``
    alert in the catalog, so the ops dashboard and /metrics show it next to the model's alerts."""
    try:
        from collection.db import session_scope
        from monitoring.alerts import record_pipeline_failure

        ti = context.get("task_instance") or context.get("ti")
        dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "unknown")
        task_id = getattr(ti, "task_id", "unknown")
        when = context.get("logical_date") or context.get("data_interval_end") or datetime.now().astimezone()
        error = context.get("exception")
        with session_scope(settings().catalog) as session:
            record_pipeline_failure(session, dag_id=dag_id, task_id=task_id, when=when,
                                    detail={"run_id": str(context.get("run_id", "")),
                                            "try_number": getattr(ti, "try_number", None),
                                            "error": f"{type(error).__name__}: {error}"[:2000] if error else None})
    except Exception:  # the callback must never hide the task's own failure
        log.exception("could not record the failure of %s as an alert", context.get("task_instance"))


def default_args(*, retries: int = 2, timeout: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    """Retries with a short backoff, a hard timeout per try, and the failure alert."""
    return {"owner": "voiceloop", "retries": retries, "retry_delay": timedelta(seconds=int(
            os.environ.get("VOICELOOP_DAG_RETRY_DELAY_S", "60"))), "execution_timeout": timeout,
            "on_failure_callback": record_failure}


def timed(cron: str) -> str | None:
    """A DAG's time schedule, or None with ``VOICELOOP_DAG_SCHEDULES=off`` (read at parse time): the loop
    demo runs its DAGs by hand and by Asset events only — unpausing a scheduled DAG would also start a run
    for its latest tick, in the middle of the demo's own runs."""
    return None if os.environ.get("VOICELOOP_DAG_SCHEDULES", "on").lower() in ("off", "0", "false") else cron


def poke_interval() -> int:
    """Seconds between a deploy sensor's looks at the traffic (``VOICELOOP_ROLLOUT_POKE_S``, the setting
    ``rollout_poke_s``): read from the environment at parse time, where Settings would be too heavy."""
    return max(1, int(os.environ.get("VOICELOOP_ROLLOUT_POKE_S", "300")))


def run_key(context: dict[str, Any]) -> str:
    """``<dag_id>/<logical date>`` (``<dag_id>/<run id>`` for a run without one): names what a task writes,
    so a retry or a re-run for the same logical date writes the same rows."""
    when = context.get("logical_date")
    return f"{context['dag'].dag_id}/{when.isoformat() if when is not None else context['run_id']}"
