"""retrain (weekly, and whenever a new dataset version or a retraining alert appears): train on the newest
dataset version (torchrun on CUDA workers, CPU otherwise) → evaluate per slice on the frozen gold set plus
recent labeled production data → gate against the champion → register `@challenger` (Asset: schedules
`deploy`). A refused model is recorded with its numbers and goes no further."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from voiceloop.orchestration import (
    CHALLENGER,
    DATASET,
    DRIFT_ALERT,
    START,
    TAGS,
    default_args,
    run_key,
    settings,
    timed,
)

TRIGGERS = DATASET | DRIFT_ALERT
WEEKLY = timed("0 3 * * 0")


@dag(schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(WEEKLY, timezone="UTC"), assets=TRIGGERS)
     if WEEKLY else TRIGGERS,
     start_date=START, catchup=False, max_active_runs=1, tags=TAGS,
     default_args=default_args(retries=1, timeout=timedelta(hours=6)), params={"dataset": None, "minutes": None},
     doc_md=__doc__)
def retrain():
    @task
    def train(params: dict | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from voiceloop import loop

        s = settings()
        params = params or {}
        trained = loop.train_candidate(s, params.get("dataset"), config=s.loop_train_config,
                                       finetune_config=s.loop_finetune_config,
                                       minutes=params.get("minutes") or s.loop_train_minutes,
                                       run_key=run_key(get_current_context()))
        if "skipped" in trained:  # nothing to learn from (yet): a skip, not a failure; no deploy follows
            raise AirflowSkipException(trained["skipped"])
        return trained

    @task(outlets=[CHALLENGER])
    def gate(trained: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from voiceloop import loop

        decision = loop.gate_candidate(settings(), trained["run_id"], trained["dataset"],
                                       run_key=run_key(get_current_context()))
        if not decision["promote"] or decision["champion_version"] is None:
            # refused (recorded in MLflow and the catalog), or the first model, which became @champion
            raise AirflowSkipException(decision["summary"])
        return decision

    gate(train())


retrain()
