"""The dashboard library: time ranges, hourly traffic rollups on a real catalog, latency percentiles, the
character diff, and the SVG charts (escaping, bands, markers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from collection.models import ProductionUtterance, SliceMetric
from monitoring.dashboard import choose_bucket, overview
from monitoring.plots import Bar, Marker, Point, Series, bars_svg, stacked_bars_svg, time_series_svg
from monitoring.timerange import MonitoringError, TimeRange
from monitoring.traffic import REQUESTS, aggregate_hours, hourly_traffic, percentile, rollup_traffic
from monitoring.voc_queries import char_diff

NOW = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)


def test_time_ranges():
    rng = TimeRange.parse("24h", now=NOW)
    assert (rng.since, rng.until) == (NOW - timedelta(days=1), NOW)
    assert TimeRange.parse(now=NOW).since == NOW - timedelta(days=1)
    rng = TimeRange.parse("2026-03-01T09:00+09:00", "2026-03-02", now=NOW)
    assert rng.since == datetime(2026, 3, 1, 0, tzinfo=UTC) and rng.until == datetime(2026, 3, 2, tzinfo=UTC)
    assert choose_bucket(TimeRange.parse("24h", now=NOW)) == timedelta(hours=1)
    assert choose_bucket(TimeRange.parse("30d", now=NOW)) == timedelta(hours=12)
    for since, until, message in (("soon", None, "cannot read"), ("1h", "2h", "must be before"),
                                  ("367d", None, "at most 366 days"), ("1999-12-31", "2000-01-02", "before 2000"),
                                  ("1h", "2027-01-01", "in the future")):
        with pytest.raises(MonitoringError, match=message):
            TimeRange.parse(since, until, now=NOW)


def test_percentile_from_a_histogram():
    assert percentile({}, 0.5) is None
    hist = {10: 50, 11: 50}  # 50 in [50, 55) ms, 50 in [55, 60) ms
    assert percentile(hist, 0.5) == 55.0 and percentile(hist, 0.25) == 52.5 and percentile(hist, 1.0) == 60.0
    assert percentile({200: 4}, 0.5) == 1050.0 and percentile({290: 3}, 0.99) == 10000.0


def _utt(i: int, at: datetime, latency: float, version: str = "v1", **kw) -> ProductionUtterance:
    return ProductionUtterance(request_id=f"req-{i}", device_id="dev-1", model_version=version, latency_ms=latency,
                               created_at=at, **kw)


@pytest.mark.catalog
def test_hours_roll_up_once_and_open_hours_stay_live(catalog):
    hour = datetime(2026, 3, 2, 10, tzinfo=UTC)
    with catalog() as session:
        session.add_all([
            _utt(1, hour - timedelta(microseconds=1), 40.0),  # 09:59:59.999999 → the 09:00 hour
            _utt(2, hour, 61.0, in_grammar=False),  # exactly 10:00 → the 10:00 hour
            _utt(3, hour + timedelta(minutes=59), 1234.0, version="v2", confidence=0.2),
            _utt(4, hour + timedelta(hours=2, minutes=10), 20.0, ended_by="max_seconds"),  # 12:10, still open
            _utt(5, hour + timedelta(minutes=5), None, version=None),
        ])
        session.commit()
        raw = aggregate_hours(session, hour - timedelta(hours=1), hour + timedelta(hours=3))
        assert {h: t.requests for h, t in raw.items()} == {hour - timedelta(hours=1): 1, hour: 3,
                                                            hour + timedelta(hours=2): 1}
        ten = raw[hour]
        assert ten.by_version == {"v1": 1, "v2": 1, "unknown": 1} and ten.latency_n == 2
        assert (ten.out_of_grammar, ten.low_confidence) == (1, 1) and 60 <= ten.p50 <= 1300

        hours = hourly_traffic(session, hour - timedelta(hours=1), NOW, now=NOW)
        assert [h.requests for h in hours] == [1, 3, 0, 1] and hours[-1].cut_at_max == 1
        session.commit()
        # 09, 10 and 11 are closed (stored); 12:00-13:00 is open at 12:30 (computed live, never stored)
        stored = dict(session.execute(select(SliceMetric.window_end, SliceMetric.n).where(
            SliceMetric.metric == REQUESTS, SliceMetric.model_version == "")).all())
        assert sorted(stored.values()) == [0, 1, 3] and len(stored) == 3
        assert rollup_traffic(session, hour - timedelta(hours=1), NOW, now=NOW) == 0  # nothing left to do
        rows = session.scalar(select(func.count()).select_from(SliceMetric))
        assert [h.p50 for h in hourly_traffic(session, hour - timedelta(hours=1), NOW, now=NOW)] == \
            [h.p50 for h in hours]
        assert session.scalar(select(func.count()).select_from(SliceMetric)) == rows  # re-reading adds nothing
        assert rollup_traffic(session, hour, hour + timedelta(hours=1), now=NOW, recompute=True) == 1

        ov = overview(session, TimeRange.parse("4h", now=NOW), now=NOW)
        assert ov.requests == 5 and [v.model_version for v in ov.versions] == ["v1", "unknown", "v2"]
        assert ov.problems == {"out_of_grammar": 1, "low_confidence": 1, "cut_at_max": 1}


def test_char_diff():
    ops = [(d.op, d.reference, d.hypothesis) for d in char_diff("거실 불 켜줘", "거실 물 켜")]
    assert ops == [("equal", "거실 ", "거실 "), ("replace", "불", "물"), ("equal", " 켜", " 켜"), ("delete", "줘", "")]
    assert char_diff("", "abc")[0].op == "insert"


def test_charts_escape_labels_and_draw_bands_and_markers():
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    points = [Point(t0 + timedelta(hours=i), 0.1 + 0.01 * i, 0.08, 0.14) for i in range(5)]
    svg = time_series_svg([Series("<b>jeolla</b>", points)], title="WER & more", percent=True,
                          markers=[Marker(t0 + timedelta(hours=4), 0.14, '<img src=x onerror="alert(1)">')])
    assert "<b>" not in svg and "&lt;b&gt;jeolla&lt;/b&gt;" in svg and "WER &amp; more" in svg
    assert "<img" not in svg and 'class="band"' in svg and 'class="alert-marker"' in svg and "%" in svg
    assert "http" not in svg  # inline SVG in HTML needs no xmlns: the report stays free of URLs
    assert "no data" in time_series_svg([], title="empty")
    bars = bars_svg([Bar("dialect=<x>", [("v1", 0.1, 0.05, 0.15), ("v2", 0.2, None, None)])], title="t",
                    percent=True)
    assert "dialect=&lt;x&gt;" in bars and bars.count('class="bar"') == 2
    stacked = stacked_bars_svg([t0, t0 + timedelta(hours=1)], {"v1": [3, 0], "v2": [1, 2]}, title="traffic",
                               bucket=timedelta(hours=1))
    assert stacked.count("<rect x=") == 3 + 2  # 3 bars + 2 legend swatches


@pytest.mark.catalog
def test_long_drift_series_are_thinned_to_the_chart_keeping_the_newest(catalog):
    from collection.models import Alert
    from monitoring.dashboard import MAX_POINTS, drift

    start = NOW - timedelta(days=13)
    with catalog() as session:
        ends = [start + timedelta(hours=h) for h in range(1, 301)]
        session.add_all([SliceMetric(window_end=e, window_s=7 * 86400, slice_key="dialect", slice_value="jeju",
                                     model_version=mv, metric="wer", value=0.1, ci_low=0.05, ci_high=0.15, n=10)
                         for e in ends for mv in ("", "v7")])
        session.add(Alert(kind="wer_above_baseline", slice_key="dialect", slice_value="jeju", metric="wer",
                          value=0.2, baseline=0.1, threshold=0.15, window_end=ends[10]))
        session.commit()
        d = drift(session, TimeRange.parse("14d", now=NOW))
    (series,) = d.series
    assert d.metric == "wer" and d.window_s == 7 * 86400 and len(series.points) == 100 <= MAX_POINTS
    assert series.points[-1].window_end == ends[-1] and series.points[0].window_end == ends[2]
    assert [(c.model_version, c.window_end) for c in d.comparison] == [("v7", ends[-1])]
    assert [a.slice_value for a in d.alerts] == ["jeju"]  # alerts are never thinned
