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


@pytest.mark.parametrize(("change", "message"), [
    ({"cells": {**BASE["cells"], "environments": ["garage"]}}, r"garage.*far_field"),
    ({"cells": {**BASE["cells"], "overrides": [{"age_bands": ["70s+"], "count": 2}]}}, r"70s\+.*\['20s', '60s'\]"),
    ({"cells": {**BASE["cells"], "count": 0, "overrides": []}}, "nothing to collect"),
    ({"cells": [{"age_band": "20s", "gender": "male", "dialect": "standard", "environment": "tv", "count": 1}] * 2},
     "listed twice"),
    ({"utterances": {"grammar": "ko_commands", "prompts": ["거실 불 켜줘"]}}, "exactly one"),
    ({"language": None, "utterances": {"prompts": ["turn the lights on"]}}, "language"),
    ({"language": "en"}, "grammar 'ko_commands' is 'ko'"),
    ({"checklist": [{"id": "voice", "text": "a"}, {"id": "voice", "text": "b"}]}, "used twice"),
    ({"quota_scope": "some"}, r"quota_scope.*\['all', 'plan'\]"),
])
def test_more_validation_errors(change, message):
    spec = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(DataPlanError, match=message):
        validate_dataplan(spec)


def test_status_counts_recordings_by_speaker_and_environment(catalog, audio_store):
    """Recordings from any source fall in a cell by their speaker and environment; another language,
    a revoked consent or (with quota_scope: plan) another plan's recordings do not count."""
    from datetime import UTC, datetime

    from _ingest_helpers import speech_like, wav_bytes

    from collection.ingest import ensure_speaker, ingest
    from collection.models import Consent

    plan = validate_dataplan(BASE)
    own = validate_dataplan({**BASE, "quota_scope": "plan"})
    with session_scope(catalog) as s:
        old = ensure_speaker(s, source="upload", external_id="u1", age_band="60s", gender="female", dialect="jeolla")
        young = ensure_speaker(s, source="upload", external_id="u2", age_band="20s", gender="female",
                               dialect="standard")
        gone = ensure_speaker(s, source="upload", external_id="u3", age_band="60s", gender="female", dialect="jeolla")
        consent = Consent(subject_type="speaker", subject_id=gone.id, text_version="v1", retention_days=30,
                          revoked_at=datetime.now(UTC))
        s.add(consent)
        s.flush()
        gone.consent_id = consent.id
        takes = [(old, "quiet", "ko", "t"), (old, "quiet", "ko", None), (old, "tv", "ko", "t"),
                 (young, "quiet", "ko", "t"), (young, "quiet", "en", "t"), (gone, "quiet", "ko", "t")]
        for i, (speaker, env, language, plan_name) in enumerate(takes):
            result = ingest(s, audio_store, wav_bytes(speech_like(1.5, seed=100 + i)), source="upload",
                            speaker_id=speaker.id, external_id=f"take-{i}", environment=env, language=language,
                            plan=plan_name)
            assert result.status == "accepted", result
        counts = {st.cell.key: st.collected for st in plan_status(s, plan)}
        assert counts == {"20s/female/standard/quiet": 1, "20s/female/jeolla/quiet": 0,
                          "60s/female/standard/quiet": 0, "60s/female/jeolla/quiet": 2}
        assert [st.collected for st in plan_status(s, own)] == [1, 0, 0, 1]
        gaps = plan_gaps(s, plan)
        assert {c.key: c.target for c in gaps.cells} == {
            "20s/female/jeolla/quiet": 1, "60s/female/standard/quiet": 1, "60s/female/jeolla/quiet": 1}
        assert gaps.quota_scope == "plan" and gaps.consent == plan.consent


@pytest.fixture
def cli_env(catalog, catalog_url, monkeypatch):
    """The CLI on this test's catalog (PostgreSQL under VOICELOOP_TEST_CATALOG_URL) with --data-dir."""
    from voiceloop.settings import get_settings

    monkeypatch.setenv("VOICELOOP_CATALOG_URL", catalog_url)
    monkeypatch.delenv("VOICELOOP_AUDIO_STORE_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_collect_status_gaps(cli_env, tmp_path):
    from typer.testing import CliRunner

    from voiceloop.cli import app

    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    first = runner.invoke(app, ["plan", "collect", "--plan", "tiny", "--limit", "3", *data])
    assert first.exit_code == 0, first.output
    assert "3 accepted" in first.output and "1 still missing" in first.output
    status = runner.invoke(app, ["plan", "status", "--plan", "tiny", *data])
    assert status.exit_code == 0, status.output
    assert "gyeongsang" in status.output and str(tmp_path / "plans" / "tiny_status.png") in status.output
    assert (tmp_path / "plans" / "tiny_status.png").read_bytes()[:4] == b"\x89PNG"
    gaps = runner.invoke(app, ["plan", "gaps", "--plan", "tiny", *data])
    assert gaps.exit_code == 0 and "1 utterance(s) to collect" in gaps.output, gaps.output
    written = load_dataplan(tmp_path / "plans" / "tiny-gaps.yaml")
    assert (written.parent, written.total_target) == ("tiny", 1)
    # The gap plan is found by name in <data dir>/plans and fills the last utterance; then nothing is left.
    fill = runner.invoke(app, ["plan", "collect", "--plan", "tiny-gaps", *data])
    assert fill.exit_code == 0 and "1 accepted" in fill.output, fill.output
    again = runner.invoke(app, ["plan", "collect", "--plan", "tiny", *data])
    assert again.exit_code == 0 and "0 rendered" in again.output and "0 still missing" in again.output
    bad = runner.invoke(app, ["plan", "status", "--plan", "no-such-plan", *data])
    assert bad.exit_code == 2 and "no-such-plan" in bad.output
