"""Admin pages: users, queue sizes, QC counts, the labeler report; create users; queue and assign tasks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from collection import labeling, workbench
from collection.labeling import LabelingError
from collection.models import ROLES, User
from collection.users import create_user
from serving.api.deps import AdminUser, SessionDep, SettingsDep, http_error, render

router = APIRouter(tags=["admin"], prefix="/admin")


@router.get("")
def admin_page(request: Request, user: AdminUser, session: SessionDep, notice: str | None = None):
    return render(request, "admin.html", overview=workbench.overview(session), roles=ROLES, notice=notice)


@router.post("/users")
def add_user(user: AdminUser, session: SessionDep, username: Annotated[str, Form()], role: Annotated[str, Form()],
             password: Annotated[str, Form()]):
    try:
        created = create_user(session, username, role, password)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
    session.commit()
    return RedirectResponse(f"/admin?notice=user+{created.username}+({created.role})+ready", status_code=303)


@router.post("/tasks/assign")
def assign_tasks(user: AdminUser, session: SessionDep, settings: SettingsDep,
                 per_labeler: Annotated[int | None, Form(ge=0)] = None):
    """Queue every recording people may listen to that has no task yet, then deal open tasks to the
    active labelers (topping each up to ``per_labeler`` when given)."""
    labelers = list(session.scalars(select(User).where(User.role == "labeler", User.active.is_(True))))
    try:
        queued = labeling.create_tasks(session, double_share=settings.double_label_share)
        assigned = labeling.assign(session, labelers, per_labeler=per_labeler)
    except LabelingError as e:
        raise http_error(e) from e
    session.commit()
    return RedirectResponse(f"/admin?notice={len(queued)}+task(s)+queued,+{assigned}+assigned", status_code=303)
