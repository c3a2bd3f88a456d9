"""Liveness, readiness and Prometheus metrics (unauthenticated: scraped and probed from inside the cluster)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> Response:
    """Ready for traffic: the catalog answers and, when serving models, a champion is loaded."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        with state.catalog() as session:
            session.execute(text("SELECT 1"))
        checks["catalog"] = "ok"
    except Exception as e:  # any driver error means not ready
        checks["catalog"] = f"error: {type(e).__name__}"
    service = state.recognition
    if service is not None:
        models = service.models
        checks["champion"] = models.champion.version if models.champion else "not loaded"
        if models.challenger:
            checks["challenger"] = models.challenger.version
    ok = checks["catalog"] == "ok" and (service is None or service.models.ready)
    return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)


@router.get("/metrics")
def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
