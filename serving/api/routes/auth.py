"""Log in and out: a signed session cookie for browsers, a bearer token for API clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from collection.users import DEFAULT_TOKEN_SECONDS, authenticate, issue_token
from serving.api.deps import ROLE_HOME, SESSION_COOKIE, CurrentUser, OptionalUser, SessionDep, SettingsDep, render

router = APIRouter(tags=["auth"])


def _local(target: str | None, fallback: str) -> str:
    """Only same-site paths: ``next=//evil.example`` must not turn the login into an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return fallback


@router.get("/")
def index(request: Request, user: OptionalUser):
    return render(request, "index.html", home=ROLE_HOME.get(user.role) if user else None)


@router.get("/login")
def login_page(request: Request, user: OptionalUser, next: str | None = None):
    return render(request, "login.html", next=_local(next, ""), error=None)


@router.post("/login")
def login(request: Request, session: SessionDep, settings: SettingsDep, username: Annotated[str, Form()],
          password: Annotated[str, Form()], next: Annotated[str, Form()] = ""):
    user = authenticate(session, username, password)
    if user is None:
        return render(request, "login.html", status_code=401, next=_local(next, ""), user=None,
                      error="Wrong username or password (or the account is deactivated).")
    response = RedirectResponse(_local(next, ROLE_HOME[user.role]), status_code=303)
    response.set_cookie(SESSION_COOKIE, issue_token(user.id, settings.session_secret), max_age=DEFAULT_TOKEN_SECONDS,
                        httponly=True, samesite="lax", secure=settings.environment != "development")
    return response


@router.post("/logout")
def logout():
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax")
    return response


@router.post("/api/token")
def access_token(session: SessionDep, settings: SettingsDep, username: Annotated[str, Form()],
                 password: Annotated[str, Form()]) -> dict[str, object]:
    """Bearer token for API clients (``Authorization: Bearer <access_token>``)."""
    user = authenticate(session, username, password)
    if user is None:
        raise HTTPException(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    return {"access_token": issue_token(user.id, settings.session_secret), "token_type": "bearer",
            "expires_in": DEFAULT_TOKEN_SECONDS}


@router.get("/api/me")
def me(user: CurrentUser) -> dict[str, object]:
    return {"id": user.id, "username": user.username, "role": user.role, "simulated": user.simulated}
