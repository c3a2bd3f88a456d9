"""The FastAPI app: the recording page, the labeling workbench and (later) the device API.

``create_app(settings)`` wires settings, the catalog, the audio store and the data plan the
recording page collects for into one app; every page and endpoint lives in a router under
``serving/api/routes`` (one module per area), so adding the device API is one more router.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from collection.contributors import consent_form
from collection.dataplan import DataPlan, load_dataplan
from collection.db import connect
from collection.store import AudioStore
from serving.api.deps import render, wants_html
from serving.api.limits import BodyLimit, SameOrigin
from serving.api.routes import admin, auth, labeling, record, review
from serving.web import STATIC_DIR
from voiceloop.settings import Settings, get_settings

ROUTERS = (auth.router, record.router, labeling.router, review.router, admin.router)
DEFAULT_PLAN = "demo"


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Browsers get pages (and a login redirect for 401); API clients get the usual JSON."""
    if not wants_html(request):
        return await http_exception_handler(request, exc)
    if exc.status_code == 401:
        target = request.url.path if request.method == "GET" else "/"
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    return render(request, "error.html", status_code=exc.status_code, status=exc.status_code, detail=exc.detail)


async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    if not wants_html(request):
        return await request_validation_exception_handler(request, exc)
    problems = [f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in exc.errors()]
    return render(request, "error.html", status_code=422, status=422, detail={"problems": problems})


def create_app(settings: Settings | None = None, *, plan: str | Path | DataPlan = DEFAULT_PLAN) -> FastAPI:
    """The web app. ``plan``: the data plan the recording page collects for (name, YAML path or plan).

    Fails at start, not on the first request, when the secret key is missing outside development,
    the plan is invalid, or the catalog cannot be reached (it is migrated to the newest schema here).
    """
    settings = settings or get_settings()
    settings.session_secret  # noqa: B018 - raises outside development without VOICELOOP_SECRET_KEY
    data_plan = load_dataplan(plan)
    connect(settings.catalog)
    app = FastAPI(title="voiceloop", summary="Recording page, labeling workbench and (later) the device API.")
    app.state.settings = settings
    app.state.store = AudioStore(settings.audio_store)
    app.state.plan = data_plan
    app.state.consent_form = consent_form(data_plan)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(SameOrigin)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        app.include_router(router)
    return app
