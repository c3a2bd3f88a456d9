"""consolidate_labels (hourly): complaints whose audio got a reviewed label move to `labeled`; when enough
reviewed recordings are not yet in a dataset version, a new version is frozen and the dataset Asset updated
(which schedules `retrain`)."""

from __future__ import annotations

from airflow.sdk import dag, task

from voiceloop.orchestration import DATASET, START, TAGS, default_args, settings, timed


@dag(schedule=timed("@hourly"), start_date=START, catchup=False, max_active_runs=1, tags=TAGS,
     default_args=default_args(), params={"min_new": None}, doc_md=__doc__)
def consolidate_labels():
    @task(outlets=[DATASET])
    def freeze_dataset(params: dict | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from voiceloop import loop

        s = settings()
        min_new = (params or {}).get("min_new") or s.loop_min_new_labels
        result = loop.consolidate_labels(s, min_new=int(min_new))
        if result["dataset"] is None:  # a skipped task emits no Asset event: retrain is not scheduled
            raise AirflowSkipException(f"{result['new_reviewed']} new reviewed recording(s), {min_new} needed")
        return result

    freeze_dataset()


consolidate_labels()
