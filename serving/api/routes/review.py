"""The reviewer's page: submitted labels (both transcripts and their CER for pairs) to accept, correct or reject."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from collection import labeling, workbench
from collection.labeling import LabelingError
from monitoring import voc
from serving.api.deps import ReviewerUser, SessionDep, http_error, render

router = APIRouter(tags=["review"])
ACTIONS = ("accept", "reject")


@router.get("/review")
def review_page(request: Request, user: ReviewerUser, session: SessionDep, done: str | None = None):
    return render(request, "review.html", items=workbench.review_items(session), done=done)


@router.post("/review/{label_id}")
def review_label(label_id: str, user: ReviewerUser, session: SessionDep, action: Annotated[str, Form()],
                 text: Annotated[str | None, Form()] = None, note: Annotated[str | None, Form()] = None):
    """``action`` accept (``text``, when given, corrects the transcript) or reject."""
    if action not in ACTIONS:
        raise HTTPException(422, f"action must be one of {list(ACTIONS)}, got {action!r}")
    accept = action == "accept"
    try:
        labeling.review(session, label_id, user, accept=accept, text=text if accept else None, note=note or None)
    except LabelingError as e:
        raise http_error(e) from e
    if accept:  # complaints waiting for this transcript move to labeled (idempotent; jobs call it too)
        voc.sync_labeled(session, actor=user.username)
    session.commit()
    return RedirectResponse(f"/review?done={label_id}", status_code=303)
