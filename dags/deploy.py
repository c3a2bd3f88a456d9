"""deploy (whenever a challenger passes the gate): shadow on live traffic until enough requests are decoded
and transcribed → canary share → promote to `@champion`, or roll back — each step judged by the release
gate on per-slice CER, latency and error rate (serving/rollout.py). Serving follows within one poll."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import PokeReturnValue, dag, get_current_context, task

from voiceloop.orchestration import CHALLENGER, START, TAGS, default_args, poke_interval, run_key, settings

# "poke" holds a worker slot while it waits. "reschedule" would free it, but with short intervals Airflow
# 3.3's LocalExecutor races ("finished with state success, but the task instance's state attribute is
# queued") and fails the sensor — seen in the loop demo at 5 s. A release waits rarely and alone.
WAIT = {"poke_interval": poke_interval(), "timeout": timedelta(days=3), "mode": "poke"}


def _judge(step: dict) -> PokeReturnValue:
    from voiceloop import release

    result = release.judge_step(settings(), step, run_key=run_key(get_current_context()))
    return PokeReturnValue(is_done=result["verdict"] != "wait", xcom_value=result)


def _roll_back(result: dict) -> dict:
    from voiceloop import release

    return release.rollback(settings(), result, run_key=run_key(get_current_context()), reason=result["summary"])


@dag(schedule=[CHALLENGER], start_date=START, catchup=False, max_active_runs=1, tags=TAGS,
     default_args=default_args(timeout=timedelta(minutes=30)), doc_md=__doc__)
def deploy():
    @task
    def start_shadow() -> dict:
        from voiceloop import release

        return release.start_step(settings(), "shadow")

    @task.sensor(**WAIT)
    def shadow_verdict(step: dict) -> PokeReturnValue:
        return _judge(step)

    @task.branch
    def after_shadow(result: dict) -> str:
        return "start_canary" if result["verdict"] == "pass" else "roll_back_shadow"

    @task
    def roll_back_shadow(result: dict) -> dict:
        return _roll_back(result)

    @task
    def start_canary() -> dict:
        from voiceloop import release

        return release.start_step(settings(), "canary")

    @task.sensor(**WAIT)
    def canary_verdict(step: dict) -> PokeReturnValue:
        return _judge(step)

    @task.branch
    def after_canary(result: dict) -> str:
        return "promote" if result["verdict"] == "pass" else "roll_back_canary"

    @task
    def roll_back_canary(result: dict) -> dict:
        return _roll_back(result)

    @task
    def promote(result: dict) -> dict:
        from voiceloop import release

        return release.promote(settings(), result, run_key=run_key(get_current_context()))

    shadow = shadow_verdict(start_shadow())
    canary_started = start_canary()
    after_shadow(shadow) >> [canary_started, roll_back_shadow(shadow)]
    canary = canary_verdict(canary_started)
    after_canary(canary) >> [promote(canary), roll_back_canary(canary)]


deploy()
