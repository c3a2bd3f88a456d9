"""The ops dashboard: Overview, Drift, VOC inbox, Data and Releases pages, and the JSON behind them.

Ops users and admins only (``OpsUser``). Each route parses the query and calls :mod:`monitoring.dashboard`
/ :mod:`monitoring.voc_queries`; the charts come from :mod:`monitoring.charts`. The inbox's actions (send to
labeling, close) and its audio are the VOC API's (``/ops/api/voc…``, serving/api/routes/voc.py).
Times: ``since``/``until`` take ``24h``, ``7d``, ``now`` or ISO 8601 (docs/monitoring.md).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from collection.dataplan import DATAPLAN_DIR, DataPlan, DataPlanError, load_dataplan
from monitoring import charts, dashboard, voc_queries
from monitoring.slices import SLICE_KEYS
from monitoring.timerange import MonitoringError, TimeRange
from serving.api.deps import ERROR_STATUS, OpsUser, PlanDep, SessionDep, SettingsDep, render
from voiceloop.settings import Settings

router = APIRouter(prefix="/ops", tags=["ops dashboard"])
PLAN_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PAGE = 25
Since = Annotated[str | None, Query(max_length=40, description="24h, 7d, now or ISO 8601 (default: a day back)")]
Until = Annotated[str | None, Query(max_length=40, description="the end (default: now)")]


def _error(e: MonitoringError) -> HTTPException:
    return HTTPException(ERROR_STATUS.get(e.code, 422), str(e))


def _range(since: str | None, until: str | None, **kwargs: Any) -> TimeRange:  # noqa: ANN401
    try:
        return TimeRange.parse(since, until, **kwargs)
    except MonitoringError as e:
        raise _error(e) from e


def _overview(session: Session, since: str | None, until: str | None) -> dashboard.Overview:
    ov = dashboard.overview(session, _range(since, until))
    session.commit()  # the rollups of closed hours it had to compute
    return ov


def _drift(session: Session, since: str | None, until: str | None, metric: str | None, slice_key: str | None,
           window_s: int | None) -> dashboard.Drift:
    try:
        return dashboard.drift(session, _range(since, until, default=timedelta(days=7)), metric=metric,
                               slice_key=slice_key or None, window_s=window_s)
    except MonitoringError as e:
        raise _error(e) from e


def _plans(settings: Settings, current: DataPlan) -> list[str]:
    names = {current.name} | {p.stem for d in (settings.data_dir / "plans", DATAPLAN_DIR) if d.is_dir()
                              for p in d.glob("*.yaml")}
    return sorted(n for n in names if PLAN_NAME.match(n))


def _plan(name: str | None, settings: Settings, current: DataPlan) -> DataPlan:
    """The app's plan, or one by name from <data dir>/plans or the packaged plans (never a path: the
    name comes from a query string)."""
    if not name or name == current.name:
        return current
    if not PLAN_NAME.match(name) or name not in _plans(settings, current):
        raise HTTPException(404, f"unknown data plan {name!r}; available: {_plans(settings, current)}")
    try:
        return load_dataplan(name, search=(settings.data_dir / "plans",))
    except DataPlanError as e:
        raise HTTPException(422, str(e)) from e


# -- pages -----------------------------------------------------------------------------------------
@router.get("")
def overview_page(request: Request, user: OpsUser, session: SessionDep, since: Since = None, until: Until = None):
    ov = _overview(session, since, until)
    return render(request, "ops_overview.html", ov=ov, charts=charts.overview_charts(ov), since=since or "",
                  until=until or "")


@router.get("/drift")
def drift_page(request: Request, user: OpsUser, session: SessionDep, since: Since = None, until: Until = None,
               metric: Annotated[str | None, Query(max_length=32)] = None,
               slice_key: Annotated[str | None, Query(max_length=32)] = None,
               window_s: Annotated[int | None, Query(gt=0)] = None):
    d = _drift(session, since, until, metric or None, slice_key, window_s)
    return render(request, "ops_drift.html", d=d, charts=charts.drift_charts(d), comparison=charts.comparison_chart(d),
                  percent=d.metric in charts.PERCENT_METRICS, slice_keys=dashboard.DRIFT_SLICE_KEYS,
                  since=since or "", until=until or "")


@router.get("/voc")
def voc_page(request: Request, user: OpsUser, session: SessionDep,
             status: Annotated[str | None, Query(max_length=16)] = None,
             cause: Annotated[str | None, Query(max_length=100)] = None,
             category: Annotated[str | None, Query(max_length=32)] = None,
             source: Annotated[str | None, Query(max_length=16)] = None,
             slice: Annotated[str | None, Query(max_length=100, description="key=value, e.g. dialect=jeolla")] = None,  # noqa: A002
             offset: Annotated[int, Query(ge=0)] = 0):
    try:
        flt = voc_queries.FeedbackFilter.parse(status=status, cause=cause, category=category, source=source,
                                               slice=slice)
        box = voc_queries.list_feedback(session, flt, limit=PAGE, offset=offset, facets=True)
    except MonitoringError as e:
        raise _error(e) from e
    query = urlencode({k: v for k, v in (("status", status), ("cause", cause), ("category", category),
                                         ("source", source), ("slice", slice)) if v})
    return render(request, "ops_voc.html", box=box, slice_keys=SLICE_KEYS, query=query, page=PAGE)


@router.get("/data")
def data_page(request: Request, user: OpsUser, session: SessionDep, settings: SettingsDep, current: PlanDep,
              plan: Annotated[str | None, Query(max_length=64)] = None):
    ds = dashboard.data_status(session, _plan(plan, settings, current))
    return render(request, "ops_data.html", ds=ds, charts=charts.data_charts(ds.by_axis),
                  plans=_plans(settings, current))


@router.get("/releases")
def releases_page(request: Request, user: OpsUser, session: SessionDep, settings: SettingsDep):
    rows = dashboard.releases(session, settings.model_name)
    judged = next((r for r in rows if r.slices or r.overall), None)  # the newest step with per-slice numbers
    return render(request, "ops_releases.html", rows=rows, model_name=settings.model_name, judged=judged,
                  chart=charts.release_chart(judged) if judged else None)


# -- JSON ------------------------------------------------------------------------------------------
@router.get("/api/overview")
def overview_json(user: OpsUser, session: SessionDep, since: Since = None, until: Until = None) -> JSONResponse:
    """Traffic per bucket and model version, latency percentiles (ms), problem counts, version timeline."""
    # JSONResponse: the body is JSON-ready already (FastAPI's own encoder would walk it a second time)
    return JSONResponse(dashboard.jsonable(_overview(session, since, until)))


@router.get("/api/drift")
def drift_json(user: OpsUser, session: SessionDep, since: Since = None, until: Until = None,
               metric: Annotated[str | None, Query(max_length=32)] = None,
               slice_key: Annotated[str | None, Query(max_length=32)] = None,
               window_s: Annotated[int | None, Query(gt=0)] = None) -> JSONResponse:
    """Per-slice values with confidence intervals (default: wer, the last 7 days; each point
    ``[window_end, value, ci_low, ci_high, n]``), alerts, each model version's latest value per slice."""
    return JSONResponse(dashboard.jsonable(_drift(session, since, until, metric or None, slice_key, window_s)))


@router.get("/api/data")
def data_json(user: OpsUser, session: SessionDep, settings: SettingsDep, current: PlanDep,
              plan: Annotated[str | None, Query(max_length=64)] = None) -> JSONResponse:
    """The data plan's cells: target, collected, labeled; sums per axis."""
    return JSONResponse(dashboard.jsonable(dashboard.data_status(session, _plan(plan, settings, current))))


@router.get("/api/releases")
def releases_json(user: OpsUser, session: SessionDep, settings: SettingsDep,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50) -> JSONResponse:
    """The newest release steps (offline gate, shadow, canary, promote, rollback) with their numbers."""
    return JSONResponse(dashboard.jsonable(dashboard.releases(session, settings.model_name, limit=limit)))
