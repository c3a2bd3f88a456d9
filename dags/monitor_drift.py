"""monitor_drift (hourly): the last whole window's slice metrics (online WER/CER, confidence, input drift,
VOC rate) and alerts; alerts that call for retraining update the drift-alert Asset (which schedules
`retrain`)."""

from __future__ import annotations

from airflow.sdk import dag, task

from voiceloop.orchestration import DRIFT_ALERT, START, TAGS, default_args, settings, timed


@dag(schedule=timed("@hourly"), start_date=START, catchup=False, max_active_runs=1, tags=TAGS,
     default_args=default_args(), doc_md=__doc__)
def monitor_drift():
    @task
    def compute(data_interval_end=None) -> dict:  # noqa: ANN001 - Airflow passes the run's interval end
        from voiceloop import loop

        return loop.monitor_drift(settings(), data_interval_end)

    @task(outlets=[DRIFT_ALERT])
    def raise_retrain(result: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        if not result["retrain"]:
            raise AirflowSkipException("no alert calls for retraining")
        return result

    raise_retrain(compute())


monitor_drift()
