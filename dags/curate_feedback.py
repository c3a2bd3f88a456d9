"""curate_feedback (daily): complaints, low-confidence and drifting-slice production audio (consented only)
→ prioritised label tasks; slices with open alerts → a re-collection plan that `collect_and_label` fills."""

from __future__ import annotations

from airflow.sdk import dag, task

from voiceloop.orchestration import START, TAGS, default_args, settings, timed


@dag(schedule=timed("@daily"), start_date=START, catchup=False, max_active_runs=1, tags=TAGS,
     default_args=default_args(), doc_md=__doc__)
def curate_feedback():
    @task
    def curate(data_interval_end=None) -> dict:  # noqa: ANN001 - Airflow passes the run's interval end
        from voiceloop import loop

        s = settings()
        return loop.curate_feedback(s, s.data_plan, data_interval_end, per_cell=s.loop_recollect_per_cell)

    curate()


curate_feedback()
