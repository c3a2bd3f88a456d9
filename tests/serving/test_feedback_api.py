"""VOC over HTTP on a real catalog: device feedback (own limit, retries, bad input) and the ops VOC API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from _device_helpers import add_device, auth, device_app, tone_wav
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from collection import labeling
from collection.consent import grant_device_consent
from collection.db import connect
from collection.models import Feedback, FeedbackEvent, FeedbackUtterance, LabelTask, User, utcnow
from collection.users import create_user
from serving.devices import set_device_profile

PASSWORD = "correct-horse-battery"
WAV = {"content-type": "audio/wav"}
SCRIPT = "<script>alert(document.cookie)</script><img src=x onerror=alert(1)> 불이 안 켜져요 & \"따옴표\""


def serve(tmp_path, catalog_url, **settings):  # noqa: ANN001, ANN201
    app = device_app(tmp_path, catalog_url, **settings)
    with connect(catalog_url)() as s:
        for name, role in (("mina", "ops"), ("boss", "admin"), ("lab", "labeler"), ("rev", "reviewer")):
            create_user(s, name, role, PASSWORD)
        s.commit()
    return TestClient(app)


@pytest.fixture
def api(tmp_path, catalog_url):
    with serve(tmp_path, catalog_url, feedback_burst=20) as client:
        yield client, catalog_url


def staff(client: TestClient, username: str) -> dict[str, str]:
    token = client.post("/api/token", data={"username": username, "password": PASSWORD}).json()["access_token"]
    return {"authorization": f"Bearer {token}"}


def recognize(client: TestClient, key: str, request_id: str | None = None) -> str:
    headers = {**auth(key), **WAV, **({"x-request-id": request_id} if request_id else {})}
    r = client.post("/v1/recognize", content=tone_wav(1.0, quiet_s=0.3), headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["request_id"]


def count(url: str, model) -> int:  # noqa: ANN001
    with connect(url)() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_device_feedback_goes_through_voc_intake(api):
    client, url = api
    key, other = add_device(url, "kitchen-01"), add_device(url, "hall-02")
    with connect(url)() as s:
        set_device_profile(s, "kitchen-01", {"region": "gyeongsang", "age_band": "60s"})
        s.commit()
    rid = recognize(client, key)
    body = {"request_id": rid, "category": "misrecognized", "text": SCRIPT}
    r = client.post("/v1/feedback", json=body, headers=auth(key))
    assert r.status_code == 201 and r.json()["status"] == "new"
    retry = client.post("/v1/feedback", json=body, headers=auth(key))  # the device retries (lost answer)
    assert retry.status_code == 200 and retry.json()["feedback_id"] == r.json()["feedback_id"]
    with connect(url)() as s:
        fb = s.scalars(select(Feedback)).one()
        assert (fb.source, fb.device_id, fb.request_id, fb.dialect, fb.age_band) == (
            "device", "kitchen-01", rid, "gyeongsang", "60s")
        assert "slice:dialect=gyeongsang" in fb.causes and "slice:age_band=60s" in fb.causes
        assert s.scalars(select(FeedbackUtterance.request_id)).all() == [rid]
        assert s.scalars(select(FeedbackEvent.to_status)).all() == ["new"]
    foreign = client.post("/v1/feedback", json={"request_id": rid, "category": "other"}, headers=auth(other))
    unknown = client.post("/v1/feedback", json={"request_id": "req-nope", "category": "other"}, headers=auth(key))
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["detail"] == f"no request {rid!r} from this device"
    too_long = client.post("/v1/feedback", json={"request_id": rid, "category": "other", "text": "가" * 2001},
                           headers=auth(key))
    assert too_long.status_code == 422
    angry = client.post("/v1/feedback", json={"request_id": rid, "category": "angry"}, headers=auth(key))
    assert angry.status_code == 422
    assert count(url, Feedback) == 1
    counted = 'category="misrecognized",slice_key="dialect",slice_value="gyeongsang",source="device"'
    assert f"voiceloop_voc_total{{{counted}}}" in client.get("/metrics").text


def test_a_flood_of_feedback_is_limited_without_losing_or_doubling_any(tmp_path, catalog_url):
    with serve(tmp_path, catalog_url, feedback_rate_per_minute=0.6, feedback_burst=3) as client:
        _flood(client, catalog_url)


def _flood(client: TestClient, url: str) -> None:
    key, calm = add_device(url, "chatty"), add_device(url, "calm")
    rid = recognize(client, key)
    codes, accepted = [], []
    for i in range(8):
        r = client.post("/v1/feedback", json={"request_id": rid, "category": "other", "text": f"again {i}"},
                        headers=auth(key))
        codes.append(r.status_code)
        if r.status_code == 201:
            accepted.append(r.json()["feedback_id"])
        else:
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "rate limit" in r.json()["detail"]
    assert codes == [201, 201, 201] + [429] * 5  # burst 3, then 0.6 a minute
    with connect(url)() as s:
        assert sorted(s.scalars(select(Feedback.id))) == sorted(accepted)  # every accepted one, once
    assert recognize(client, key)  # recognising has its own bucket: still answered
    calm_rid = recognize(client, calm)
    assert client.post("/v1/feedback", json={"request_id": calm_rid, "category": "other"},
                       headers=auth(calm)).status_code == 201  # another device is not affected


def test_ops_log_complaint_inbox_detail_triage_label_status(api):
    client, url = api
    ops = staff(client, "mina")
    key_yes, key_no = add_device(url, "listen-01"), add_device(url, "private-01")
    with connect(url)() as s:
        grant_device_consent(s, device_id="listen-01", text_version="v1", scope_training=True,
                             scope_human_review=True, retention_days=30)
        set_device_profile(s, "listen-01", {"age_band": "70s+", "environment": "far_field"})
        s.commit()
    heard, private = recognize(client, key_yes), recognize(client, key_no)

    r = client.post("/ops/api/voc", json={"device_id": "listen-01", "occurred_at": utcnow().isoformat(),
                                          "category": "misrecognized", "text": SCRIPT}, headers=ops)
    assert r.status_code == 201, r.text
    complaint = r.json()
    assert complaint["source"] == "ops" and complaint["created_by"] == "mina" and complaint["text"] == SCRIPT
    assert r.headers["content-type"] == "application/json"  # data: the page escapes it, nothing runs it
    (utt,) = complaint["linked"]
    assert utt["request_id"] == heard and utt["audio"] is True and utt["audio_url"].endswith(f"/audio/{heard}")
    assert utt["hypothesis"] is not None and utt["slice"]["age_band"] == "70s+"
    fid = complaint["id"]
    audio = client.get(utt["audio_url"], headers=ops)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF" and audio.headers["cache-control"] == "no-store"

    no_audio = client.post("/ops/api/voc", json={"device_id": "private-01", "occurred_at": utcnow().isoformat(),
                                                 "category": "other"}, headers=ops).json()
    assert no_audio["linked"][0]["request_id"] == private
    assert no_audio["linked"][0]["audio_url"] is None and no_audio["linked"][0]["hypothesis"] is None
    assert client.get(f"/ops/api/voc/{no_audio['id']}/audio/{private}", headers=ops).status_code == 404
    refused = client.post(f"/ops/api/voc/{no_audio['id']}/label", headers=ops)
    assert refused.status_code == 409 and "does not allow keeping audio" in refused.json()["detail"]

    inbox = client.get("/ops/api/voc", params={"slice_key": "age_band", "slice_value": "70s+"}, headers=ops).json()
    assert [i["id"] for i in inbox["items"]] == [fid] and inbox["total"] == 1
    assert inbox["items"][0]["text"] == SCRIPT
    assert client.get("/ops/api/voc", params={"source": "ops", "status": "new"}, headers=ops).json()["total"] == 2

    triaged = client.post(f"/ops/api/voc/{fid}/triage", headers=ops).json()
    assert triaged["status"] == "triaged" and "slice:age_band=70s+" in triaged["causes"]
    sent = client.post(f"/ops/api/voc/{fid}/label", headers=ops)
    assert sent.status_code == 200, sent.text
    assert sent.json()["priority"] >= 100 and sent.json()["feedback"]["label_task_id"] == sent.json()["label_task_id"]
    with connect(url)() as s:
        task = s.get(LabelTask, sent.json()["label_task_id"])
        assert (task.reason, task.feedback_id) == ("voc", fid)
        labeler = s.scalars(select(User).where(User.username == "lab")).one()
        labeling.assign(s, [labeler])
        label = labeling.submit(s, task.id, labeler, "거실 불 꺼 줘")
        s.commit()
    reviewed = client.post(f"/review/{label.id}", data={"action": "accept"}, headers=staff(client, "rev"),
                           follow_redirects=False)
    assert reviewed.status_code == 303
    labeled = client.get(f"/ops/api/voc/{fid}", headers=ops).json()  # the review moved it on
    assert labeled["status"] == "labeled" and labeled["linked"][0]["reference"]["text"] == "거실 불 꺼 줘"
    assert labeled["events"][-1]["actor"] == "rev"

    wrong = client.post(f"/ops/api/voc/{fid}/status", json={"status": "new"}, headers=ops)
    assert wrong.status_code == 409 and "can go to" in wrong.json()["detail"]
    assert client.post(f"/ops/api/voc/{fid}/status", json={"status": "fixed"}, headers=ops).status_code == 422
    fixed = client.post(f"/ops/api/voc/{fid}/status", json={"status": "fixed", "fixed_in_model_version": "9",
                                                            "note": "<b>better</b>"}, headers=ops).json()
    assert fixed["status"] == "fixed" and fixed["fixed_in_model_version"] == "9"
    assert [(e["actor"], e["to_status"]) for e in fixed["events"]][-1] == ("mina", "fixed")
    assert client.get("/ops/api/voc/voc-nope", headers=ops).status_code == 404


def test_ops_api_refuses_absurd_ranges_and_bad_filters(api):
    client, _ = api
    ops = staff(client, "mina")
    now = utcnow()
    for params in ({"since": now.isoformat(), "until": (now - timedelta(days=1)).isoformat()},
                   {"since": (now - timedelta(days=400)).isoformat(), "until": now.isoformat()},
                   {"since": "yesterday"}, {"slice_key": "mood", "slice_value": "x"}, {"cause": "<script>"},
                   {"status": "whatever"}, {"limit": 0}, {"limit": 100000}):
        r = client.get("/ops/api/voc", params=params, headers=ops)
        assert r.status_code == 422, (params, r.text)
    for params in ({"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()},
                   {"since": "2020-01-01T00:00:00", "until": "2026-01-01T00:00:00"},
                   {"bucket_s": 1}, {"slice_key": "mood"}, {"since": (now - timedelta(days=365)).isoformat(),
                                                            "bucket_s": 60}):
        r = client.get("/ops/api/voc/rate", params=params, headers=ops)
        assert r.status_code == 422, (params, r.text)
    ok = client.get("/ops/api/voc/rate", params={"slice_key": "dialect", "bucket_s": 3600}, headers=ops)
    assert ok.status_code == 200 and ok.json()["rows"] == []
    future = client.post("/ops/api/voc", json={"device_id": "x", "occurred_at": "2099-01-01T00:00:00Z",
                                               "category": "other"}, headers=ops)
    assert future.status_code == 422
    assert client.post("/ops/api/voc", json={"device_id": "nope", "occurred_at": now.isoformat(),
                                             "category": "other"}, headers=ops).status_code == 404


def test_only_ops_and_admins_reach_the_voc_api(api):
    client, url = api
    for user, expected in (("mina", 200), ("boss", 200), ("lab", 403), ("rev", 403)):
        assert client.get("/ops/api/voc", headers=staff(client, user)).status_code == expected, user
    assert client.get("/ops/api/voc").status_code == 401
    key = add_device(url, "dev-1")
    assert client.get("/ops/api/voc", headers=auth(key)).status_code == 401  # a device key is not a login
