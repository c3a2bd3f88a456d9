"""One production request as the catalog holds it after serving and labeling: what a model answered and,
when its audio was kept, the reviewed transcript. Shared by the rollout tests (tests/serving) and the
deploy DAG's stand-in traffic (tests/dags)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from collection.models import Label, LabelTask, ProductionUtterance, Recording, utcnow


def labeled_request(session, *, version: str, ref: str, hyp: str | None, labeled: bool = True,  # noqa: ANN001
                    latency_ms: float = 80.0, confidence: float | None = 0.9, dialect: str | None = "standard",
                    age_band: str | None = "60s", channel: str = "http", route: str | None = None,
                    at: datetime | None = None, reviewed_after: timedelta = timedelta(0)) -> str:
    """A request answered by ``version`` (``model/version``) at ``at`` (now); with ``labeled``, its audio
    kept and reviewed ``reviewed_after`` later. Returns the request id."""
    at = at or utcnow()
    rid = f"req-{uuid.uuid4().hex[:16]}"
    recording_id = None
    if labeled:
        rec = Recording(sha256=uuid.uuid4().hex * 2, uri=f"file:///{rid}.wav", sample_rate=16000, duration=2.0,
                        source="production", language="ko", external_id=rid)
        session.add(rec)
        session.flush()
        task = LabelTask(recording_id=rec.id, status="done")
        session.add(task)
        session.flush()
        session.add(Label(task_id=task.id, recording_id=rec.id, text=ref, status="reviewed",
                          reviewed_at=at + reviewed_after))
        recording_id = rec.id
    session.add(ProductionUtterance(
        request_id=rid, device_id="dev-1", model_version=version, hypothesis=hyp, confidence=confidence,
        latency_ms=latency_ms, recording_id=recording_id, created_at=at, channel=channel, route=route,
        dialect=dialect, age_band=age_band, environment=None, device_type="speaker"))
    session.flush()
    return rid
