"""Builders for the web tests: the real app on a real catalog, users, audio, a seeded labeling queue."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from collection import labeling
from collection.db import connect
from collection.ingest import ensure_speaker, ingest
from collection.manifest import load_split
from collection.models import LabelTask, User
from collection.store import AudioStore
from collection.users import create_user
from serving.api.main import create_app
from voiceloop.settings import Settings

PLAN = "tiny"
PASSWORD = "correct-horse-battery"
HTML = {"accept": "text/html,application/xhtml+xml"}


def make_app(data_dir: Path, catalog_url: str, **overrides: object) -> FastAPI:
    settings = Settings(data_dir=data_dir, catalog_url=catalog_url, **overrides)
    return create_app(settings, plan=PLAN)


def store_of(app: FastAPI) -> AudioStore:
    return app.state.store


def session_of(app: FastAPI) -> Session:
    return connect(app.state.settings.catalog)()


def consent_fields(app: FastAPI) -> dict[str, object]:
    """Exactly what the recording page's consent form posts when everything is ticked."""
    form = app.state.consent_form
    return {"text_version": form.text_version, "scope": list(form.scopes),
            "checklist": [item.value for item in form.checklist], "age_band": "30s", "gender": "female",
            "dialect": "standard"}


def tone_wav(seed: int, seconds: float = 1.5, sr: int = 16000) -> bytes:
    """A voiced-like tone burst over a low noise floor (passes QC); ``seed`` makes each one unique."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    freq = 150 + 10 * seed
    margin = min(0.25, seconds / 5)
    wav = 0.3 * np.sin(2 * np.pi * freq * t) * ((t > margin) & (t < seconds - margin))
    wav = wav + 2e-3 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, wav.astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def login(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    r = client.post("/login", data={"username": username, "password": password}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


@dataclass(frozen=True)
class Seeded:
    labeler: str
    other_labeler: str
    reviewer: str
    admin: str
    recording_id: str
    task_id: str
    prelabel: str
    prompt: str


def add_users(session: Session) -> dict[str, User]:
    return {name: create_user(session, name, role, PASSWORD)
            for name, role in (("lab", "labeler"), ("lab2", "labeler"), ("rev", "reviewer"), ("boss", "admin"),
                               ("opsy", "ops"))}


def seed_queue(app: FastAPI, studio: Path, *, double: bool = False, recordings: int = 1) -> Seeded:
    """Users, ``recordings`` real eSpeak clips from the tiny studio (a synthetic speaker, so people may
    listen), one round-1 task each (and round 2 with ``double``) with a pre-label, assigned round-robin."""
    clips = [(u.audio_path, u.text) for split in sorted(p for p in studio.iterdir()
                                                         if (p / "recordings.jsonl").exists())
             for u in load_split(split)]
    with session_of(app) as session:
        users = add_users(session)
        speaker = ensure_speaker(session, source="synthetic", external_id="web-test-persona", persona="synthetic",
                                 age_band="30s", gender="female", dialect="standard")
        rec_ids = []
        for path, text in clips[:recordings]:
            result = ingest(session, store_of(app), path.read_bytes(), source="synthetic", speaker_id=speaker.id,
                            external_id=f"web-test:{path.name}", text=text, environment="quiet")
            assert result.ok, result
            rec_ids.append(result.recording_id)
        labeling.create_tasks(session, rec_ids, double_share=1.0 if double else 0.0)
        tasks = session.scalars(select(LabelTask).where(LabelTask.recording_id.in_(rec_ids))).all()  # re-runnable
        for task in tasks:
            if task.prelabel_model is None:
                task.prelabel = "거실 불 켜줘" if task.round == 1 else None
                task.prelabel_model, task.prelabel_confidence = "test-model", 0.42
        # The test's labeler holds round 1 of the first recording (round 2, if any, goes to the other one);
        # the rest is dealt out by the library.
        first = next(t for t in tasks if t.round == 1 and t.recording_id == rec_ids[0])
        first.assignee_id = users["lab"].id
        for task in tasks:
            if task.round == 2 and task.recording_id == rec_ids[0]:
                task.assignee_id = users["lab2"].id
        session.flush()
        labeling.assign(session, [users["lab"], users["lab2"]])
        session.commit()
        prompt = first.recording.prompt_text
        return Seeded("lab", "lab2", "rev", "boss", rec_ids[0], first.id, first.prelabel, prompt)
