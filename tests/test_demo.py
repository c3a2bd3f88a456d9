"""`voiceloop demo` (what `make demo` runs): the whole loop through a real Airflow (`airflow standalone` in
the data dir, DAG runs triggered through its REST API and Asset events), with the tiny plans and model of
`--quick` so it fits the test budget. Its CER numbers mean nothing; the plumbing is what is asserted."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from sqlalchemy import select

from collection.db import session_scope
from collection.models import ReleaseDecision
from infra import stack
from infra.stack import free_port
from voiceloop.demo import MARKER, DemoError, LoopDemoConfig, prepare_data_dir, run_demo
from voiceloop.settings import Settings


def test_the_demo_only_ever_deletes_a_world_it_made(tmp_path):
    theirs = Settings(data_dir=tmp_path / "theirs")
    theirs.data_dir.mkdir()
    (theirs.data_dir / "catalog.db").write_text("someone's data")
    for fresh in (False, True):
        with pytest.raises(DemoError, match="did not make"):
            prepare_data_dir(theirs, fresh=fresh)
    assert (theirs.data_dir / "catalog.db").read_text() == "someone's data"

    ours = Settings(data_dir=tmp_path / "ours")
    prepare_data_dir(ours, fresh=False)  # a new dir: made, and marked
    (ours.data_dir / "catalog.db").write_text("an earlier demo")
    with pytest.raises(DemoError, match="--fresh"):
        prepare_data_dir(ours, fresh=False)
    prepare_data_dir(ours, fresh=True)
    assert [p.name for p in ours.data_dir.iterdir()] == [MARKER]


@pytest.mark.slow
def test_quick_demo_runs_the_loop_through_airflow_to_a_promotion(tmp_path):
    settings = Settings(data_dir=tmp_path / "demo")
    console = Console(width=160, record=True)
    try:
        result = run_demo(settings, console, LoopDemoConfig.quick(airflow_port=free_port()))
    finally:
        stack.down(settings)
    out = console.export_text()

    assert result["deploy"] == {"start_shadow": "success", "shadow_verdict": "success", "after_shadow": "success",
                                "start_canary": "success", "roll_back_shadow": "skipped",
                                "canary_verdict": "success", "after_canary": "success", "promote": "success",
                                "roll_back_canary": "skipped"}, out
    with session_scope(settings.catalog) as session:
        stages = [(r.stage, r.verdict) for r in session.scalars(
            select(ReleaseDecision).order_by(ReleaseDecision.created_at))]
    assert stages[:2] == [("gate", "pass"), ("gate", "pass")]  # the first model, then the retrained one
    assert stages[-1] == ("promote", "promoted"), stages
    # each slice before and after: on screen, in the figure and the HTML report
    assert {r["slice"] for r in result["slices"]} == {"standard (under 60)", "dialect=gyeongsang",
                                                      "dialect=jeolla", "age_band=60s", "age_band=70s+"}
    assert "gap closed" in out and "where everything landed" in out
    reports = settings.data_dir / "reports"
    assert (reports / "loop-demo.png").stat().st_size > 0 and (reports / "plan_status.png").stat().st_size > 0
    assert "Releases" in (reports / "loop-demo.html").read_text()
    json.dumps(result, default=str)  # the summary is plain data
