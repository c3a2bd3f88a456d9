"""collect_and_label (daily): the plans that still have gaps → synthetic studio (QC refuses what fails) → label
tasks, pre-labelled by the champion. Re-collection plans that curate_feedback wrote are filled too."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from voiceloop.orchestration import START, TAGS, default_args, settings, timed


@dag(schedule=timed("@daily"), start_date=START, catchup=False, max_active_runs=1, tags=TAGS,
     default_args=default_args(timeout=timedelta(hours=2)), params={"plan": None, "limit": None},
     doc_md=__doc__)
def collect_and_label():
    @task
    def plans_with_gaps(params: dict | None = None) -> list[str]:
        from voiceloop import loop

        s = settings()
        return loop.plans_with_gaps(s, (params or {}).get("plan") or s.data_plan)

    @task(max_active_tis_per_dag=1)  # one studio at a time: synthesis takes the whole CPU
    def collect(plan: str, params: dict | None = None) -> dict:
        from voiceloop import loop

        return loop.collect_plan(settings(), plan, limit=(params or {}).get("limit"))

    @task(trigger_rule="none_failed")
    def label_tasks(collected: list[dict]) -> dict:
        from voiceloop import loop

        return {**loop.queue_labels(settings()), "collected": list(collected)}

    label_tasks(collect.expand(plan=plans_with_gaps()))


collect_and_label()
