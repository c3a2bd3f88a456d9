"""The ops dashboard through the real app on a real catalog: pages and JSON with data, filters, escaping of
user text, bad ranges and plans, the ops role from the CLI, and the self-contained HTML report."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from _ops_helpers import REFERENCE, V1, V2, seed_ops
from _web_helpers import HTML, PASSWORD, login, make_app, session_of, store_of
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from collection.models import ProductionUtterance, SliceMetric
from collection.users import create_user
from monitoring.traffic import REQUESTS

pytestmark = pytest.mark.catalog


@pytest.fixture
def ops(tmp_path, catalog_url):
    """(logged-in ops client, app, seed)."""
    app = make_app(tmp_path, catalog_url)
    with session_of(app) as session:
        create_user(session, "opsy", "ops", PASSWORD)
        session.commit()
        seed = seed_ops(session, store_of(app))
    return login(TestClient(app), "opsy"), app, seed


def test_pages_render_with_data(ops):
    client, _, seed = ops
    overview = client.get("/ops", headers=HTML)
    assert overview.status_code == 200
    assert overview.text.count('<svg class="chart"') == 3 and V2 in overview.text
    drift = client.get("/ops/drift", headers=HTML).text
    assert "WER by dialect" in drift and "alert-marker" in drift and "wer_above_baseline" in drift
    assert "champion" in drift and 'class="band"' in drift
    voc = client.get("/ops/voc", headers=HTML).text
    assert 'id="voc-total">5 complaint(s)' in voc
    assert f'/ops/api/voc/{seed.audio_feedback}/audio/{seed.request_id}' in voc
    data = client.get("/ops/data", headers=HTML).text
    assert "Data plan tiny" in data and "Quota fill by dialect" in data


def test_overview_counts_every_request_once_and_rolls_up_closed_hours(ops):
    client, app, seed = ops
    body = client.get("/ops/api/overview", params={"since": "49h"}).json()
    assert body["requests"] == seed.utterances and body["bucket_s"] == 3600
    assert {v["model_version"] for v in body["versions"]} == {V1, V2}
    assert sum(b["requests"] for b in body["buckets"]) == seed.utterances
    assert 30 < body["latency_ms"]["p50"] < body["latency_ms"]["p95"] <= body["latency_ms"]["worst_hour_p95"] < 400
    with session_of(app) as session:
        stored = session.scalar(select(func.count()).where(SliceMetric.metric == REQUESTS,
                                                           SliceMetric.model_version == ""))
        raw = session.scalar(select(func.count()).select_from(ProductionUtterance))
    assert stored >= 47 and raw == seed.utterances  # closed hours rolled up once, the open hour live
    again = client.get("/ops/api/overview", params={"since": "49h"}).json()
    assert again["requests"] == body["requests"] and again["buckets"] == body["buckets"]
    week = client.get("/ops/api/overview", params={"since": "7d"}).json()
    assert week["bucket_s"] == 3 * 3600 and week["requests"] == seed.utterances


def test_drift_json_has_bands_alerts_and_versions(ops):
    client, _, _ = ops
    body = client.get("/ops/api/drift", params={"slice_key": "dialect"}).json()
    assert body["metric"] == "wer" and body["window_s"] == 3600 and body["available"]["wer"] == [3600]
    jeolla = next(s for s in body["series"] if s["slice_value"] == "jeolla")
    points = jeolla["points"]  # [window_end, value, ci_low, ci_high, n]
    assert len(points) == 48 and all(lo < v < hi and n == 40 for _, v, lo, hi, n in points)
    assert points[-1][1] > points[0][1] and points[-1][0] > points[0][0]  # drifting up, oldest first
    assert [a["slice_value"] for a in body["alerts"]] == ["jeolla"]
    assert body["versions"] == {"champion": V2}
    latest = {(c["slice_value"], c["model_version"]): c for c in body["comparison"]}
    assert latest[("jeolla", V2)]["role"] == "champion" and latest[("jeolla", V1)]["role"] == ""
    assert latest[("jeolla", V2)]["value"] > latest[("jeolla", V1)]["value"]
    empty = client.get("/ops/api/drift", params={"metric": "cer"}).json()
    assert empty["series"] == [] and empty["window_s"] is None


@pytest.mark.parametrize(("query", "shown"), [
    ({"status": "new"}, 2), ({"status": "open"}, 3), ({"cause": "low_confidence"}, 1),
    ({"cause": "slice:dialect=jeolla"}, 1), ({"slice": "dialect=gyeongsang"}, 2), ({"category": "other"}, 1),
    ({"slice": "dialect=unknown"}, 0), ({"status": "closed", "slice": "dialect=standard"}, 1),
])
def test_inbox_filters(ops, query, shown):
    client, _, _ = ops
    page = client.get("/ops/voc", params=query, headers=HTML)
    assert page.status_code == 200
    assert page.text.count('class="card voc-item"') == shown
    assert f'id="voc-total">{shown} complaint(s)' in page.text


@pytest.mark.parametrize(("query", "message"), [
    ({"status": "pending"}, "unknown status 'pending'"), ({"slice": "dialect"}, "write key=value"),
    ({"slice": "planet=mars"}, "unknown slice key 'planet'"), ({"cause": "100%"}, "cause '100%'"),
])
def test_inbox_bad_filters_say_what_is_valid(ops, query, message):
    client, _, _ = ops
    r = client.get("/ops/voc", params=query, headers={"accept": "application/json"})
    assert r.status_code == 422 and message in r.json()["detail"]


def test_reference_and_hypothesis_differ_character_by_character(ops):
    client, _, seed = ops
    page = client.get("/ops/voc", params={"cause": "low_confidence"}, headers=HTML).text
    said = re.search(r'<span class="diff-ref">(.*?)</span>', page).group(1)
    heard = re.search(r'<span class="diff-hyp">(.*?)</span>', page).group(1)
    assert re.sub(r"</?del>", "", said) == REFERENCE
    assert said == "거실 <del>불</del> 켜<del>줘</del>" and heard == "거실 <ins>물</ins> 켜"
    assert "CER 29%" in page  # 2 edits / 7 characters


def test_complaint_text_is_escaped(ops):
    client, _, _ = ops
    page = client.get("/ops/voc", headers=HTML).text
    assert "<script>window.__pwned" not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=x onerror=" in page


@pytest.mark.parametrize(("params", "message"), [
    ({"since": "yesterday-ish"}, "cannot read the time"), ({"since": "2026-13-01"}, "cannot read the time"),
    ({"since": "1d", "until": "2d"}, "must be before until"), ({"since": "900d"}, "at most 366 days"),
    ({"since": "1990-01-01", "until": "1990-02-01"}, "before 2000-01-01"),
    ({"since": "1h", "until": "2999-01-01"}, "in the future"),
])
def test_absurd_ranges_are_refused(ops, params, message):
    client, _, _ = ops
    for path in ("/ops/api/overview", "/ops/api/drift"):
        r = client.get(path, params=params)
        assert r.status_code == 422 and message in r.json()["detail"], (path, r.text)
    page = client.get("/ops", params=params, headers=HTML)
    assert page.status_code == 422 and message in page.text


def test_data_plan_by_name_only(ops):
    client, _, _ = ops
    body = client.get("/ops/api/data").json()
    assert body["plan"] == "tiny" and body["target"] == 4 and (body["collected"], body["labeled"]) == (1, 1)
    cell = next(c for c in body["cells"] if (c["age_band"], c["dialect"]) == ("30s", "standard"))
    assert (cell["target"], cell["collected"], cell["labeled"], cell["remaining"]) == (1, 2, 1, 0)
    assert {r["axis"] for r in body["by_axis"]} == {"age_band", "gender", "dialect", "environment"}
    assert client.get("/ops/api/data", params={"plan": "demo"}).json()["plan"] == "demo"
    for bad in ("nope", "../../etc/passwd", "/etc/passwd"):
        r = client.get("/ops/api/data", params={"plan": bad})
        assert r.status_code == 404 and "available" in r.json()["detail"], bad


def test_devices_and_other_roles_cannot_reach_it(ops, tmp_path):
    client, app, _ = ops
    with session_of(app) as session:
        create_user(session, "lab", "labeler", PASSWORD)
        session.commit()
    labeler = login(TestClient(app), "lab")
    assert labeler.get("/ops/api/overview").status_code == 403
    assert labeler.get("/ops", headers=HTML).status_code == 403
    device = TestClient(app).get("/ops/api/overview", headers={"Authorization": "Bearer vlk_not-a-staff-token"})
    assert device.status_code == 401


def test_ops_role_from_the_cli_and_a_self_contained_report(tmp_path, monkeypatch):
    from voiceloop.cli import app as cli

    monkeypatch.delenv("VOICELOOP_CATALOG_URL", raising=False)
    monkeypatch.setenv("OPS_PASSWORD", PASSWORD)
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    added = runner.invoke(cli, ["label", "users", "add", "mina", "--role", "ops", "--password-env", "OPS_PASSWORD",
                                *data])
    assert added.exit_code == 0, added.output
    app = make_app(tmp_path, f"sqlite:///{(tmp_path / 'catalog.db').resolve()}")
    with session_of(app) as session:
        seed = seed_ops(session, store_of(app))
    r = TestClient(app).post("/login", data={"username": "mina", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ops"

    out = tmp_path / "out" / "report.html"
    until = (seed.now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    result = runner.invoke(cli, ["report", "--since", "3d", "--until", until, "--out", str(out), "--plan", "tiny",
                                 *data])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"https?://", html) and "@import" not in html and "url(" not in html
    assert not re.search(r"<[a-z]+[^>]*\s(src|href)=", html)  # nothing to fetch (escaped user text aside)
    assert "<script" not in html  # the complaint's script is text, and the report has none of its own
    assert "&lt;script&gt;window.__pwned" in html
    assert html.count('<svg class="chart"') >= 6 and 'class="alert-marker"' in html
    assert f'id="kpi-requests">{seed.utterances:,}<' in html and "wer_above_baseline" in html
    assert "Data plan tiny" in html and "Quota fill by dialect" in html
    assert "거실 <del>불</del> 켜<del>줘</del>" in html

    bad = runner.invoke(cli, ["report", "--since", "1d", "--until", "3d", *data])
    assert bad.exit_code == 2 and "must be before until" in bad.output


def test_releases_page_shows_each_step_with_its_numbers(ops):
    from asr.gate import Scored, compare
    from collection.releases import record_decision

    client, app, _ = ops
    name = app.state.settings.model_name
    champion = [Scored(f"u{i}", {"dialect": "jeolla" if i % 2 else "standard"}, 3.0, 10.0) for i in range(40)]
    challenger = [Scored(s.id, s.slices, 1.0, 10.0) for s in champion]
    decision = compare(champion, challenger)
    with session_of(app) as session:
        record_decision(session, model_name=name, run_id="run-2", model_version="2", champion_version="1",
                        stage="gate", verdict="pass", run_key="retrain/2026-11-30", decision=decision)
        record_decision(session, model_name=name, run_id=None, model_version="2", champion_version="1",
                        stage="promote", verdict="promoted", run_key="deploy/2026-11-30",
                        summary="<b>@champion</b> 1 → 2")
        session.commit()
    page = client.get("/ops/releases", headers=HTML).text
    assert 'id="release-chart"' in page and "CER per slice at the gate step (pass)" in page
    assert "dialect=jeolla" in page and "30.00% → 10.00%" in page
    assert "&lt;b&gt;@champion&lt;/b&gt;" in page  # text is data, escaped
    rows = client.get("/ops/api/releases").json()
    assert [(r["stage"], r["verdict"]) for r in rows] == [("promote", "promoted"), ("gate", "pass")]
    assert rows[1]["overall"]["challenger"] == 0.1 and {s["value"] for s in rows[1]["slices"]} == {"jeolla",
                                                                                                  "standard"}
    from monitoring.report import build_report
    from monitoring.timerange import TimeRange

    with session_of(app) as session:  # the HTML report shows the same steps and chart
        report = build_report(session, TimeRange.parse("1d"), model_name=name)
    assert 'id="releases"' in report and "CER per slice at the gate step (pass)" in report
