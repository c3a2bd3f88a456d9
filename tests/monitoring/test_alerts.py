"""Alerts on a real catalog: what fires, what noise does not, one row per incident, resolution, export."""

from __future__ import annotations

from datetime import timedelta

import pytest
from _drift_data import T0, V1, add_feedback, add_labeled, add_utterances, reference_profile
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import func, select

from collection.db import session_scope
from collection.models import Alert
from monitoring.alerts import AlertConfig, evaluate_alerts, open_alerts
from monitoring.baseline import Baseline
from monitoring.catalog_metrics import CatalogCollector, install_catalog_metrics, metric_names
from monitoring.drift import DriftConfig, compute_window, window_ends

pytestmark = pytest.mark.catalog
HOUR = 3600
DRIFT = DriftConfig(bootstrap_draws=300, labeled_window_s=HOUR)  # transcripts counted per hour here
ALERTS = AlertConfig(labeled_window_s=HOUR, min_traffic=100)
# Offline: 10 % WER everywhere.
BASELINE = Baseline.from_flat_metrics(V1, {"test_seen.wer": 0.1, "test_seen.cer": 0.1,
                                           "test_seen.n.dialect.standard": 100, "test_seen.wer.dialect.standard": 0.1,
                                           "test_seen.cer.dialect.standard": 0.1})
RIGHT = ("거실 불 켜줘", "거실 불 켜줘")
WRONG = ("거실 불 켜줘", "부엌 물 꺼줘")  # every word wrong


def run(catalog, end=T0, **kw):
    compute_window(catalog, end, HOUR, baselines={"": BASELINE, V1: BASELINE}, reference=reference_profile(),
                   config=DRIFT)
    return evaluate_alerts(catalog, end, HOUR, ALERTS, **kw)


def alerts(catalog, **where) -> list[Alert]:
    with catalog() as s:
        return list(s.scalars(select(Alert).filter_by(**where).order_by(Alert.window_end)))


def test_wer_regression_fires_once_per_incident_and_resolves(catalog):
    ends = window_ends(T0, HOUR, 3)
    with session_scope(catalog) as s:
        add_labeled(s, [WRONG] * 20 + [RIGHT] * 20, end=ends[0])  # WER 50 % on 40: far above 10 %
        add_labeled(s, [WRONG] * 15 + [RIGHT] * 25, end=ends[1])  # still far above
        add_labeled(s, [WRONG] * 4 + [RIGHT] * 36, end=ends[2])  # 10 %: back at the baseline
    first = run(catalog, ends[0])
    fired = {(f.slice_key, f.slice_value, f.metric, f.model_version)
             for f in first.opened if f.kind == "wer_regression"}
    assert ("all", "all", "wer", "") in fired and ("dialect", "standard", "wer", V1) in fired
    assert ("all", "all", "cer", "") in fired
    assert ("device_type", "speaker", "wer", "") not in fired  # no offline baseline for device types
    again = run(catalog, ends[0])  # the same window again: nothing new
    assert not again.opened and len(again.continuing) == len(first.opened)
    overall = alerts(catalog, kind="wer_regression", slice_key="all", metric="wer", model_version="")
    assert len(overall) == 1 and overall[0].status == "open" and overall[0].baseline == pytest.approx(0.1)
    assert overall[0].value == pytest.approx(0.5) and overall[0].detail["n"] == 40

    second = run(catalog, ends[1])  # still firing: the same incident, updated
    assert not [f for f in second.opened if f.kind == "wer_regression"]
    overall = alerts(catalog, kind="wer_regression", slice_key="all", metric="wer", model_version="")
    assert len(overall) == 1 and overall[0].detail["windows"] == 2
    assert overall[0].value == pytest.approx(15 / 40) and overall[0].window_end.replace(tzinfo=None) == \
        ends[0].replace(tzinfo=None)

    third = run(catalog, ends[2])
    assert third.resolved and not [a for a in open_alerts(catalog) if a.kind == "wer_regression"]
    overall = alerts(catalog, kind="wer_regression", slice_key="all", metric="wer", model_version="")[0]
    assert overall.status == "resolved" and overall.resolved_at.replace(tzinfo=None) == ends[2].replace(tzinfo=None)
    run(catalog, ends[2])  # re-evaluating changes nothing
    with catalog() as s:
        assert s.scalar(select(func.count()).select_from(Alert).where(Alert.kind == "wer_regression")) == \
            len(first.opened)


def test_noise_and_small_samples_do_not_alert(catalog):
    ends = window_ends(T0, HOUR, 2)
    with session_scope(catalog) as s:
        # 13 % on 40 utterances: above baseline + margin, but the interval reaches well below 10 %.
        add_labeled(s, [WRONG] * 5 + [RIGHT] * 35, end=ends[0])
        add_labeled(s, [WRONG] * 10, end=ends[1])  # 100 % wrong, but only 10 transcripts (< min_labeled)
    first = run(catalog, ends[0])
    assert not [f for f in first.opened if f.kind == "wer_regression"]
    assert not [f for f in run(catalog, ends[1]).opened if f.kind == "wer_regression"]


def test_label_free_alerts(catalog):
    ends = window_ends(T0, HOUR, 3)
    with session_scope(catalog) as s:
        for end in ends[:2]:
            ids = add_utterances(s, 300, end=end, confidence=0.9)
            add_utterances(s, 100, end=end, dialect="jeju", confidence=0.9)
            add_feedback(s, 1, end=end, request_ids=ids[:1])
        # The last window: far-field noise, less confident, many complaints, and Jeju silent.
        ids = add_utterances(s, 300, end=ends[2], confidence=0.7, shift={"snr_db": -15.0})
        add_feedback(s, 12, end=ends[2], request_ids=ids[:12])
    for end in ends[:2]:
        assert not run(catalog, end).opened
    opened = {(f.kind, f.slice_key, f.slice_value, f.metric, f.model_version) for f in run(catalog, ends[2]).opened}
    assert ("input_drift", "all", "all", "psi_snr_db", "") in opened
    assert ("input_drift", "all", "all", "psi_duration", "") not in opened
    assert ("confidence_drop", "all", "all", "confidence_mean", "") in opened
    assert ("confidence_drop", "dialect", "standard", "confidence_mean", V1) in opened
    assert ("voc_spike", "all", "all", "voc_per_1k", "") in opened
    assert ("no_traffic", "dialect", "jeju", "utterances", "") in opened
    assert not [k for k in opened if k[0] == "no_traffic" and k[1] == "all"]

    drop = alerts(catalog, kind="confidence_drop", slice_key="all", model_version="")[0]
    assert drop.value == pytest.approx(0.7) and drop.baseline == pytest.approx(0.9)
    assert {a.kind for a in open_alerts(catalog, kinds=["no_traffic"])} == {"no_traffic"}
    assert open_alerts(catalog, since=ends[2] + timedelta(hours=1)) == []
    assert len(open_alerts(catalog, slice_key="dialect")) >= 2
    with pytest.raises(ValueError, match="unknown alert kinds"):
        open_alerts(catalog, kinds=["wer"])


def test_open_alerts_and_drift_results_are_exported(catalog, tmp_path):
    with session_scope(catalog) as s:
        add_labeled(s, [WRONG] * 20 + [RIGHT] * 20)
    run(catalog)
    registry = CollectorRegistry()
    registry.register(CatalogCollector(catalog, ttl_s=0))
    text = generate_latest(registry).decode()
    assert 'voiceloop_alerts_open{kind="wer_regression",metric="wer",model_version="all",slice_key="all",' \
           'slice_value="all"} 1.0' in text
    assert 'voiceloop_online_wer{model_version="all",slice_key="all",slice_value="all"} 0.5' in text
    assert 'voiceloop_offline_wer_baseline{model_version="voiceloop-asr/1",slice_key="dialect",' \
           'slice_value="standard"} 0.1' in text
    assert 'voiceloop_online_labeled_utterances{model_version="all",slice_key="all",slice_value="all"} 40.0' in text
    assert 'voiceloop_online_wer_ci_low{' in text and 'voiceloop_input_psi{feature="snr_db"' in text
    assert registry.get_sample_value("voiceloop_drift_last_window_end_timestamp_seconds") == T0.timestamp()

    # The API app registers the collector in the default registry: its /metrics shows the same.
    from serving.api.main import create_app
    from voiceloop.settings import Settings

    url = catalog.kw["bind"].url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(data_dir=tmp_path, catalog_url=url), plan="tiny")) as client:
        body = client.get("/metrics").text
    assert 'voiceloop_alerts_open{kind="wer_regression",metric="cer"' in body
    assert set(metric_names()) <= {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE")}
    assert install_catalog_metrics(catalog) is install_catalog_metrics(catalog)  # one per process


def test_collector_answers_when_the_catalog_does_not(tmp_path):
    from sqlalchemy.orm import sessionmaker

    from collection.db import make_engine

    unmigrated = sessionmaker(make_engine(f"sqlite:///{tmp_path / 'empty.db'}"))  # no tables: every query fails
    registry = CollectorRegistry()
    registry.register(CatalogCollector(unmigrated, ttl_s=0))
    text = generate_latest(registry).decode()  # answers, with the families and no samples
    assert "# TYPE voiceloop_online_wer gauge" in text and "voiceloop_online_wer{" not in text
