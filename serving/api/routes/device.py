"""The device API: recognise a command (HTTP or WebSocket stream), read a request back, send feedback.

Every route authenticates the device by its key and applies its rate limit (feedback has a bucket of
its own: a person complains a few times a minute at most); a device sees only its own requests
(another device's request id reads as "not found").
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from collection.models import Device
from monitoring import metrics
from monitoring.timerange import MonitoringError
from monitoring.voc import CATEGORIES, MAX_TEXT, TriageConfig, intake_device_feedback
from serving.api.deps import CurrentDevice, ServiceDep, SessionDep, SettingsDep, authenticate_request
from serving.audio_input import InputError, read_command_audio
from serving.recognition import Recognition, Utterance, device_slice, new_request_id
from serving.streaming import StreamError, StreamSession

router = APIRouter(prefix="/v1", tags=["device"])

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
FEEDBACK_CATEGORIES = CATEGORIES


class CommandOut(BaseModel):
    intent: str
    device: str | None
    room: str | None
    action: str | None
    value: int | str | None
    score: float = Field(description="1.0 = a grammar sentence exactly; lower = the closest one")


class RecognitionOut(BaseModel):
    request_id: str
    text: str | None = Field(description="what was recognised; reading a request back gives null unless the "
                                         "device owner's consent lets the service keep transcripts")
    confidence: float
    command: CommandOut | None = Field(description="the AI-speaker command, or null when out of grammar")
    model_version: str
    route: Literal["champion", "challenger"]
    latency_ms: float = Field(description="server time from audio received to result")
    duration_s: float


class FeedbackIn(BaseModel):
    request_id: str = Field(max_length=64)
    category: Literal[FEEDBACK_CATEGORIES]  # type: ignore[valid-type]
    text: str | None = Field(default=None, max_length=MAX_TEXT)


class FeedbackOut(BaseModel):
    feedback_id: str
    request_id: str
    status: str


def _request_id(given: str | None) -> str:
    if given is None:
        return new_request_id()
    if not REQUEST_ID.match(given):
        raise HTTPException(422, "X-Request-Id must be 1-64 of A-Z a-z 0-9 . _ : -")
    return given


async def _audio_bytes(request: Request) -> bytes:
    """The raw body (``Content-Type: audio/wav`` etc.) or the ``audio`` part of a multipart form."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        part = form.get("audio")
        if not isinstance(part, UploadFile):
            raise HTTPException(422, "multipart body needs a file part named 'audio'")
        return await part.read()
    return await request.body()


BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.post("/recognize", response_model=RecognitionOut, openapi_extra={
    "requestBody": {"content": {"audio/wav": BINARY, "audio/flac": BINARY}, "required": True}})
async def recognize(request: Request, device: CurrentDevice, service: ServiceDep,
                    x_request_id: Annotated[str | None, Header()] = None) -> dict:
    """One utterance (WAV/FLAC/OGG/WebM body, or multipart field ``audio``) → text + command.

    Send ``X-Request-Id`` to make a retry idempotent: the same id updates the same stored request.
    """
    request_id = _request_id(x_request_id)
    data = await _audio_bytes(request)

    def work() -> Recognition:
        wav = read_command_audio(data, request.app.state.input_limits)
        return service.recognize(Utterance(wav, device.id, request_id, data, device_slice=device_slice(device)),
                                 channel="http")

    try:
        result = await run_in_threadpool(work)
    except InputError as e:
        metrics.INPUT_REJECTED.labels("http", e.reason).inc()
        raise HTTPException(e.status, str(e), headers={"X-Error-Reason": e.reason}) from e
    except ValueError as e:  # the request id belongs to another device
        raise HTTPException(409, str(e)) from e
    return result.to_dict()


@router.get("/requests/{request_id}", response_model=RecognitionOut)
def read_request(request_id: str, device: CurrentDevice, service: ServiceDep) -> dict:
    row = service.lookup(request_id, device.id)
    if row is None:
        raise HTTPException(404, f"no request {request_id!r} from this device")
    return {"request_id": row.request_id, "text": row.hypothesis, "confidence": row.confidence or 0.0,
            "command": row.command, "model_version": row.model_version or "", "route": row.route or "champion",
            "latency_ms": row.latency_ms or 0.0, "duration_s": row.duration_s or 0.0}


def get_feedback_device(request: Request) -> Device:
    """The calling device, limited by the feedback bucket (``feedback_rate_per_minute``, ``feedback_burst``)."""
    return authenticate_request(request.app.state.catalog, request.headers, request.app.state.feedback_limiter)


FeedbackDevice = Annotated[Device, Depends(get_feedback_device)]
VOC_STATUS = {"not_found": 404, "forbidden": 403, "conflict": 409, "invalid": 422}


@router.post("/feedback", response_model=FeedbackOut, status_code=201, responses={
    200: {"description": "the same complaint was already taken in (a retry): the first one"},
    404: {"description": "no such request from this device"}, 429: {"description": "too many complaints"}})
def feedback(body: FeedbackIn, device: FeedbackDevice, session: SessionDep, settings: SettingsDep,
             response: Response) -> dict:
    """A complaint (VOC) about one of this device's requests. Sending the same complaint again (a retry)
    answers 200 with the first one instead of storing it twice."""
    try:
        row, created = intake_device_feedback(session, device_id=device.id, request_id=body.request_id,
                                              category=body.category, text=body.text,
                                              config=TriageConfig.from_settings(settings))
    except MonitoringError as e:
        raise HTTPException(VOC_STATUS[e.code], str(e)) from e
    session.commit()
    if not created:
        response.status_code = 200
    return {"feedback_id": row.id, "request_id": row.request_id, "status": row.status}


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    """Binary frames: 16 kHz mono PCM16 little-endian. Text frames: ``{"type": "end"}`` (or
    ``{"type": "start", "request_id": …}`` first). Out: ``{"type": "partial", "text"}`` per chunk and one
    ``{"type": "final", …RecognitionOut}`` at the end marker, after endpointing silence or at the
    maximum duration; errors: ``{"type": "error", "detail"}`` and close code 1008 (policy) / 1011."""
    app = websocket.app
    service = app.state.recognition
    try:
        device = authenticate_request(app.state.catalog, websocket.headers, app.state.rate_limiter)
    except HTTPException as e:
        await websocket.close(code=1008, reason=str(e.detail)[:120])
        return
    if service is None or not service.models.ready:
        await websocket.close(code=1013, reason="no model is being served yet")
        return
    await websocket.accept()
    session_ = None
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                if session_ is None:
                    session_ = StreamSession(service, device.id, config=app.state.stream_config,
                                             device_slice=device_slice(device))
                partial = await run_in_threadpool(session_.accept, message["bytes"])
                if session_.ended_by:
                    break
                await websocket.send_json({"type": "partial", "text": partial})
                continue
            control = _control(message.get("text"))
            if control.get("type") == "start" and session_ is None:
                session_ = StreamSession(service, device.id, _request_id(control.get("request_id")),
                                         app.state.stream_config, device_slice=device_slice(device))
            elif control.get("type") == "end":
                break
            else:
                raise StreamError(f"unexpected message {control!r}; send binary PCM16, then {{\"type\": \"end\"}}")
        if session_ is None:
            raise StreamError("the stream ended before any audio arrived")
        result = await run_in_threadpool(session_.finish)
        await websocket.send_json({"type": "final", "ended_by": session_.ended_by, **result.to_dict()})
        await websocket.close()
    except WebSocketDisconnect:
        return  # the device went away: nothing was recognised, nothing stored
    except (StreamError, HTTPException, ValueError) as e:
        metrics.INPUT_REJECTED.labels("ws", "stream").inc()
        detail = getattr(e, "detail", None) or str(e)
        await websocket.send_json({"type": "error", "detail": detail})
        await websocket.close(code=1008)


def _control(text: str | None) -> dict:
    try:
        value = json.loads(text or "")
    except json.JSONDecodeError as e:
        raise StreamError(f"a text frame must be JSON like {{\"type\": \"end\"}} ({e})") from e
    if not isinstance(value, dict):
        raise StreamError("a text frame must be a JSON object")
    return value
