"""The labeler's page: play the audio, edit the pre-label, flag, submit; the guideline; the audio itself."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

import markdown
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from collection import labeling, workbench
from collection.labeling import LabelingError
from collection.models import LABEL_FLAGS, LabelTask
from serving.api.deps import CurrentUser, LabelerUser, SessionDep, SettingsDep, StoreDep, http_error, render

router = APIRouter(tags=["labeling"])
SHORTCUT_FLAGS = dict(zip(("Alt+1", "Alt+2", "Alt+3"), LABEL_FLAGS, strict=True))


@lru_cache(maxsize=8)
def guidelines_html(language: str) -> str:
    return markdown.markdown(labeling.guidelines(language), extensions=["tables", "fenced_code"])


def _task_json(task: LabelTask) -> dict[str, object]:
    return {"task_id": task.id, "recording_id": task.recording_id, "audio_url": f"/audio/{task.recording_id}",
            "round": task.round, "priority": task.priority, "reason": task.reason, "prelabel": task.prelabel,
            "prelabel_confidence": task.prelabel_confidence, "language": task.recording.language}


@router.get("/label")
def label_page(request: Request, user: LabelerUser, session: SessionDep, task: str | None = None,
               done: str | None = None):
    """``task``: open this one of the labeler's tasks; otherwise the next one (claiming unassigned work)."""
    try:
        current = labeling.get_task(session, task, user) if task else labeling.next_task(session, user)
    except LabelingError as e:
        raise http_error(e) from e
    session.commit()  # a claimed task stays claimed
    if current is not None and current.status != "open":
        current = None
    guide = None
    if current is not None:
        try:
            guide = guidelines_html(current.recording.language)
        except LabelingError:
            guide = None  # no guideline for this language yet: the page still works
    return render(request, "label.html", task=current, queue=labeling.tasks_for(session, user, limit=20),
                  flags=LABEL_FLAGS, shortcuts=SHORTCUT_FLAGS, guidelines=guide, done=done)


@router.get("/api/label/next")
def next_task(user: LabelerUser, session: SessionDep) -> dict[str, object]:
    task = labeling.next_task(session, user)
    session.commit()
    return {"task": _task_json(task) if task else None}


@router.post("/label/{task_id}")
def submit_label(task_id: str, user: LabelerUser, session: SessionDep, text: Annotated[str, Form()] = "",
                 flags: Annotated[list[str], Form()] = [],  # noqa: B006
                 seconds_spent: Annotated[float | None, Form()] = None):
    try:
        labeling.submit(session, task_id, user, text, flags=flags, seconds_spent=seconds_spent)
    except LabelingError as e:
        if e.code == "conflict":
            e = LabelingError("conflict", f"{e} — perhaps from another tab. Nothing was lost: the first "
                                          "submission counts. Carry on with your next task.")
        raise http_error(e) from e
    session.commit()
    return RedirectResponse(f"/label?done={task_id}", status_code=303)


@router.get("/guidelines")
def guidelines_page(request: Request, user: CurrentUser, settings: SettingsDep, language: str | None = None):
    language = language or settings.language
    try:
        body = guidelines_html(language)
    except LabelingError as e:
        raise http_error(e) from e
    return render(request, "guidelines.html", body=body, language=language)


@router.get("/audio/{recording_id}")
def audio(recording_id: str, user: CurrentUser, session: SessionDep, store: StoreDep) -> Response:
    """The stored WAV, for the assigned labeler, reviewers and admins (when consent allows human review)."""
    try:
        recording = workbench.audio_for(session, user, recording_id)
    except LabelingError as e:
        raise http_error(e) from e
    # no-store: a deletion or a withdrawn consent must not leave copies in browser caches
    headers = {"Cache-Control": "no-store"}
    path = store.local_path(recording.uri)
    if path is not None and path.is_file():
        return FileResponse(path, media_type="audio/wav", headers=headers)  # supports Range (seeking)
    try:
        return Response(store.get(recording.uri), media_type="audio/wav", headers=headers)
    except FileNotFoundError as e:
        raise HTTPException(404, f"the audio of {recording_id} is missing from the store") from e
