"""Generated production traffic for the drift and alert tests: utterances with slices and input features,
human transcripts for some (a production recording with a reviewed label), complaints."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from collection.models import Feedback, Label, LabelTask, ProductionUtterance, Recording
from monitoring.reference import build_reference

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)  # a window end, aligned to hours and days
V1, V2 = "voiceloop-asr/1", "voiceloop-asr/2"
FEATURES = {"duration": (2.0, 0.5), "speech_dbfs": (-22.0, 4.0), "snr_db": (25.0, 6.0), "speech_rate": (5.0, 1.0)}


def reference_profile(seed: int = 0, n: int = 4000):
    """The 'training set': each feature normal around the means of FEATURES."""
    rng = np.random.default_rng(seed)
    values = {name: rng.normal(mu, sd, n).tolist() for name, (mu, sd) in FEATURES.items()}
    return build_reference(values, V1, "generated", "0" * 64)


def add_utterances(session: Session, n: int, *, end: datetime = T0, span_s: int = 3600, seed: int = 1,
                   dialect: str | None = "standard", age_band: str | None = "30s", environment: str | None = "quiet",
                   device_type: str | None = "speaker", model_version: str = V1, confidence: float = 0.9,
                   shift: dict[str, float] | None = None, in_grammar: bool = True) -> list[str]:
    """``n`` utterances spread over ``[end - span_s, end)``; features drawn like the reference, plus ``shift``
    (feature → added amount). Returns their request ids."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    ids = []
    for i in range(n):
        rid = f"req-{uuid.uuid4().hex}"
        feats = {name: float(rng.normal(mu, sd)) + shift.get(name, 0.0) for name, (mu, sd) in FEATURES.items()}
        session.add(ProductionUtterance(
            request_id=rid, device_id=f"dev-{i % 7}", model_version=model_version, confidence=confidence,
            latency_ms=80.0, created_at=end - timedelta(seconds=span_s * (i + 0.5) / n), channel="http",
            route="champion", duration_s=feats["duration"], dialect=dialect, age_band=age_band,
            environment=environment, device_type=device_type, speech_dbfs=feats["speech_dbfs"],
            snr_db=feats["snr_db"], speech_rate=feats["speech_rate"], in_grammar=in_grammar))
        ids.append(rid)
    session.flush()
    return ids


def add_labeled(session: Session, pairs: list[tuple[str, str]], *, end: datetime = T0, span_s: int = 3600,
                status: str = "reviewed", **slices) -> list[str]:
    """One production utterance per (reference, hypothesis), its audio kept and transcribed by a person."""
    ids = add_utterances(session, len(pairs), end=end, span_s=span_s, **slices)
    for rid, (ref, hyp) in zip(ids, pairs, strict=True):
        rec = Recording(sha256=uuid.uuid4().hex * 2, uri=f"file:///{rid}.wav", sample_rate=16000, duration=2.0,
                        source="production", external_id=rid)
        session.add(rec)
        session.flush()
        task = LabelTask(recording_id=rec.id, reason="new", status="submitted")
        session.add(task)
        session.flush()
        session.add(Label(task_id=task.id, recording_id=rec.id, text=ref, status=status,
                          reviewed_at=end + timedelta(hours=1)))
        utt = session.get(ProductionUtterance, rid)
        utt.recording_id, utt.hypothesis = rec.id, hyp
    session.flush()
    return ids


def add_feedback(session: Session, n: int, *, end: datetime = T0, span_s: int = 3600, request_ids: list[str] = (),
                 dialect: str | None = "standard", age_band: str | None = "30s", environment: str | None = "quiet",
                 device_type: str | None = "speaker") -> None:
    for i in range(n):
        rid = request_ids[i] if i < len(request_ids) else None
        at = end - timedelta(seconds=span_s * (i + 0.5) / n)
        session.add(Feedback(request_id=rid, device_id="dev-1", category="misrecognized", text="안 알아들어요",
                             source="device" if rid else "ops", created_at=at,
                             dialect=dialect, age_band=age_band, environment=environment, device_type=device_type))
    session.flush()
