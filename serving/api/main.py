"""The FastAPI app: the device API, the recording page and the labeling workbench.

``create_app(settings, models=…)`` wires settings, the catalog, the audio store, the data plan the
recording page collects for and the models that answer devices into one app; every page and
endpoint lives in a router under ``serving/api`` ``routes/`` (one module per area). Without
``models`` the device API answers 503 (the pages still work): that is how the web tests run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from monitoring.catalog_metrics import install_catalog_metrics
from serving.api.deps import render, wants_html
from serving.api.limits import BodyLimit, RequestMetrics, SameOrigin
from serving.api.routes import admin, auth, device, devices, health, labeling, ops, record, review, voc
from serving.audio_input import InputLimits
from serving.model_manager import ModelManager
from serving.ratelimit import RateLimiter
from serving.recognition import RecognitionService
from serving.streaming import StreamConfig
from serving.web import STATIC_DIR
from voiceloop.settings import Settings, get_settings

ROUTERS = (health.router, device.router, devices.router, auth.router, record.router, labeling.router,
           review.router, admin.router)
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


def create_app(settings: Settings | None = None, *, plan: str | Path | DataPlan = DEFAULT_PLAN,
               models: ModelManager | None = None) -> FastAPI:
    """The web app. ``plan``: the data plan the recording page collects for (name, YAML path or plan);
    ``models``: what answers devices (started and stopped with the app).

    Fails at start, not on the first request, when the secret key is missing outside development,
    the plan is invalid, or the catalog cannot be reached (it is migrated to the newest schema here).
    """
    settings = settings or get_settings()
    settings.session_secret  # noqa: B018 - raises outside development without VOICELOOP_SECRET_KEY
    data_plan = load_dataplan(plan)
    catalog = connect(settings.catalog)
    install_catalog_metrics(catalog, ttl_s=settings.catalog_metrics_ttl_s)  # drift results + alerts on /metrics
    store = AudioStore(settings.audio_store)
    service = None
    if models is not None:
        service = RecognitionService(models, catalog, store, language=settings.language, grammar=settings.grammar,
                                     erasure_secret=settings.erasure_secret)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if models is not None:
            models.start()
        yield
        if service is not None:
            models.stop()
            service.close()

    app = FastAPI(title="voiceloop", lifespan=lifespan,
                  summary="Device API (recognise, stream, feedback), recording page and labeling workbench.")
    app.state.settings = settings
    app.state.catalog = catalog
    app.state.store = store
    app.state.recognition = service
    app.state.rate_limiter = RateLimiter(settings.device_rate_per_second, settings.device_burst)
    app.state.feedback_limiter = RateLimiter(settings.feedback_rate_per_minute / 60, settings.feedback_burst)
    app.state.input_limits = InputLimits(max_seconds=settings.max_command_seconds)
    app.state.stream_config = StreamConfig(endpoint_silence_s=settings.endpoint_silence_seconds,
                                           max_seconds=settings.max_stream_seconds)
    app.state.plan = data_plan
    app.state.consent_form = consent_form(data_plan)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(SameOrigin)
    app.add_middleware(RequestMetrics)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(voc.router)  # the ops VOC API
    app.include_router(ops.router)  # the ops dashboard pages
    return app
