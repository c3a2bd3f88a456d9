"""Model lifecycle in serving against a real MLflow registry: hot swap, rollback, shadow, canary."""

from __future__ import annotations

import threading

import pytest
from _device_helpers import add_device, auth, device_app, register_tiny, tone_wav
from fastapi.testclient import TestClient
from sqlalchemy import select

from asr.registry import set_alias
from collection.db import connect
from collection.models import ProductionUtterance, ShadowResult
from serving.model_manager import ModelManager

WAV = {"content-type": "audio/wav"}


@pytest.fixture
def two_versions(mlflow_store, tmp_path, request):
    """A fresh registered model with versions 1 (champion) and 2 (no alias yet)."""
    exp, _ = mlflow_store
    name = f"serve-{request.node.name}"[:60]
    v1 = register_tiny(exp, tmp_path, name, seed=1, alias="champion")
    v2 = register_tiny(exp, tmp_path, name, seed=2)
    return name, v1, v2


def test_hot_swap_and_rollback_drop_no_request(two_versions, tmp_path, catalog_url):
    name, v1, v2 = two_versions
    models = ModelManager.from_registry(name, poll_s=0.05)
    app = device_app(tmp_path, catalog_url, models=models, device_rate_per_second=1000, device_burst=1000)
    key = add_device(catalog_url)
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    with TestClient(app) as client:
        def traffic() -> None:
            while not stop.is_set():
                r = client.post("/v1/recognize", content=tone_wav(0.5), headers={**auth(key), **WAV})
                seen.append((r.status_code, r.json().get("model_version", r.text)))

        threads = [threading.Thread(target=traffic) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            _wait_for(lambda: any(v == f"{name}/{v1}" for _, v in seen))
            set_alias(name, "champion", v2)  # promote: serving follows within a poll
            _wait_for(lambda: any(v == f"{name}/{v2}" for _, v in seen))
            set_alias(name, "champion", v1)  # rollback = moving the alias back
            # serving follows within a poll (waiting for a v1 answer alone could be fooled, on a loaded
            # machine, by a request that picked v1 before the promotion and finished only now)
            _wait_for(lambda: models.champion.version == f"{name}/{v1}")
            mark = len(seen)
            _wait_for(lambda: any(v == f"{name}/{v1}" for _, v in seen[mark:]))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert client.get("/readyz").json()["champion"] == f"{name}/{v1}"

    assert seen and all(code == 200 for code, _ in seen), [s for s in seen if s[0] != 200][:3]
    assert models.swaps == 3  # load, promote, rollback
    with connect(catalog_url)() as s:  # every answered request was recorded once, with the version that answered
        rows = s.scalars(select(ProductionUtterance)).all()
        assert len(rows) == len(seen)
        assert {r.model_version for r in rows} == {f"{name}/{v1}", f"{name}/{v2}"}


def test_shadow_records_challenger_without_returning_it(two_versions, tmp_path, catalog_url):
    name, v1, v2 = two_versions
    set_alias(name, "challenger", v2)
    models = ModelManager.from_registry(name, shadow=True, poll_s=60)
    app = device_app(tmp_path, catalog_url, models=models)
    key = add_device(catalog_url)
    with TestClient(app) as client:
        answers = [client.post("/v1/recognize", content=tone_wav(0.5), headers={**auth(key), **WAV}).json()
                   for _ in range(3)]
        app.state.recognition.wait_for_shadows()
    assert {a["model_version"] for a in answers} == {f"{name}/{v1}"}  # devices only ever see the champion
    assert {a["route"] for a in answers} == {"champion"}
    with connect(catalog_url)() as s:
        shadows = s.scalars(select(ShadowResult)).all()
    assert sorted(r.request_id for r in shadows) == sorted(a["request_id"] for a in answers)
    assert {r.model_version for r in shadows} == {f"{name}/{v2}"}
    # the device's owner gave no consent: its text is not kept, whichever model heard it (the confidence is)
    assert all(r.hypothesis is None and r.confidence is not None for r in shadows)


def test_canary_share_routes_a_stable_fraction_to_the_challenger(two_versions, tmp_path, catalog_url):
    name, v1, v2 = two_versions
    set_alias(name, "challenger", v2)
    models = ModelManager.from_registry(name, canary_share=0.3, poll_s=60)
    routes = [models.pick(f"req-{i}").alias for i in range(2000)]
    assert 0.25 < routes.count("challenger") / len(routes) < 0.35
    assert [models.pick(f"req-{i}").alias for i in range(50)] == routes[:50]  # a retry lands on the same model

    app = device_app(tmp_path, catalog_url, models=models, device_rate_per_second=1000, device_burst=1000)
    key = add_device(catalog_url)
    with TestClient(app) as client:
        answers = [client.post("/v1/recognize", content=tone_wav(0.3),
                               headers={**auth(key), **WAV, "x-request-id": f"req-{i}"}).json() for i in range(20)]
    assert [a["route"] for a in answers] == routes[:20]
    assert {a["model_version"] for a in answers if a["route"] == "challenger"} <= {f"{name}/{v2}"}

    set_alias(name, "challenger", v1)  # a challenger equal to the champion is harmless
    models.refresh()


def test_serving_starts_without_a_champion_and_picks_it_up(mlflow_store, tmp_path, catalog_url):
    exp, _ = mlflow_store
    models = ModelManager.from_registry("serve-late", poll_s=60)
    app = device_app(tmp_path, catalog_url, models=models)
    key = add_device(catalog_url)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
        r = client.post("/v1/recognize", content=tone_wav(0.5), headers={**auth(key), **WAV})
        assert r.status_code == 503 and "champion" in r.json()["detail"]
        register_tiny(exp, tmp_path, "serve-late", seed=3, alias="champion")
        assert models.refresh()
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/recognize", content=tone_wav(0.5), headers={**auth(key), **WAV}).status_code == 200


def _wait_for(condition, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the swap")
        time.sleep(0.02)
