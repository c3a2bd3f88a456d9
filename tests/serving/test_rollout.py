"""A release in serving: rollout tags in a real MLflow registry, serving following them on refresh, and the
live gate on a real catalog (shadow: paired, canary: unpaired)."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from _device_helpers import add_device, auth, device_app, register_tiny, tone_wav
from _labeled_traffic import labeled_request
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sqlalchemy import select

from asr.gate import GateConfig
from asr.registry import set_alias
from collection.db import connect, session_scope
from collection.models import ProductionUtterance, ShadowResult
from serving.model_manager import ModelManager
from serving.rollout import (
    CANARY_TAG,
    SHADOW_TAG,
    RolloutState,
    clear_rollout,
    live_gate,
    live_records,
    live_stats,
    rollout_state,
    set_rollout,
)

WAV = {"content-type": "audio/wav"}


# -- the registry: tags and serving following them ----------------------------------------------------------
@pytest.fixture
def released(mlflow_store, tmp_path):
    """A fresh registered model: version 1 = @champion, version 2 = @challenger."""
    exp, _ = mlflow_store
    name = f"rollout-{uuid.uuid4().hex[:12]}"
    v1 = register_tiny(exp, tmp_path, name, seed=1, alias="champion")
    v2 = register_tiny(exp, tmp_path, name, seed=2, alias="challenger")
    return name, v1, v2


def test_set_read_and_clear_the_rollout_tags(released):
    name, _, v2 = released
    assert rollout_state(name) == RolloutState()
    defaults = RolloutState(shadow=True, canary_share=0.05)
    assert rollout_state(name, defaults) == defaults  # nothing set: the settings
    assert rollout_state("no-such-model", defaults) == defaults  # serving may start before the first version

    assert set_rollout(name, shadow=True, canary_share=0.0) == RolloutState(True, 0.0, v2)
    assert rollout_state(name) == RolloutState(True, 0.0, v2)  # pinned to the challenger of the moment
    tags = MlflowClient().get_registered_model(name).tags
    assert tags[SHADOW_TAG] == "true" and tags[CANARY_TAG] == "0.0" and "voiceloop.rollout.updated_at" in tags

    set_rollout(name, shadow=False, canary_share=0.2)
    assert rollout_state(name, defaults) == RolloutState(False, 0.2, v2)  # tags win over the defaults

    clear_rollout(name)
    clear_rollout(name)  # twice is harmless (a re-run DAG task)
    assert rollout_state(name, defaults) == defaults
    assert not any(k.startswith("voiceloop.rollout.") for k in MlflowClient().get_registered_model(name).tags)


@pytest.mark.parametrize(("shadow", "share", "message"), [
    (True, 1.5, "within \\[0, 1\\]"), (True, -0.1, "within \\[0, 1\\]"), (True, math.nan, "within \\[0, 1\\]"),
    (True, "0.2", "a number"), (True, True, "a number"), ("yes", 0.1, "True or False")])
def test_set_rollout_refuses_bad_input(released, shadow, share, message):
    name, _, _ = released
    with pytest.raises(ValueError, match=message):
        set_rollout(name, shadow=shadow, canary_share=share)
    assert rollout_state(name) == RolloutState()  # nothing was written


def test_set_rollout_needs_a_model_and_a_challenger(mlflow_store, tmp_path):
    exp, _ = mlflow_store
    with pytest.raises(ValueError, match="no registered model 'rollout-missing'"):
        set_rollout("rollout-missing", shadow=True, canary_share=0.0)
    with pytest.raises(ValueError, match="no registered model"):
        clear_rollout("rollout-missing")
    register_tiny(exp, tmp_path, "rollout-lonely", seed=1, alias="champion")
    with pytest.raises(ValueError, match="@challenger is not set"):
        set_rollout("rollout-lonely", shadow=False, canary_share=0.1)
    assert set_rollout("rollout-lonely", shadow=False, canary_share=0.0) == RolloutState()  # "all off" needs none


def test_serving_follows_shadow_and_canary_on_refresh(released):
    name, v1, v2 = released
    models = ModelManager.from_registry(name, poll_s=3600)
    assert models.challenger is None and models.rollout == RolloutState()  # off: the challenger is not loaded
    ids = [f"req-{i}" for i in range(400)]

    set_rollout(name, shadow=True, canary_share=0.0)
    assert models.refresh()
    assert models.challenger.version == f"{name}/{v2}" and models.shadow  # loaded before it is used
    assert {models.pick(i).alias for i in ids} == {"champion"}
    assert models.shadow_slot(models.champion) is models.challenger

    set_rollout(name, shadow=False, canary_share=0.5)
    assert models.refresh()
    assert not models.shadow and models.canary_share == 0.5
    half = [models.pick(i).alias for i in ids]
    assert 0.4 < half.count("challenger") / len(ids) < 0.6
    assert [models.pick(i).alias for i in ids] == half  # a retried request id lands on the same model

    set_rollout(name, shadow=False, canary_share=0.8)
    models.refresh()
    more = [models.pick(i).alias for i in ids]
    assert all(b == "challenger" for a, b in zip(half, more, strict=True) if a == "challenger")  # nobody moves back
    assert not models.refresh()  # nothing moved: nothing changes

    clear_rollout(name)
    assert models.refresh()
    assert models.challenger is None and models.rollout == RolloutState()
    assert {models.pick(i).alias for i in ids} == {"champion"}


def test_settings_are_the_defaults_and_a_new_challenger_does_not_inherit_a_canary(released, mlflow_store, tmp_path):
    name, v1, v2 = released
    models = ModelManager.from_registry(name, canary_share=0.1, poll_s=3600)
    assert models.rollout == RolloutState(False, 0.1) and models.challenger.version == f"{name}/{v2}"

    set_rollout(name, shadow=True, canary_share=0.6)
    models.refresh()
    assert models.rollout == RolloutState(True, 0.6, v2)

    v3 = register_tiny(mlflow_store[0], tmp_path, name, seed=3, alias="challenger")  # a retrain mid-canary
    models.refresh()
    assert models.challenger.version == f"{name}/{v3}"
    assert models.rollout == RolloutState(False, 0.1)  # the tags were for v2: the settings apply to v3

    MlflowClient().set_registered_model_tag(name, CANARY_TAG, "lots")  # someone edits the registry by hand
    with pytest.raises(ValueError, match="expected a number within"):
        rollout_state(name)
    set_alias(name, "champion", v2)
    models.refresh()  # a bad tag must not stop alias following: defaults, and the champion moves
    assert models.champion.version == f"{name}/{v2}" and models.rollout == RolloutState(False, 0.1)


def test_requests_keep_succeeding_through_shadow_canary_promote_and_rollback(released, tmp_path, catalog_url):
    name, v1, v2 = released
    models = ModelManager.from_registry(name, poll_s=3600)  # steps below call refresh() themselves
    app = device_app(tmp_path, catalog_url, models=models, device_rate_per_second=10_000, device_burst=10_000)
    key = add_device(catalog_url)
    answers: list[tuple[int, dict]] = []
    stop = threading.Event()

    with TestClient(app) as client:
        def post(request_id: str | None = None) -> dict:
            headers = {**auth(key), **WAV, **({"x-request-id": request_id} if request_id else {})}
            r = client.post("/v1/recognize", content=tone_wav(0.3), headers=headers)
            answers.append((r.status_code, r.json()))
            return r.json()

        def traffic() -> None:  # background load while the rollout moves
            while not stop.is_set():
                post()

        def step(tag: str) -> list[dict]:
            return [post(f"{tag}-{i}") for i in range(12)]

        background = threading.Thread(target=traffic)
        background.start()
        try:
            before = step("before")
            set_rollout(name, shadow=True, canary_share=0.0)
            models.refresh()
            shadowed = step("shadow")
            app.state.recognition.wait_for_shadows()
            set_rollout(name, shadow=False, canary_share=0.5)
            models.refresh()
            canary = step("canary")
            set_alias(name, "champion", v2)  # promote
            models.refresh()
            promoted = step("promoted")
            set_alias(name, "champion", v1)  # rollback: the alias moves back
            clear_rollout(name)
            models.refresh()
            rolled_back = step("rollback")
        finally:
            stop.set()
            background.join(timeout=60)
        app.state.recognition.wait_for_shadows()

    assert answers and all(code == 200 for code, _ in answers), [a for a in answers if a[0] != 200][:3]
    champion, challenger = f"{name}/{v1}", f"{name}/{v2}"
    assert {a["model_version"] for a in before + shadowed} == {champion}  # a shadow is never returned
    assert {a["model_version"] for a in canary} == {champion, challenger}
    assert {a["model_version"] for a in promoted} == {challenger}
    assert {a["model_version"] for a in rolled_back} == {champion}
    with connect(catalog_url)() as s:
        shadows = s.execute(select(ShadowResult.request_id, ShadowResult.model_version)).all()
        stored = dict(s.execute(select(ProductionUtterance.request_id, ProductionUtterance.model_version)).all())
    answered_by = {a["request_id"]: a["model_version"] for _, a in answers}
    assert stored == answered_by  # every answer recorded once, with the version that gave it
    # shadowing was on only while v1 answered (copies past the backlog are skipped, so not every one is there)
    assert shadows and {v for _, v in shadows} == {challenger} and {answered_by[r] for r, _ in shadows} == {champion}


# -- the live gate on catalog rows ---------------------------------------------------------------------------
T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
SINCE, UNTIL = T0 - timedelta(hours=1), T0
CHAMPION, CHALLENGER = "asr/1", "asr/2"
COMMANDS = ["거실 티비 켜줘", "볼륨 3으로 해줘", "부엌 불 꺼줘", "내일 날씨 알려줘", "안방 에어컨 켜줘", "음악 틀어줘"]
CONFIG = GateConfig(min_slice_n=10, draws=300)
LIMITS = {"min_utterances": 40, "min_labeled": 30}


def garbled(text: str) -> str:
    """A bad hypothesis: the last word lost and one syllable wrong."""
    words = text.split()
    return " ".join(words[:-1])[:-1] + "가"


def add_request(session, *, version: str, **fields) -> str:  # noqa: ANN001, ANN003
    """One request answered by ``version`` half an hour before T0, reviewed two hours later."""
    return labeled_request(session, version=version, route="challenger" if version == CHALLENGER else "champion",
                           **{"at": T0 - timedelta(minutes=30), "reviewed_after": timedelta(hours=2), **fields})


def shadow_traffic(session, n: int, *, champion: Callable[[int, str], str],
                   challenger: Callable[[int, str], str | None], labeled: Callable[[int], bool] = lambda i: True,
                   shadow_latency_ms: float = 90.0) -> list[str]:
    """``n`` requests the champion answered, each shadowed by the challenger; half from Jeolla speakers."""
    ids = []
    for i in range(n):
        ref = COMMANDS[i % len(COMMANDS)]
        rid = add_request(session, version=CHAMPION, ref=ref, hyp=champion(i, ref), labeled=labeled(i),
                          dialect="jeolla" if i % 2 else "standard")
        hyp = challenger(i, ref)
        session.add(ShadowResult(request_id=rid, model_version=CHALLENGER, hypothesis=hyp,
                                 confidence=None if hyp is None else 0.9, latency_ms=shadow_latency_ms,
                                 created_at=T0 - timedelta(minutes=29)))
        ids.append(rid)
    session.flush()
    return ids


def canary_traffic(session, n: int, *, champion: Callable[[int, str], str], challenger: Callable[[int, str], str],
                   challenger_latency_ms: float = 80.0) -> None:
    for i in range(n):
        ref = COMMANDS[i % len(COMMANDS)]
        dialect = "jeolla" if i % 2 else "standard"
        add_request(session, version=CHAMPION, ref=ref, hyp=champion(i, ref), dialect=dialect)
        add_request(session, version=CHALLENGER, ref=ref, hyp=challenger(i, ref), dialect=dialect,
                    latency_ms=challenger_latency_ms)


def right(i: int, ref: str) -> str:
    return ref


def often_wrong(i: int, ref: str) -> str:
    return garbled(ref) if i % 3 else ref


def sometimes_wrong(i: int, ref: str) -> str:
    return garbled(ref) if i % 4 == 0 else ref


def gate(catalog, stage: str, **options):
    with catalog() as s:
        return live_gate(s, CHAMPION, CHALLENGER, stage=stage, since=SINCE, until=UNTIL, config=CONFIG,
                         **{**LIMITS, **options})


def test_shadow_records_are_paired_normalised_and_sliced(catalog):
    with session_scope(catalog) as s:
        ids = shadow_traffic(s, 6, champion=lambda i, ref: ref.replace("3", "삼"), challenger=sometimes_wrong,
                             labeled=lambda i: i != 5)
        add_request(s, version=CHAMPION, ref="음악 틀어줘", hyp="음악 틀어줘", at=T0)  # outside [since, until)
        add_request(s, version="asr/9", ref="음악 틀어줘", hyp="음악 틀어줘")  # another version
    with catalog() as s:
        champion, challenger = live_records(s, CHAMPION, CHALLENGER, since=SINCE, until=UNTIL, stage="shadow")
    assert [r.id for r in champion] == [r.id for r in challenger] == sorted(ids[:5])  # the unlabeled one left out
    by_id = {r.id: r for r in champion}
    assert all(r.errors == 0 for r in champion)  # "볼륨 삼으로" = "볼륨 3으로" once normalised
    assert by_id[ids[1]].slices == {"dialect": "jeolla", "age_band": "60s", "environment": "unknown",
                                    "device_type": "speaker"}
    assert {r.id for r in challenger if r.errors} == {ids[0], ids[4]}


def test_gate_waits_for_traffic_and_for_labels(catalog):
    with session_scope(catalog) as s:
        shadow_traffic(s, 10, champion=often_wrong, challenger=right)
    few = gate(catalog, "shadow")
    assert few.verdict == "wait" and few.decision is None
    assert any("decoded 10 of the 40" in r for r in few.reasons)

    with session_scope(catalog) as s:
        shadow_traffic(s, 40, champion=often_wrong, challenger=right, labeled=lambda i: False)
    unlabeled = gate(catalog, "shadow")
    assert unlabeled.verdict == "wait" and unlabeled.reasons == ["10 labeled requests on the smaller side, 30 needed"]
    assert unlabeled.stats.challenger.utterances == 50


def test_shadow_passes_a_better_challenger(catalog):
    with session_scope(catalog) as s:
        shadow_traffic(s, 60, champion=often_wrong, challenger=sometimes_wrong)
    result = gate(catalog, "shadow")
    assert result.verdict == "pass", result.reasons
    assert result.decision.promote and result.decision.overall.paired
    assert result.decision.overall.challenger < result.decision.overall.champion
    assert {(d.key, d.value) for d in result.decision.slices} >= {("dialect", "jeolla"), ("dialect", "standard")}
    assert [b.name for b in result.decision.budgets] == ["latency_p95_ms"]
    stats = result.stats
    assert (stats.champion.utterances, stats.challenger.utterances, stats.compared) == (60, 60, 60)
    assert stats.champion.p95_latency_ms == 80.0 and stats.challenger.p95_latency_ms == 90.0
    assert stats.agreement == pytest.approx(sum(1 for i in range(60) if bool(i % 3) == (i % 4 == 0)) / 60, abs=1e-4)
    assert result.metrics()["rollout.shadow.pass"] == 1.0


def test_shadow_fails_a_worse_challenger(catalog):
    with session_scope(catalog) as s:
        shadow_traffic(s, 60, champion=right, challenger=often_wrong)
    worse = gate(catalog, "shadow")
    assert worse.verdict == "fail" and not worse.decision.promote
    assert any(r.startswith("not better overall") for r in worse.reasons)
    assert any(r.startswith("dialect=jeolla regressed") for r in worse.reasons)


def test_shadow_fails_a_better_but_slow_challenger(catalog):
    with session_scope(catalog) as s:
        shadow_traffic(s, 60, champion=often_wrong, challenger=right, shadow_latency_ms=200.0)
    early = gate(catalog, "shadow")  # a p95 of 60 timings rests on its 3 slowest: shown, not judged
    assert early.verdict == "pass", early.reasons
    assert [(b.name, b.ok, b.judged) for b in early.decision.budgets] == [("latency_p95_ms", False, False)]
    with session_scope(catalog) as s:
        shadow_traffic(s, 40, champion=often_wrong, challenger=right, shadow_latency_ms=200.0)
    slow = gate(catalog, "shadow")  # 100 timings a side: judged
    assert slow.verdict == "fail" and slow.stats.challenger.timed == 100
    assert slow.reasons == ["latency_p95_ms 200.0 over the budget 100.0 (champion 80.0)"]  # CER alone would pass


def test_shadow_fails_a_challenger_that_errors(catalog):
    with session_scope(catalog) as s:  # better when it answers, but 5 of 60 shadow decodes failed
        shadow_traffic(s, 60, champion=often_wrong, challenger=lambda i, ref: None if i % 12 == 11 else ref)
    with catalog() as s:
        stats = live_stats(s, CHAMPION, CHALLENGER, since=SINCE, until=UNTIL, stage="shadow")
    assert (stats.challenger.errors, stats.champion.errors) == (5, 0)
    assert stats.compared == 55
    result = gate(catalog, "shadow")
    assert result.verdict == "fail" and result.decision.promote  # the CER gate alone would promote
    assert result.reasons == ["error rate 8.33% (5/60) over the budget 0.50% (champion 0.00% + 0.50%)"]
    assert gate(catalog, "shadow", error_margin=0.1).verdict == "pass"


def test_shadow_latency_leaves_streams_out(catalog):
    with session_scope(catalog) as s:
        for _ in range(4):
            rid = add_request(s, version=CHAMPION, ref="음악 틀어줘", hyp="음악 틀어줘", channel="ws", latency_ms=5.0)
            s.add(ShadowResult(request_id=rid, model_version=CHALLENGER, hypothesis="음악 틀어줘", latency_ms=400.0))
        rid = add_request(s, version=CHAMPION, ref="음악 틀어줘", hyp="음악 틀어줘", latency_ms=70.0)
        s.add(ShadowResult(request_id=rid, model_version=CHALLENGER, hypothesis="음악  틀어줘", latency_ms=75.0))
    with catalog() as s:
        stats = live_stats(s, CHAMPION, CHALLENGER, since=SINCE, until=UNTIL, stage="shadow")
    assert (stats.champion.p95_latency_ms, stats.challenger.p95_latency_ms) == (70.0, 75.0)
    assert stats.agreement == 1.0 and stats.compared == 5  # spacing does not count as disagreeing


def test_canary_compares_unpaired_traffic(catalog):
    with session_scope(catalog) as s:
        canary_traffic(s, 60, champion=often_wrong, challenger=sometimes_wrong)
    with catalog() as s:
        champion, challenger = live_records(s, CHAMPION, CHALLENGER, since=SINCE, until=UNTIL, stage="canary")
    assert len(champion) == len(challenger) == 60 and not {r.id for r in champion} & {r.id for r in challenger}
    better = gate(catalog, "canary")
    assert better.verdict == "pass", better.reasons
    assert not better.decision.overall.paired
    assert (better.stats.champion.utterances, better.stats.challenger.utterances) == (60, 60)
    assert better.stats.agreement is None


def test_canary_fails_a_worse_or_slower_challenger(catalog):
    with session_scope(catalog) as s:
        canary_traffic(s, 60, champion=right, challenger=often_wrong)
    assert gate(catalog, "canary").verdict == "fail"

    with session_scope(catalog) as s:  # the next window's traffic: better, but slower
        s.query(ProductionUtterance).delete()
        canary_traffic(s, 100, champion=often_wrong, challenger=right, challenger_latency_ms=150.0)
    slow = gate(catalog, "canary")
    assert slow.verdict == "fail" and slow.reasons == ["latency_p95_ms 150.0 over the budget 100.0 (champion 80.0)"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stage": "blue"}, "unknown stage 'blue'; valid: shadow, canary"),
    ({"since": T0, "until": T0}, "empty time range"),
    ({"challenger": CHAMPION}, "the same version"),
])
def test_live_queries_refuse_bad_input(catalog, kwargs, message):
    args = {"stage": "shadow", "since": SINCE, "until": UNTIL, **kwargs}
    challenger = args.pop("challenger", CHALLENGER)
    with catalog() as s, pytest.raises(ValueError, match=message):
        live_records(s, CHAMPION, challenger, **args)
    with catalog() as s, pytest.raises(ValueError, match="min_utterances"):
        live_gate(s, CHAMPION, CHALLENGER, stage="shadow", since=SINCE, until=UNTIL, min_utterances=0)
