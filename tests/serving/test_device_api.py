"""The device API on a real catalog: recognise, read back, feedback, auth matrix, rotation, rate limits, consent."""

from __future__ import annotations

from datetime import timedelta

import pytest
from _device_helpers import add_device, auth, device_app, pcm16, stream_until_final, tone_wav
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.websockets import WebSocketDisconnect

from collection.consent import grant_device_consent, revoke_consent
from collection.db import connect
from collection.models import Consent, Feedback, ProductionUtterance, Recording, utcnow
from collection.store import AudioStore
from serving.devices import authenticate_device, register_device, revoke_device, rotate_key

WAV = {"content-type": "audio/wav"}


@pytest.fixture
def api(tmp_path, catalog_url):
    app = device_app(tmp_path, catalog_url)
    with TestClient(app) as client:
        yield client, catalog_url


def _recognize(client, key, **headers):
    return client.post("/v1/recognize", content=tone_wav(1.0), headers={**auth(key), **WAV, **headers})


def _count(url, model) -> int:
    with connect(url)() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_recognize_answers_the_contract_and_reads_back(api):
    client, url = api
    key = add_device(url)
    r = _recognize(client, key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"request_id", "text", "confidence", "command", "model_version", "latency_ms"}
    assert body["model_version"] == "tiny.pt" and body["route"] == "champion" and body["duration_s"] == 1.0
    assert 0 <= body["confidence"] <= 1 and body["latency_ms"] > 0
    again = client.get(f"/v1/requests/{body['request_id']}", headers=auth(key)).json()
    assert again["request_id"] == body["request_id"]
    assert again["confidence"] == pytest.approx(body["confidence"], abs=1e-4)
    assert again["text"] is None and again["command"] is None  # no consent: what was said is not kept
    with connect(url)() as s:
        row = s.get(ProductionUtterance, body["request_id"])
        assert (row.device_id, row.channel, row.route, row.recording_id) == ("dev-1", "http", "champion", None)
        grant_device_consent(s, device_id="dev-1", text_version="device-v1", scope_training=False, retention_days=30)
        s.commit()
    kept = _recognize(client, key, **{"x-request-id": body["request_id"]}).json()  # the device retries
    assert client.get(f"/v1/requests/{body['request_id']}", headers=auth(key)).json()["text"] == kept["text"]


def test_multipart_upload(api):
    client, url = api
    key = add_device(url)
    r = client.post("/v1/recognize", files={"audio": ("cmd.wav", tone_wav(1.0), "audio/wav")}, headers=auth(key))
    assert r.status_code == 200, r.text


def test_a_retry_with_the_same_request_id_updates_one_row(api):
    client, url = api
    key = add_device(url)
    first = _recognize(client, key, **{"x-request-id": "fw-42"}).json()
    second = _recognize(client, key, **{"x-request-id": "fw-42"}).json()
    assert first["request_id"] == second["request_id"] == "fw-42"
    assert _count(url, ProductionUtterance) == 1
    assert _recognize(client, key, **{"x-request-id": "bad id!"}).status_code == 422


@pytest.mark.parametrize("case", ["no key", "wrong key", "not a device key", "revoked", "rotated, after overlap"])
def test_auth_matrix_refuses(api, case):
    client, url = api
    key = add_device(url)
    headers = auth(key)
    if case == "no key":
        headers = {}
    elif case == "wrong key":
        headers = auth("vlk_" + "A" * 43)
    elif case == "not a device key":
        headers = {"authorization": "Bearer eyJhbGciOi.not-a-device.key"}
    elif case == "revoked":
        with connect(url)() as s:
            revoke_device(s, "dev-1")
            s.commit()
    elif case == "rotated, after overlap":
        with connect(url)() as s:
            rotate_key(s, "dev-1", overlap=timedelta(0))
            s.commit()
    for response in (_recognize(client, "") if not headers else client.post("/v1/recognize", content=tone_wav(1.0),
                                                                              headers={**headers, **WAV}),
                     client.get("/v1/requests/anything", headers=headers),
                     client.post("/v1/feedback", json={"request_id": "x", "category": "other"}, headers=headers)):
        assert response.status_code == 401, (case, response.status_code, response.text)
        assert "device key" in response.json()["detail"]
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/v1/stream", headers=headers) as ws:
        ws.receive_json()
    assert closed.value.code == 1008
    assert _count(url, ProductionUtterance) == 0


def test_rotation_overlap_window(catalog_url):
    with connect(catalog_url)() as s:
        old = register_device(s, "dev-r").key
        now = utcnow()
        new = rotate_key(s, "dev-r", overlap=timedelta(hours=1), now=now)
        s.commit()
        assert new.old_key_expires_at == now + timedelta(hours=1)
        inside, after = now + timedelta(minutes=59), now + timedelta(minutes=61)
        assert authenticate_device(s, old.key if hasattr(old, "key") else old, now=inside).id == "dev-r"
        assert authenticate_device(s, new.key, now=inside).id == "dev-r"
        assert authenticate_device(s, old, now=after) is None  # past the window: only the new key
        assert authenticate_device(s, new.key, now=after).id == "dev-r"
        # a second rotation never extends the first key's window
        newer = rotate_key(s, "dev-r", overlap=timedelta(days=7), now=inside)
        assert authenticate_device(s, old, now=after) is None
        assert authenticate_device(s, new.key, now=inside + timedelta(days=6)).id == "dev-r"
        assert authenticate_device(s, newer.key, now=after).id == "dev-r"


def test_rotated_key_inside_overlap_works_over_http(api):
    client, url = api
    old = add_device(url)
    with connect(url)() as s:
        new = rotate_key(s, "dev-1", overlap=timedelta(hours=1)).key
        s.commit()
    assert _recognize(client, old).status_code == 200
    assert _recognize(client, new).status_code == 200


def test_a_device_sees_only_its_own_requests(api):
    client, url = api
    key_a, key_b = add_device(url, "dev-a"), add_device(url, "dev-b")
    rid = _recognize(client, key_a).json()["request_id"]
    assert client.get(f"/v1/requests/{rid}", headers=auth(key_b)).status_code == 404
    r = client.post("/v1/feedback", json={"request_id": rid, "category": "misrecognized"}, headers=auth(key_b))
    assert r.status_code == 404
    # B cannot overwrite A's request by reusing its id
    assert _recognize(client, key_b, **{"x-request-id": rid}).status_code == 409
    with connect(url)() as s:
        assert s.get(ProductionUtterance, rid).device_id == "dev-a"
    assert _count(url, Feedback) == 0


def test_feedback_on_own_request(api):
    client, url = api
    key = add_device(url)
    rid = _recognize(client, key).json()["request_id"]
    r = client.post("/v1/feedback", json={"request_id": rid, "category": "wrong_action",
                                          "text": "<script>alert(1)</script> 불을 켜랬는데"}, headers=auth(key))
    assert r.status_code == 201 and r.json()["status"] == "new"
    bad = client.post("/v1/feedback", json={"request_id": rid, "category": "nonsense"}, headers=auth(key))
    assert bad.status_code == 422
    with connect(url)() as s:
        fb = s.scalars(select(Feedback)).one()
        assert (fb.request_id, fb.device_id, fb.category) == (rid, "dev-1", "wrong_action")
        assert fb.text.startswith("<script>")  # stored as given; every page that shows it escapes it


def test_rate_limit_per_device(tmp_path, catalog_url):
    app = device_app(tmp_path, catalog_url, device_rate_per_second=0.01, device_burst=3)
    key_a, key_b = add_device(catalog_url, "dev-a"), add_device(catalog_url, "dev-b")
    with TestClient(app) as client:
        codes = [_recognize(client, key_a).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        limited = _recognize(client, key_a)
        assert int(limited.headers["retry-after"]) >= 1 and "rate limit" in limited.json()["detail"]
        assert _recognize(client, key_b).status_code == 200  # another device is not affected
    assert _count(catalog_url, ProductionUtterance) == 4


def test_audio_is_kept_only_under_the_devices_consent(api):
    client, url = api
    key_yes, key_no = add_device(url, "dev-yes"), add_device(url, "dev-no")
    with connect(url)() as s:
        grant_device_consent(s, device_id="dev-yes", text_version="device-v1", scope_training=True, retention_days=30)
        grant_device_consent(s, device_id="dev-no", text_version="device-v1", scope_training=False, retention_days=30)
        s.commit()
    audio = tone_wav(1.0, quiet_s=0.3)  # passes QC, as production audio must before it is kept
    yes = client.post("/v1/recognize", content=audio, headers={**auth(key_yes), **WAV}).json()["request_id"]
    no = client.post("/v1/recognize", content=audio, headers={**auth(key_no), **WAV}).json()["request_id"]
    with connect(url)() as s:
        assert s.get(ProductionUtterance, yes).recording_id is not None
        assert s.get(ProductionUtterance, no).recording_id is None
        assert s.get(ProductionUtterance, no).hypothesis is not None  # a consent without training keeps the text
        assert s.scalar(select(func.count()).select_from(Recording)) == 1
        (consent,) = s.scalars(select(Consent).where(Consent.subject_id == "dev-no")).all()
        revoke_consent(s, AudioStore(client.app.state.settings.audio_store), consent.id, actor="owner",
                       secret="k", check_models=False)
        s.commit()
        row = s.get(ProductionUtterance, no)
        assert (row.hypothesis, row.command) == (None, None) and row.confidence is not None  # the log stays


def test_websocket_stream_partials_and_final(api):
    client, url = api
    key = add_device(url)
    import io

    import soundfile as sf

    wav, _ = sf.read(io.BytesIO(tone_wav(1.0)), dtype="float32")
    with client.websocket_connect("/v1/stream", headers=auth(key)) as ws:
        ws.send_json({"type": "start", "request_id": "ws-1"})
        partials = []
        for i in range(0, len(wav), 1600):
            ws.send_bytes(pcm16(wav[i:i + 1600]))
            partials.append(ws.receive_json())
        ws.send_json({"type": "end"})
        final = ws.receive_json()
    assert {p["type"] for p in partials} == {"partial"}
    assert final["type"] == "final" and final["request_id"] == "ws-1" and final["ended_by"] == "client"
    assert final["duration_s"] == 1.0
    with connect(url)() as s:
        assert s.get(ProductionUtterance, "ws-1").channel == "ws"


def test_websocket_endpointing_ends_on_silence(api):
    client, url = api
    key = add_device(url)
    import io

    import numpy as np
    import soundfile as sf

    speech, _ = sf.read(io.BytesIO(tone_wav(0.5)), dtype="float32")
    audio = np.concatenate([speech, np.zeros(16000, dtype=np.float32)])  # then 1 s of silence, no end marker
    with client.websocket_connect("/v1/stream", headers=auth(key)) as ws:
        final = stream_until_final(ws, audio)
    assert final is not None and final["ended_by"] == "endpoint"
    assert 1.0 <= final["duration_s"] < 1.5  # 0.5 s of speech + 0.6 s endpoint silence (+ one chunk)


def test_health_ready_metrics(api):
    client, url = api
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    key = add_device(url)
    _recognize(client, key)
    text = client.get("/metrics").text
    assert 'voiceloop_http_requests_total{method="POST",route="/v1/recognize",status="200"}' in text
    assert 'voiceloop_recognitions_total{channel="http",model_version="tiny.pt",route="champion"}' in text
    assert "voiceloop_http_request_seconds_bucket" in text
    assert client.get("/openapi.json").json()["paths"]["/v1/recognize"]["post"]


def test_no_model_means_503_not_500(tmp_path, catalog_url):
    from _web_helpers import make_app

    app = make_app(tmp_path, catalog_url)  # the pages-only app (no models)
    key = add_device(catalog_url)
    with TestClient(app) as client:
        assert _recognize(client, key).status_code == 503
        assert client.get("/readyz").status_code == 200  # ready for what it serves: the pages


def test_device_cli_add_rotate_revoke_consent(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from voiceloop.cli import app

    for var in ("VOICELOOP_CATALOG_URL", "VOICELOOP_AUDIO_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    runner, data = CliRunner(), ["--data-dir", str(tmp_path)]
    url = f"sqlite:///{(tmp_path / 'catalog.db').resolve()}"
    added = runner.invoke(app, ["device", "add", "tv-7", "--device-type", "tv", *data])
    assert added.exit_code == 0, added.output
    first = added.output.strip()
    assert runner.invoke(app, ["device", "add", "tv-7", *data]).exit_code == 1  # taken: an error, not a new key
    rotated = runner.invoke(app, ["device", "rotate", "tv-7", "--overlap-hours", "1", *data])
    assert rotated.exit_code == 0, rotated.output
    second = rotated.stdout.strip().splitlines()[0]
    with connect(url)() as s:
        assert authenticate_device(s, first).device_type == "tv"  # inside the overlap window
        assert authenticate_device(s, second).id == "tv-7"
    consent = runner.invoke(app, ["device", "consent", "tv-7", "--no-training", *data])
    assert consent.exit_code == 0 and "training=False" in consent.output
    assert runner.invoke(app, ["device", "revoke", "tv-7", *data]).exit_code == 0
    with connect(url)() as s:
        assert authenticate_device(s, second) is None
    assert runner.invoke(app, ["device", "rotate", "tv-7", *data]).exit_code == 1  # revoked for good
    assert runner.invoke(app, ["device", "revoke", "nope", *data]).exit_code == 1
