"""Builders for the dataset-version and consent tests: real eSpeak clips ingested into a real catalog."""

from __future__ import annotations

import itertools
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from collection.consent import grant_consent
from collection.datasets import split_key
from collection.ingest import ensure_speaker, ingest
from collection.manifest import load_split
from collection.models import Label, LabelTask, Speaker, User
from collection.store import AudioStore

SECRET = "test-audit-secret"
RATIOS = {"train": 0.5, "dev": 0.25, "test": 0.25}
ENVIRONMENTS = ("quiet", "tv", "kitchen", "far_field")
_serial = itertools.count()


class Clips:
    """The tiny studio's utterances handed out one at a time (the catalog refuses the same audio twice)."""

    def __init__(self, studio: Path):
        self.items = [(u.audio_path.read_bytes(), u.text) for split in sorted(p for p in studio.iterdir()
                                                                              if (p / "recordings.jsonl").exists())
                      for u in load_split(split)]
        self._next = itertools.count()

    def take(self) -> tuple[bytes, str]:
        i = next(self._next)
        if i >= len(self.items):
            raise RuntimeError(f"the tiny studio has only {len(self.items)} clips")
        return self.items[i]


def labeler(session: Session, name: str = "lab-1", *, simulated: bool = False) -> User:
    user = session.query(User).filter_by(username=name).one_or_none()
    if user is None:
        user = User(username=name, role="labeler", password_hash="-", simulated=simulated)
        session.add(user)
        session.flush()
    return user


def add_speaker(session: Session, name: str, *, consent: bool = True, scope_training: bool = True,
                persona: str = "real", dialect: str = "standard", age_band: str = "30s", gender: str = "female",
                retention_days: int = 365) -> Speaker:
    speaker = ensure_speaker(session, source="test", external_id=name, persona=persona, dialect=dialect,
                             age_band=age_band, gender=gender)
    if consent:
        grant_consent(session, subject_type="speaker", subject_id=speaker.id, text_version="v1",
                      scope_training=scope_training, scope_human_review=True, retention_days=retention_days,
                      checklist=["voice", "purpose"], required=["voice", "purpose"])
    return speaker


def add_recording(session: Session, store: AudioStore, clips: Clips, speaker: Speaker, *,
                  environment: str = "quiet", status: str | None = "reviewed", text: str | None = None,
                  flags: tuple[str, ...] = (), user: User | None = None) -> tuple[str, str]:
    """Ingest one clip for ``speaker`` and (unless ``status`` is None) give it a label with ``status``.
    Returns (recording id, label text)."""
    wav, prompt = clips.take()
    result = ingest(session, store, wav, source="upload", speaker_id=speaker.id,
                    external_id=f"{speaker.id}/{next(_serial)}",
                    environment=environment, text=prompt, language="ko")
    assert result.status == "accepted", result
    text = prompt if text is None else text
    if status is not None:
        task = LabelTask(recording_id=result.recording_id, status="submitted")
        session.add(task)
        session.flush()
        session.add(Label(task_id=task.id, recording_id=result.recording_id, labeler_id=(user or labeler(session)).id,
                          text=text, status=status, flags=list(flags)))
        session.flush()
    return result.recording_id, text


def speaker_with_recordings(session: Session, store: AudioStore, clips: Clips, name: str, n: int = 2,
                            **speaker_kw) -> tuple[Speaker, list[str]]:
    speaker = add_speaker(session, name, **speaker_kw)
    recs = [add_recording(session, store, clips, speaker, environment=ENVIRONMENTS[i % len(ENVIRONMENTS)])[0]
            for i in range(n)]
    return speaker, recs


def split_keys(session: Session) -> dict[str, str]:
    """speaker id -> the key the speaker's split is drawn from."""
    return {sp.id: split_key(sp) for sp in session.scalars(select(Speaker))}
