"""The ops VOC API (JSON) under ``/ops/api/voc``: log a call-centre complaint, the inbox, one complaint,
triage, send to labeling, change status, the audio behind it, the VOC rate per slice.

Ops users and admins only (``OpsUser``: the workbench's session cookie or ``Authorization: Bearer``
from ``/api/token``). Each route parses and delegates to :mod:`monitoring.voc` /
:mod:`monitoring.voc_queries`. Complaint text comes back exactly as stored, as JSON data; a page that
shows it escapes it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from collection.models import utcnow
from monitoring import voc, voc_queries
from monitoring.timerange import MonitoringError
from monitoring.voc import CATEGORIES, MAX_TEXT, STATUSES, TriageConfig
from serving.api.deps import OpsUser, SessionDep, SettingsDep, StoreDep

router = APIRouter(prefix="/ops/api/voc", tags=["ops: VOC"])
VOC_STATUS = {"not_found": 404, "forbidden": 403, "conflict": 409, "invalid": 422}


class ComplaintIn(BaseModel):
    device_id: str = Field(max_length=64)
    occurred_at: datetime = Field(description="when the customer says it happened (ISO 8601; no zone = UTC)")
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    text: str | None = Field(default=None, max_length=MAX_TEXT, description="what the customer said")


class StatusIn(BaseModel):
    status: Literal[STATUSES]  # type: ignore[valid-type]
    note: str | None = Field(default=None, max_length=MAX_TEXT)
    fixed_in_model_version: str | None = Field(default=None, max_length=128,
                                               description="with status fixed: the model version that fixes it")


def _error(e: MonitoringError) -> HTTPException:
    return HTTPException(VOC_STATUS[e.code], str(e))


def _detail(session: SessionDep, feedback_id: str, config: TriageConfig) -> dict[str, Any]:
    out = voc_queries.feedback_detail(session, feedback_id, config)
    for utt in out["linked"]:
        utt["audio_url"] = f"{router.prefix}/{feedback_id}/audio/{utt['request_id']}" if utt["audio"] else None
    return out


@router.post("", status_code=201)
def log_complaint(body: ComplaintIn, user: OpsUser, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """A complaint taken by phone or mail about a device around a time: links that device's utterances
    within ±``VOC_LINK_WINDOW_MINUTES`` and tags likely causes. Returns the complaint in detail."""
    config = TriageConfig.from_settings(settings)
    try:
        fb = voc.log_complaint(session, device_id=body.device_id, occurred_at=body.occurred_at,
                               category=body.category, text=body.text, actor=user.username, config=config)
        session.commit()
        return _detail(session, fb.id, config)
    except MonitoringError as e:
        raise _error(e) from e


@router.get("")
def inbox(user: OpsUser, session: SessionDep,
          slice_key: str | None = None, slice_value: str | None = None, cause: str | None = None,
          status: str | None = None, category: str | None = None, source: str | None = None,
          device_id: Annotated[str | None, Query(max_length=64)] = None,
          since: datetime | None = None, until: datetime | None = None,
          limit: Annotated[int, Query(ge=1, le=voc_queries.MAX_PAGE)] = 50,
          offset: Annotated[int, Query(ge=0)] = 0, facets: bool = False) -> JSONResponse:
    """Complaints, highest priority first, each with its linked utterances (hypothesis, reference where people
    may listen, their character diff). Filters: ``slice_key``+``slice_value`` (e.g. dialect=gyeongsang;
    ``unknown`` = no profile value), ``cause`` (low_confidence, low_snr, out_of_grammar, endpoint_cutoff or
    slice:<key>=<value>), ``status`` (or ``open``: new, triaged, labeled), ``category``, ``source``,
    ``device_id``, ``since``/``until`` (when it came in; at most 366 days apart). ``facets=true`` adds counts
    per status, cause, category, source and slice value for filter menus."""
    filters = voc_queries.FeedbackFilter(slice_key=slice_key, slice_value=slice_value, cause=cause, status=status,
                                         category=category, source=source, device_id=device_id, since=since,
                                         until=until)
    try:
        page = voc_queries.list_feedback(session, filters, limit=limit, offset=offset, facets=facets)
    except MonitoringError as e:
        raise _error(e) from e
    return JSONResponse(page.to_dict())  # JSON-ready already


@router.get("/rate")
def rate(user: OpsUser, session: SessionDep, since: datetime | None = None, until: datetime | None = None,
         bucket_s: Annotated[int, Query(ge=3600, description="whole hours, in seconds (3600 = hourly)")] = 86400,
         slice_key: str = "all") -> JSONResponse:
    """VOC per 1,000 utterances per time bucket and slice value (``slice_key``: all, dialect, age_band,
    environment, device_type). Defaults: the 7 days up to now, daily buckets."""
    until = until or utcnow()
    since = since or until - timedelta(days=7)
    try:
        rows = voc_queries.voc_rate(session, since=since, until=until, bucket_s=bucket_s, slice_key=slice_key)
        session.commit()  # the hourly rollups of closed hours it had to compute (a cache fill)
    except MonitoringError as e:
        raise _error(e) from e
    # JSONResponse: the rows are JSON-ready already (a month hourly by room is thousands of them, and
    # FastAPI's own encoder would walk them a second time)
    return JSONResponse({"since": since.isoformat(), "until": until.isoformat(), "bucket_s": bucket_s,
                         "slice_key": slice_key, "rows": [r.to_dict() for r in rows]})


@router.get("/{feedback_id}")
def detail(feedback_id: str, user: OpsUser, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """The complaint, its history and its utterances (hypothesis, confidence, causes, features; an
    ``audio_url`` only where the owner's consent allows human review; the reviewed reference transcript
    when one exists)."""
    try:
        return _detail(session, feedback_id, TriageConfig.from_settings(settings))
    except MonitoringError as e:
        raise _error(e) from e


@router.post("/{feedback_id}/triage")
def triage(feedback_id: str, user: OpsUser, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Re-tag causes and priority; new → triaged."""
    config = TriageConfig.from_settings(settings)
    try:
        voc.triage(session, feedback_id, actor=user.username, config=config)
        session.commit()
        return _detail(session, feedback_id, config)
    except MonitoringError as e:
        raise _error(e) from e


@router.post("/{feedback_id}/label")
def send_to_labeling(feedback_id: str, user: OpsUser, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Queue the complaint's consented audio for transcription (reason voc, by priority). 409 with the
    reason when there is no audio people may listen to."""
    config = TriageConfig.from_settings(settings)
    try:
        task = voc.send_to_labeling(session, feedback_id, actor=user.username, config=config,
                                    double_share=settings.double_label_share)
        session.commit()
        return {"label_task_id": task.id, "recording_id": task.recording_id, "priority": task.priority,
                "feedback": _detail(session, feedback_id, config)}
    except MonitoringError as e:
        raise _error(e) from e


@router.post("/{feedback_id}/status")
def change_status(feedback_id: str, body: StatusIn, user: OpsUser, session: SessionDep,
                  settings: SettingsDep) -> dict[str, Any]:
    """Move along the workflow (new → triaged → labeled → fixed, or closed; fixed/closed reopen to
    triaged). 409 names the moves allowed from the current status."""
    try:
        voc.set_status(session, feedback_id, body.status, actor=user.username, note=body.note,
                       fixed_in_model_version=body.fixed_in_model_version)
        session.commit()
        return _detail(session, feedback_id, TriageConfig.from_settings(settings))
    except MonitoringError as e:
        raise _error(e) from e


@router.get("/{feedback_id}/audio/{request_id}")
def audio(feedback_id: str, request_id: str, user: OpsUser, session: SessionDep, store: StoreDep) -> Response:
    """The audio of one of the complaint's utterances, when the owner's consent allows human review."""
    try:
        recording = voc_queries.linked_audio(session, feedback_id, request_id)
    except MonitoringError as e:
        raise _error(e) from e
    headers = {"Cache-Control": "no-store"}  # a withdrawn consent must not leave copies in browser caches
    path = store.local_path(recording.uri)
    if path is not None and path.is_file():
        return FileResponse(path, media_type="audio/wav", headers=headers)
    try:
        return Response(store.get(recording.uri), media_type="audio/wav", headers=headers)
    except FileNotFoundError as e:
        raise HTTPException(404, f"the audio of request {request_id!r} is missing from the store") from e
