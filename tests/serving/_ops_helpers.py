"""Generated monitoring data for the ops dashboard tests: two days of production traffic from devices in
three dialect regions, a model version change, drift-job results with confidence intervals, alerts, and
complaints (one with HTML in its text, one about consented audio with a reviewed transcript)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from _web_helpers import tone_wav
from sqlalchemy.orm import Session

from collection.consent import grant_device_consent, record_production
from collection.ingest import ensure_speaker, ingest
from collection.models import (
    Alert,
    Device,
    Feedback,
    FeedbackUtterance,
    Label,
    LabelTask,
    ProductionUtterance,
    SliceMetric,
    utcnow,
)
from collection.store import AudioStore

V1, V2 = "voiceloop-asr/1", "voiceloop-asr/2"
SCRIPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
DIALECTS = ("standard", "gyeongsang", "jeolla")
REFERENCE, HYPOTHESIS = "거실 불 켜줘", "거실 물 켜"


@dataclass(frozen=True)
class OpsSeed:
    now: datetime
    utterances: int
    v2_since: datetime
    audio_feedback: str  # complaint about consented audio with a reviewed transcript
    script_feedback: str  # complaint whose text is an HTML/script injection attempt
    request_id: str  # the utterance of audio_feedback


def _utterance(i: int, at: datetime, dialect: str, version: str, rng: random.Random) -> ProductionUtterance:
    older = i % 4 == 0
    return ProductionUtterance(
        request_id=f"req-seed-{i:05d}", device_id=f"dev-{dialect}-{i % 2}", model_version=version,
        confidence=round(rng.uniform(0.3, 0.99), 3), latency_ms=round(rng.lognormvariate(4.2, 0.35), 1),
        created_at=at, channel="http", route="champion", duration_s=2.0, dialect=dialect,
        age_band="60s" if older else "30s", environment="quiet", device_type="speaker", snr_db=rng.uniform(5, 30),
        in_grammar=rng.random() > 0.1, ended_by="max_seconds" if i % 37 == 0 else None)


def seed_ops(session: Session, store: AudioStore, *, now: datetime | None = None, per_hour: int = 6,
             hours: int = 48) -> OpsSeed:
    """Seed the catalog (commits). Traffic: ``per_hour`` utterances per hour over the last ``hours``; V2
    takes over half-way. WER per dialect hourly (jeolla worsening) with an open alert on jeolla."""
    now = (now or utcnow()).replace(microsecond=0)
    rng = random.Random(7)
    start = now - timedelta(hours=hours)
    v2_since = start + timedelta(hours=hours // 2)
    for d in DIALECTS:
        for k in range(2):
            session.add(Device(id=f"dev-{d}-{k}", device_type="speaker", region=d, age_band="60s" if k else "30s",
                               environment="quiet"))
    session.flush()
    n = 0
    for h in range(hours):
        for j in range(per_hour):
            at = start + timedelta(hours=h, seconds=(j + 0.5) * 3600 / per_hour)
            session.add(_utterance(n, at, DIALECTS[n % 3], V2 if at >= v2_since else V1, rng))
            n += 1
    # One utterance whose audio was kept (the owner allows training and human review) and transcribed.
    grant_device_consent(session, device_id="dev-jeolla-0", text_version="v1", scope_training=True,
                         scope_human_review=True, retention_days=365)
    heard_at = now - timedelta(hours=2)
    utt = record_production(session, store, request_id="req-seed-audio", device_id="dev-jeolla-0",
                            audio=tone_wav(3), hypothesis=HYPOTHESIS, confidence=0.41, latency_ms=80.0,
                            model_version=V2, language="ko")
    assert utt.recording_id is not None, "the tone clip must pass QC"
    utt.created_at, utt.dialect, utt.age_band, utt.environment, utt.device_type = (heard_at, "jeolla", "60s", "quiet",
                                                                                   "speaker")
    utt.route, utt.snr_db, utt.in_grammar = "champion", 8.0, False
    task = LabelTask(recording_id=utt.recording_id, reason="voc", status="submitted")
    session.add(task)
    session.flush()
    session.add(Label(task_id=task.id, recording_id=utt.recording_id, text=REFERENCE, status="reviewed",
                      reviewed_at=now - timedelta(hours=1)))
    # Collected for the data plan (tiny): two recordings in the 30s/female/standard/quiet cell, one reviewed.
    speaker = ensure_speaker(session, source="synthetic", external_id="ops-seed-persona", persona="synthetic",
                             age_band="30s", gender="female", dialect="standard")
    for k in range(2):
        done = ingest(session, store, tone_wav(10 + k), source="synthetic", speaker_id=speaker.id,
                      external_id=f"ops-seed:{k}", text=REFERENCE, environment="quiet")
        assert done.ok, done
        if k == 0:
            task = LabelTask(recording_id=done.recording_id, status="submitted")
            session.add(task)
            session.flush()
            session.add(Label(task_id=task.id, recording_id=done.recording_id, text=REFERENCE, status="reviewed"))
    # Drift results: hourly WER per dialect (all versions) and per version; jeolla drifts up.
    for h in range(1, hours + 1):
        end = start + timedelta(hours=h)
        for d in DIALECTS:
            wer = 0.08 + (0.10 * h / hours if d == "jeolla" else 0.01 * math.sin(h / 3))
            for version in ("", V1 if end <= v2_since else V2):
                session.add(SliceMetric(window_end=end, window_s=3600, slice_key="dialect", slice_value=d,
                                        model_version=version, metric="wer", value=wer, ci_low=wer - 0.02,
                                        ci_high=wer + 0.02, n=40))
        session.add(SliceMetric(window_end=end, window_s=3600, slice_key="all", slice_value="all", model_version="",
                                metric="wer", value=0.1, ci_low=0.09, ci_high=0.11, n=120))
    session.add(Alert(kind="wer_above_baseline", slice_key="dialect", slice_value="jeolla", metric="wer", value=0.17,
                      baseline=0.08, threshold=0.12, window_end=start + timedelta(hours=hours - 3), status="open"))
    # Complaints.
    audio_fb = Feedback(request_id="req-seed-audio", device_id="dev-jeolla-0", category="misrecognized",
                        text="불 켜랬는데 물이래요", status="new", source="device", causes=["low_confidence",
                                                                                   "slice:dialect=jeolla"],
                        priority=55, created_at=heard_at + timedelta(minutes=1), dialect="jeolla", age_band="60s",
                        environment="quiet", device_type="speaker")
    script_fb = Feedback(request_id="req-seed-00004", device_id="dev-gyeongsang-1", category="wrong_action",
                         text=SCRIPT, status="triaged", source="device", causes=["out_of_grammar"], priority=50,
                         created_at=now - timedelta(hours=5), dialect="gyeongsang", age_band="30s",
                         environment="quiet", device_type="speaker")
    session.add_all([audio_fb, script_fb])
    for i, (status, cat, dialect) in enumerate((("new", "no_response", "standard"), ("closed", "other", "standard"),
                                                ("fixed", "too_slow", "gyeongsang"))):
        session.add(Feedback(device_id=f"dev-{dialect}-0", category=cat, text=f"complaint {i}", status=status,
                             source="ops", causes=[], priority=10 - i, created_at=now - timedelta(hours=10 + i),
                             dialect=dialect, age_band="30s", environment="quiet", device_type="speaker"))
    session.flush()
    session.add_all([FeedbackUtterance(feedback_id=audio_fb.id, request_id="req-seed-audio"),
                     FeedbackUtterance(feedback_id=script_fb.id, request_id="req-seed-00004")])
    session.commit()
    return OpsSeed(now, n + 1, v2_since, audio_fb.id, script_fb.id, "req-seed-audio")
