"""The recording page's server side: consent validation, uploads, limits and bad input."""

from __future__ import annotations

import pytest
from _web_helpers import consent_fields, make_app, session_of, store_of, tone_wav
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from collection.models import Consent, Recording, Rejection, Speaker, utcnow
from collection.users import issue_token

SECRET = "voiceloop-development-only-secret"


def count(app, model) -> int:
    with session_of(app) as session:
        return session.scalar(select(func.count()).select_from(model))


def start(client: TestClient, app) -> dict:
    r = client.post("/record/consent", data=consent_fields(app))
    assert r.status_code == 201, r.text
    return r.json()


def upload(client: TestClient, started: dict, audio: bytes, submission_id: str = "take-0001", **fields: str):
    data = {"token": started["token"], "submission_id": submission_id, "prompt_id": started["prompt"]["id"],
            "environment": "kitchen", **fields}
    return client.post("/record/upload", data=data, files={"audio": ("take.wav", audio, "audio/wav")})


@pytest.fixture
def app(tmp_path, catalog_url):
    return make_app(tmp_path, catalog_url)


def test_page_shows_consent_checklist_and_vocabularies_first(app):
    page = TestClient(app).get("/record")
    assert page.status_code == 200
    html = page.text
    assert html.index('id="consent-form"') < html.index('id="record-step"')
    plan = app.state.plan
    assert f'value="{plan.consent.text_version}"' in html
    for item in plan.checklist:  # each item its own checkbox, text verbatim
        assert f'name="checklist" value="{item.id}" required' in html and item.text in html
    for value in ("70s+", "female", "gyeongsang", "far_field"):
        assert f'value="{value}"' in html


def test_consent_creates_speaker_and_consent(app):
    started = start(TestClient(app), app)
    assert started["token"] and started["prompt"]["text"] and started["environment"] == "quiet"
    with session_of(app) as session:
        speaker = session.scalars(select(Speaker)).one()
        assert (speaker.persona, speaker.source, speaker.age_band, speaker.gender, speaker.dialect) == (
            "real", "upload", "30s", "female", "standard")
        assert speaker.external_id.startswith("web-")
        assert started["reference"] == speaker.id  # what the contributor quotes to withdraw
        consent = session.get(Consent, speaker.consent_id)
        assert (consent.subject_type, consent.subject_id, consent.text_version) == ("speaker", speaker.id, "test-1")
        assert consent.scope_training and consent.scope_human_review and consent.retention_days == 30
        assert consent.checklist == {i.id: True for i in app.state.plan.checklist}


FORGERIES = {
    "scope the form never offered": ({"scope": ["training", "human_review", "marketing"]}, "scope"),
    "scope missing": ({"scope": ["training"]}, "scope"),
    "checklist item missing": ({"checklist": ["voice_separate", "purpose", "retention"]}, "not ticked"),
    "checklist item invented": ({"checklist": ["voice_separate", "purpose", "retention", "human_review", "sell"]},
                                "unknown item"),
    "unknown age band": ({"age_band": "120s"}, "age_band: '120s' is not an option"),
    "two genders": ({"gender": ["male", "female"]}, "gender: choose exactly one"),
    "unknown dialect": ({"dialect": "klingon"}, "dialect"),
    "tampered text version": ({"text_version": "test-0"}, "text_version"),
    "extra field": ({"speaker_id": "spk-admin"}, "unexpected field"),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_consent_fields_are_refused(app, name):
    change, message = FORGERIES[name]
    r = TestClient(app).post("/record/consent", data={**consent_fields(app), **change})
    assert r.status_code == 422
    assert any(message in p for p in r.json()["detail"]["problems"])
    assert count(app, Speaker) == 0 and count(app, Consent) == 0


def test_upload_stores_recording_and_retry_is_idempotent(app):
    client = TestClient(app)
    started = start(client, app)
    audio = tone_wav(1)
    first = upload(client, started, audio)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "accepted" and body["next_prompt"]["id"] != started["prompt"]["id"]
    retry = upload(client, started, audio)  # the network dropped the answer; the page sends the same take
    assert retry.status_code == 200 and retry.json()["recording_id"] == body["recording_id"]
    with session_of(app) as session:
        rec = session.scalars(select(Recording)).one()
        speaker = session.get(Speaker, rec.speaker_id)
        assert (rec.id, rec.source, rec.environment, rec.plan, rec.device) == (
            body["recording_id"], "upload", "kitchen", "tiny", "browser")
        assert rec.prompt_text and speaker.persona == "real"
        assert store_of(app).exists(rec.sha256)
    assert len(store_of(app).keys()) == 1


def test_duplicate_audio_is_409_and_stored_once(app):
    client = TestClient(app)
    started = start(client, app)
    audio = tone_wav(2)
    assert upload(client, started, audio, "take-0001").status_code == 201
    again = upload(client, started, audio, "take-0002")
    assert again.status_code == 409 and again.json()["detail"]["reason"] == "duplicate"
    assert count(app, Recording) == 1 and len(store_of(app).keys()) == 1
    with session_of(app) as session:
        assert session.scalars(select(Rejection.reason)).all() == ["duplicate"]


@pytest.mark.parametrize("audio,reason", [
    (tone_wav(3)[:200], "undecodable"),  # truncated WAV
    (b"this is not audio at all" * 10, "undecodable"),
    (b"", "undecodable"),
    (tone_wav(4, seconds=0.2), "too_short"),
    (tone_wav(5, seconds=12.0), "too_long"),  # the tiny plan allows 8 s
])
def test_bad_audio_is_422_with_the_reason_and_stored_as_rejection(app, audio, reason):
    client = TestClient(app)
    started = start(client, app)
    r = upload(client, started, audio)
    assert r.status_code == 422
    assert r.json()["detail"]["reason"] == reason and r.json()["detail"]["message"]
    with session_of(app) as session:
        rejection = session.scalars(select(Rejection)).one()
        assert rejection.reason == reason and rejection.source == "upload"
    assert count(app, Recording) == 0 and store_of(app).keys() == []


@pytest.mark.parametrize("declare_length", [True, False])
def test_oversized_upload_is_413_and_nothing_is_stored(tmp_path, catalog_url, declare_length):
    app = make_app(tmp_path, catalog_url, max_upload_bytes=40_000)
    client = TestClient(app)
    started = start(client, app)
    big = tone_wav(6, seconds=3.0)  # ~96 kB
    if declare_length:
        r = upload(client, started, big)
    else:  # chunked, no Content-Length: the limit must hold while reading
        import httpx

        request = httpx.Request("POST", "http://testserver/record/upload",
                                data={"token": started["token"], "submission_id": "take-0001",
                                      "prompt_id": started["prompt"]["id"], "environment": "quiet"},
                                files={"audio": ("take.wav", big, "audio/wav")})
        body = request.read()
        chunks = (body[i:i + 4096] for i in range(0, len(body), 4096))
        r = client.post("/record/upload", content=chunks, headers={"content-type": request.headers["content-type"]})
        assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "limit of 40000 bytes" in r.json()["detail"]
    assert count(app, Recording) == 0 and count(app, Rejection) == 0 and store_of(app).keys() == []
    assert upload(client, started, tone_wav(7, seconds=0.8)).status_code == 201  # under the limit: fine


def test_contributor_token_is_checked(app):
    client = TestClient(app)
    started = start(client, app)
    with session_of(app) as session:
        speaker_id = session.scalars(select(Speaker.id)).one()
    bad = {"garbage": "garbage", "forged": started["token"][:-3] + "abc", "empty": "",
           "expired": issue_token(speaker_id, SECRET, max_age_s=-1, audience="contributor"),
           "a staff token": issue_token(speaker_id, SECRET)}
    for name, token in bad.items():
        r = upload(client, {**started, "token": token}, tone_wav(8))
        assert r.status_code == 401, name
    assert count(app, Recording) == 0 and count(app, Rejection) == 0


def test_bad_fields_and_withdrawn_consent(app):
    client = TestClient(app)
    started = start(client, app)
    r = upload(client, started, tone_wav(9), prompt_id="no-such-prompt", environment="moon", submission_id="x")
    assert r.status_code == 422
    problems = r.json()["detail"]["problems"]
    assert len(problems) == 3 and "submission_id" in problems[0] and "moon" in problems[2]
    with session_of(app) as session:
        session.scalars(select(Consent)).one().revoked_at = utcnow()
        session.commit()
    r = upload(client, started, tone_wav(9))
    assert r.status_code == 403 and "withdrawn" in r.json()["detail"]
    assert count(app, Recording) == 0


def test_contributor_is_done_after_the_plans_per_speaker(app):
    client = TestClient(app)
    started = start(client, app)
    per_speaker = app.state.plan.utterances.per_speaker
    seen = {started["prompt"]["id"]}
    prompt = started["prompt"]
    for i in range(per_speaker):
        r = upload(client, {**started, "prompt": prompt}, tone_wav(20 + i), f"take-{i:04d}")
        assert r.status_code == 201
        prompt = r.json()["next_prompt"]
        if prompt:
            assert prompt["id"] not in seen
            seen.add(prompt["id"])
    assert r.json()["done"] and prompt is None
    more = upload(client, started, tone_wav(30), "take-9999")
    assert more.status_code == 409 and "thank you" in more.json()["detail"]
    skip = client.post("/record/prompt", data={"token": started["token"]})
    assert skip.status_code == 200 and skip.json() == {"prompt": None, "done": True}


def test_skip_gives_another_prompt(app):
    client = TestClient(app)
    started = start(client, app)
    r = client.post("/record/prompt", data={"token": started["token"], "skip": [started["prompt"]["id"]]})
    assert r.status_code == 200 and r.json()["prompt"]["id"] != started["prompt"]["id"]
