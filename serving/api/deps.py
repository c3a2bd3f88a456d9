"""Dependencies shared by the routes, as ``Annotated`` aliases (the full-stack-fastapi-template way).

- ``SettingsDep``, ``StoreDep``, ``PlanDep``, ``ConsentFormDep``: what ``create_app`` was built with.
- ``SessionDep``: one catalog session per request (routes commit; anything uncommitted is rolled back).
- ``CurrentUser``: the logged-in user, from ``Authorization: Bearer <token>`` or the session cookie;
  ``LabelerUser`` / ``ReviewerUser`` / ``AdminUser`` add the role check (403 otherwise).
- ``ContributorId``: the speaker id inside a recording-page contributor token (form field ``token``).
- ``CurrentDevice``: the device whose key is in ``Authorization: Bearer vlk_…`` (or ``X-Device-Key``),
  rate limited per device (429); ``ServiceDep``: the recognition service (503 until a model is served).

A missing, forged or expired token is a 401; :mod:`serving.api.main` turns it into a redirect to
``/login`` for a browser asking for a page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from collection.contributors import ConsentForm, ContributorError
from collection.dataplan import DataPlan
from collection.db import connect
from collection.labeling import LabelingError
from collection.models import Device, User
from collection.store import AudioStore
from collection.users import get_user, verify_token
from monitoring import metrics
from serving.devices import KEY_PREFIX, authenticate_device
from serving.ratelimit import RateLimiter
from serving.recognition import RecognitionService
from serving.web import TEMPLATES_DIR
from voiceloop.settings import Settings

SESSION_COOKIE = "voiceloop_session"
CONTRIBUTOR_AUDIENCE = "contributor"
# LabelingError / ContributorError codes → HTTP status.
ERROR_STATUS = {"not_found": 404, "forbidden": 403, "conflict": 409, "invalid": 422}
ROLE_HOME = {"labeler": "/label", "reviewer": "/review", "admin": "/admin", "ops": "/ops"}

templates = Jinja2Templates(directory=TEMPLATES_DIR)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_db(settings: SettingsDep) -> Iterator[Session]:
    with connect(settings.catalog)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def get_store(request: Request) -> AudioStore:
    return request.app.state.store


StoreDep = Annotated[AudioStore, Depends(get_store)]


def get_plan(request: Request) -> DataPlan:
    return request.app.state.plan


PlanDep = Annotated[DataPlan, Depends(get_plan)]


def get_consent_form(request: Request) -> ConsentForm:
    return request.app.state.consent_form


ConsentFormDep = Annotated[ConsentForm, Depends(get_consent_form)]


def request_token(request: Request) -> str | None:
    """The bearer token of an API client, else the browser's session cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.cookies.get(SESSION_COOKIE)


def get_optional_user(request: Request, session: SessionDep, settings: SettingsDep) -> User | None:
    """The logged-in user (for the navigation on public pages), or None."""
    user_id = verify_token(request_token(request), settings.session_secret)
    user = get_user(session, user_id) if user_id else None
    request.state.user = user  # templates show who is logged in
    return user


OptionalUser = Annotated[User | None, Depends(get_optional_user)]


def get_current_user(user: OptionalUser) -> User:
    if user is None:
        raise HTTPException(401, "not logged in, or the session expired: log in again",
                            headers={"WWW-Authenticate": "Bearer"})
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(*roles: str) -> Callable[[User], User]:
    def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise HTTPException(403, f"this needs the role {' or '.join(roles)}; {user.username!r} is a {user.role}")
        return user

    return check


LabelerUser = Annotated[User, Depends(require_role("labeler"))]
ReviewerUser = Annotated[User, Depends(require_role("reviewer", "admin"))]
AdminUser = Annotated[User, Depends(require_role("admin"))]
OpsUser = Annotated[User, Depends(require_role("ops", "admin"))]  # the ops dashboard and VOC triage


def get_contributor_id(settings: SettingsDep, token: Annotated[str, Form()] = "") -> str:
    speaker_id = verify_token(token, settings.session_secret, audience=CONTRIBUTOR_AUDIENCE)
    if speaker_id is None:
        raise HTTPException(401, "the contributor token is missing, invalid or expired: "
                                 "reload the page and give consent again")
    return speaker_id


ContributorId = Annotated[str, Depends(get_contributor_id)]


def http_error(error: LabelingError | ContributorError) -> HTTPException:
    """The HTTP answer to a library error (its ``code`` picks the status)."""
    detail: object = str(error)
    if isinstance(error, ContributorError) and error.code == "invalid":  # a form: every problem, one per line
        detail = {"message": str(error), "problems": error.problems}
    return HTTPException(ERROR_STATUS.get(error.code, 422), detail)


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not an API client, not a script's fetch)."""
    return "text/html" in request.headers.get("accept", "") and "authorization" not in request.headers


def render(request: Request, name: str, status_code: int = 200, **context: object):  # noqa: ANN201
    """A page from serving/web/templates, with the logged-in user (if any) for the navigation."""
    context.setdefault("user", getattr(request.state, "user", None))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


# -- the device API ---------------------------------------------------------------------------
DEVICE_KEY_HEADER = "x-device-key"


def device_key(headers) -> str | None:  # noqa: ANN001 - Starlette Headers (HTTP and WebSocket)
    """A device's key: ``Authorization: Bearer vlk_…`` or ``X-Device-Key: vlk_…``."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip().startswith(KEY_PREFIX):
        return value.strip()
    return headers.get(DEVICE_KEY_HEADER)


def get_service(request: Request) -> RecognitionService:
    service = request.app.state.recognition
    if service is None or not service.models.ready:
        raise HTTPException(503, "no model is being served yet (models:/<name>@champion is not set)",
                            headers={"Retry-After": "10"})
    return service


ServiceDep = Annotated[RecognitionService, Depends(get_service)]


def authenticate_request(catalog: sessionmaker[Session], headers, limiter: RateLimiter) -> Device:  # noqa: ANN001
    """The calling device, rate limited. 401 for a missing/wrong/expired/revoked key, 429 past the limit.
    Uses a session of its own, closed at once: on SQLite a session held for the whole request would hold
    the write lock that recording the result needs."""
    with catalog() as session:
        device = authenticate_device(session, device_key(headers))
    if device is None:
        metrics.AUTH_FAILURES.inc()
        raise HTTPException(401, "missing, unknown, expired or revoked device key "
                                 "(send Authorization: Bearer vlk_…)", headers={"WWW-Authenticate": "Bearer"})
    wait = limiter.acquire(device.id)
    if wait:
        metrics.RATE_LIMITED.inc()
        raise HTTPException(429, f"rate limit of device {device.id!r} exceeded; retry in {wait:.1f} s",
                            headers={"Retry-After": str(max(1, round(wait)))})
    return device


def get_device(request: Request) -> Device:
    return authenticate_request(request.app.state.catalog, request.headers, request.app.state.rate_limiter)


CurrentDevice = Annotated[Device, Depends(get_device)]
