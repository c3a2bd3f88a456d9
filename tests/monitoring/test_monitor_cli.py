"""`voiceloop monitor drift` and `voiceloop monitor alerts` on a data dir's catalog."""

from __future__ import annotations

import json

from _drift_data import T0, add_utterances
from sqlalchemy import func, select
from typer.testing import CliRunner

from collection.db import connect, session_scope
from collection.models import Alert, SliceMetric
from monitoring.drift import window_ends
from voiceloop.cli import app


def test_drift_backfill_then_alerts(tmp_path):
    catalog = connect(f"sqlite:///{(tmp_path / 'catalog.db').resolve()}")
    ends = window_ends(T0, 3600, 3)
    with session_scope(catalog) as s:
        for i, end in enumerate(ends):
            add_utterances(s, 250, end=end, confidence=0.9 if i < 2 else 0.6, seed=i)
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    args = ["monitor", "drift", "--window", "1h", "--until", "2025-03-03T12:30:00+00:00", "--backfill", "3",
            "--no-baseline", *data]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2025-03-03 10:00" in first.output and "2025-03-03 12:00" in first.output
    with catalog() as s:
        count = s.scalar(select(func.count()).select_from(SliceMetric))
    assert runner.invoke(app, args).exit_code == 0  # the same windows again: the same rows, the same alerts
    with catalog() as s:
        assert s.scalar(select(func.count()).select_from(SliceMetric)) == count
        # A confidence drop on all traffic and on the one value of each slice key, overall and for its version.
        assert s.scalar(select(func.count()).select_from(Alert)) == 5 * 2

    listed = runner.invoke(app, ["monitor", "alerts", "--json", *data])
    assert listed.exit_code == 0, listed.output
    found = [json.loads(line) for line in listed.output.splitlines()]
    assert {a["kind"] for a in found} == {"confidence_drop"}
    assert {a["model_version"] for a in found} == {"", "voiceloop-asr/1"}
    table = runner.invoke(app, ["monitor", "alerts", "--kind", "confidence_drop", *data])
    assert table.exit_code == 0 and "open alert(s)" in table.output

    for bad, message in ((["--window", "1x"], "not a duration"), (["--backfill", "0"], "give 1 to"),
                         (["--until", "yesterday"], "not an ISO date-time")):
        result = runner.invoke(app, ["monitor", "drift", "--no-baseline", *bad, *data])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["monitor", "alerts", "--kind", "wer", *data])
    assert result.exit_code == 2 and "unknown alert kinds" in result.output
