"""Data plans, quota status and re-collection plans on a real catalog, with real eSpeak speech."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from collection.dataplan import DataPlanError, load_dataplan, validate_dataplan, write_dataplan
from collection.db import session_scope
from collection.models import Label, LabelTask, Recording, Speaker
from collection.quota import plan_gaps, plan_status, plot_status, totals
from collection.synthetic import collect_synthetic

BASE = {
    "name": "t", "language": "ko",
    "cells": {"age_bands": ["20s", "60s"], "genders": ["female"], "dialects": ["standard", "jeolla"],
              "environments": ["quiet"], "count": 1,
              "overrides": [{"dialects": ["jeolla"], "age_bands": ["60s"], "count": 3}]},
    "utterances": {"grammar": "ko_commands", "max_seconds": 8, "per_speaker": 2},
    "consent": {"text_version": "v1", "retention_days": 30, "scopes": ["training", "human_review"]},
    "checklist": [{"id": "voice_separate", "text": "Separate consent to my voice."}],
}


def test_grid_with_overrides_and_round_trip(tmp_path):
    plan = validate_dataplan(BASE)
    assert {c.key: c.target for c in plan.cells} == {
        "20s/female/standard/quiet": 1, "20s/female/jeolla/quiet": 1,
        "60s/female/standard/quiet": 1, "60s/female/jeolla/quiet": 3}
    assert load_dataplan(write_dataplan(plan, tmp_path / "t.yaml")) == plan
    assert load_dataplan("demo").total_target > 500


@pytest.mark.parametrize(("change", "message"), [
    ({"cells": {**BASE["cells"], "age_bands": ["teens"]}}, "teens"),
    ({"cells": {**BASE["cells"], "dialects": ["martian"]}}, "martian"),
    ({"utterances": {"grammar": "nope"}}, "nope"),
    ({"consent": {"text_version": "v1", "retention_days": 30, "scopes": ["marketing"]}}, "marketing"),
    ({"colour": "blue"}, "colour"),
])
def test_validation_names_the_problem(change, message):
    with pytest.raises(DataPlanError, match=message):
        validate_dataplan({**BASE, **change})


def test_unknown_plan_name_lists_the_packaged_ones():
    with pytest.raises(DataPlanError, match="demo"):
        load_dataplan("no-such-plan")


def test_collect_fills_the_plan_once_and_status_counts_labels(catalog, audio_store, tmp_path):
    plan = validate_dataplan(BASE)
    first = collect_synthetic(catalog, audio_store, plan, progress=False)
    assert (first.accepted, first.remaining) == (6, 0)
    again = collect_synthetic(catalog, audio_store, plan, progress=False)
    assert (again.rendered, again.accepted) == (0, 0)
    with session_scope(catalog) as s:
        assert s.scalar(select(func.count()).select_from(Recording)) == 6
        speakers = s.scalars(select(Speaker)).all()
        assert all(sp.persona == "synthetic" and sp.consent_id for sp in speakers)
        statuses = plan_status(s, plan)
        assert [(st.collected, st.labeled) for st in statuses] == [(1, 0), (1, 0), (1, 0), (3, 0)]
        # one reviewed label in the 60s/jeolla cell
        rec = s.scalars(select(Recording).join(Speaker).where(Speaker.dialect == "jeolla",
                                                              Speaker.age_band == "60s")).first()
        task = LabelTask(recording_id=rec.id)
        s.add(task)
        s.flush()
        s.add(Label(task_id=task.id, recording_id=rec.id, text=rec.prompt_text, status="reviewed"))
        s.flush()
        statuses = plan_status(s, plan)
        assert statuses[-1].labeled == 1 and totals(statuses) == (6, 6, 1)
    png = plot_status(statuses, tmp_path / "status.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_gaps_become_a_recollection_plan_that_fills_them(catalog, audio_store):
    plan = validate_dataplan(BASE)
    collect_synthetic(catalog, audio_store, plan, limit=2, progress=False)
    with session_scope(catalog) as s:
        missing = sum(st.remaining for st in plan_status(s, plan))
        gaps = plan_gaps(s, plan)
        assert gaps == plan_gaps(s, plan)  # re-runnable
    assert gaps.name == "t-gaps" and gaps.parent == "t" and gaps.total_target == missing == 4
    collect_synthetic(catalog, audio_store, gaps, progress=False)
    with session_scope(catalog) as s:
        assert sum(st.remaining for st in plan_status(s, plan)) == 0
        assert plan_gaps(s, plan).cells == ()
