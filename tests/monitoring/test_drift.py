"""The drift job on a real catalog: traffic, confidence, VOC rate, input drift and online WER per slice."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from _drift_data import T0, V1, V2, add_feedback, add_labeled, add_utterances, reference_profile
from sqlalchemy import func, select, update

from asr.evaluate import score
from asr.text import get_language_pack
from collection.db import session_scope
from collection.models import Label, SliceMetric
from monitoring.baseline import Baseline
from monitoring.drift import DriftConfig, align, compute_window, parse_window, window_ends
from monitoring.reference import FeatureProfile, ReferenceProfile, bin_counts, ks_binned, psi
from monitoring.slices import eval_slice

pytestmark = pytest.mark.catalog
HOUR = 3600
FAST = DriftConfig(bootstrap_draws=200)
PAIRS = [("거실 불 켜줘", "거실 불 켜줘"), ("볼륨 3으로 해줘", "볼륨 삼으로 해줘"), ("티비 꺼줘", "티비 켜줘"),
         ("안방 에어컨 켜줘", "안방 에어컨 켜줘")] * 10  # 40 transcribed utterances

BASELINE = Baseline.from_flat_metrics(V1, {
    "test_seen.wer": 0.1, "test_seen.cer": 0.05, "test_seen.n.dialect.standard": 100,
    "test_seen.wer.dialect.standard": 0.1, "test_seen.cer.dialect.standard": 0.05,
    "test_heldout.wer": 0.3, "test_heldout.cer": 0.2, "test_heldout.n.dialect.gyeongsang": 50,
    "test_heldout.wer.dialect.gyeongsang": 0.3, "test_heldout.cer.dialect.gyeongsang": 0.2,
})


def rows(catalog, end=T0, window_s=HOUR) -> dict[tuple, SliceMetric]:
    with catalog() as s:
        found = s.scalars(select(SliceMetric).where(SliceMetric.window_end == end, SliceMetric.window_s == window_s))
        return {(r.slice_key, r.slice_value, r.model_version, r.metric): r for r in found}


def test_traffic_confidence_voc_and_wer_per_slice(catalog):
    with session_scope(catalog) as s:
        std = add_utterances(s, 200, confidence=0.9)
        add_utterances(s, 100, dialect="gyeongsang", age_band="60s", model_version=V2, confidence=0.6, seed=2)
        add_utterances(s, 50, end=T0 - timedelta(hours=1))  # the window before: not counted
        add_utterances(s, 30, end=T0 + timedelta(hours=1))  # after the window end: not counted
        labeled = add_labeled(s, PAIRS, confidence=0.8)
        add_feedback(s, 3, request_ids=std[:2])  # two about utterances, one logged by ops
    ref = reference_profile()
    result = compute_window(catalog.kw["bind"].url.render_as_string(hide_password=False), T0, HOUR,
                            baselines={"": BASELINE, V1: BASELINE}, reference=ref, config=FAST)
    assert result.utterances == 340 and result.labeled == 40
    got = rows(catalog)
    value = {k: r.value for k, r in got.items()}
    assert value[("all", "all", "", "utterances")] == 340
    assert value[("dialect", "standard", "", "utterances")] == 240
    assert value[("dialect", "gyeongsang", V2, "utterances")] == 100
    assert value[("age_band", "60s", "", "utterances")] == 100
    assert ("dialect", "gyeongsang", V1, "utterances") not in value  # versions only where they served
    mean = (200 * 0.9 + 100 * 0.6 + 40 * 0.8) / 340
    conf = got[("all", "all", "", "confidence_mean")]
    assert conf.value == pytest.approx(mean, abs=1e-6) and conf.ci_low < mean < conf.ci_high and conf.n == 340
    assert value[("dialect", "gyeongsang", "", "confidence_mean")] == pytest.approx(0.6)
    # Complaints per 1,000: 3 in the window, over 340 utterances; by version only where a request names one.
    voc = got[("all", "all", "", "voc_per_1k")]
    assert voc.value == pytest.approx(3000 / 340, rel=1e-4) and voc.n == 3
    assert got[("all", "all", V1, "voc_per_1k")].n == 2
    assert value[("all", "all", "", "out_of_grammar_share")] == 0.0

    # Online WER: the same numbers the offline evaluation would give for these pairs.
    normalize = get_language_pack("ko").normalize
    expected = score([normalize(r) for r, _ in PAIRS], [normalize(h) for _, h in PAIRS], [{}] * len(PAIRS))
    labeled_rows = rows(catalog, window_s=FAST.labeled_window_s)
    wer = labeled_rows[("all", "all", "", "wer")]
    assert wer.n == 40 and wer.value == pytest.approx(expected.overall.wer, abs=1e-4)
    assert labeled_rows[("all", "all", "", "cer")].value == pytest.approx(expected.overall.cer, abs=1e-4)
    assert wer.ci_low <= wer.value <= wer.ci_high and wer.ci_low < wer.ci_high
    assert labeled_rows[("dialect", "standard", V1, "wer")].n == 40
    # Baselines: the champion's offline WER per slice; none for device_type (not evaluated offline).
    assert labeled_rows[("dialect", "standard", "", "wer_baseline")].value == pytest.approx(0.1)
    assert labeled_rows[("dialect", "gyeongsang", "", "wer_baseline")].value == pytest.approx(0.3)
    assert ("device_type", "speaker", "", "wer_baseline") not in labeled_rows
    assert ("dialect", "gyeongsang", V2, "wer_baseline") not in labeled_rows  # V2 has no evaluation given
    assert len(labeled) == 40


def test_psi_is_small_for_the_training_distribution_and_large_for_a_shift(catalog):
    with session_scope(catalog) as s:
        add_utterances(s, 600, environment="quiet", seed=3)
        add_utterances(s, 600, environment="far_field", seed=4, shift={"snr_db": -15.0, "speech_dbfs": -8.0})
    compute_window(catalog, T0, HOUR, reference=reference_profile(), config=FAST)
    got = rows(catalog)
    assert got[("environment", "quiet", "", "psi_snr_db")].value < 0.05
    assert got[("environment", "quiet", "", "psi_duration")].value < 0.05
    assert got[("environment", "far_field", "", "psi_snr_db")].value > 1.0
    assert got[("environment", "far_field", "", "psi_speech_dbfs")].value > 0.2
    assert got[("environment", "far_field", "", "psi_duration")].value < 0.05  # unshifted feature stays put
    assert got[("environment", "far_field", "", "ks_snr_db")].value > 0.5
    assert got[("environment", "far_field", "", "psi_snr_db")].n == 600


def test_rerunning_a_window_gives_the_same_rows(catalog):
    with session_scope(catalog) as s:
        add_utterances(s, 120)
        add_labeled(s, PAIRS[:8], dialect="jeolla")
    args = dict(baselines={"": BASELINE}, reference=reference_profile(), config=FAST)
    compute_window(catalog, T0, HOUR, **args)
    first = {k: (r.id, r.value, r.ci_low, r.ci_high, r.n) for k, r in rows(catalog).items()}
    first_labeled = {k: (r.id, r.value, r.ci_low, r.n)
                     for k, r in rows(catalog, window_s=FAST.labeled_window_s).items()}
    compute_window(catalog, T0, HOUR, **args)
    assert {k: (r.id, r.value, r.ci_low, r.ci_high, r.n) for k, r in rows(catalog).items()} == first
    assert {k: (r.id, r.value, r.ci_low, r.n)
            for k, r in rows(catalog, window_s=FAST.labeled_window_s).items()} == first_labeled
    with catalog() as s:
        assert s.scalar(select(func.count()).select_from(SliceMetric)) == len(first) + len(first_labeled)

    # A transcript withdrawn after the first run: its slice's WER rows go, nothing stale is left behind.
    with session_scope(catalog) as s:
        s.execute(update(Label).values(status="rejected"))
    compute_window(catalog, T0, HOUR, **args)
    assert not [k for k in rows(catalog, window_s=FAST.labeled_window_s) if k[3] in ("wer", "cer")]


def test_previous_windows_give_the_references_and_silent_slices_a_zero(catalog):
    ends = window_ends(T0, HOUR, 4)
    with session_scope(catalog) as s:
        for i, end in enumerate(ends[:3]):
            add_utterances(s, 100, end=end, confidence=0.9, seed=10 + i)
            add_utterances(s, 60, end=end, dialect="jeju", seed=20 + i)
        add_utterances(s, 100, end=ends[3], confidence=0.7, seed=30)  # jeju is silent in the last window
    for end in ends:
        compute_window(catalog, end, HOUR, config=FAST)
    got = rows(catalog, end=ends[3])
    assert got[("all", "all", "", "confidence_ref")].value == pytest.approx((0.9 * 100 + 0.9 * 60) / 160)
    assert got[("dialect", "standard", "", "confidence_drift")].value == pytest.approx(-0.2)
    assert got[("dialect", "jeju", "", "utterances")].value == 0
    assert got[("dialect", "jeju", "", "utterances_ref")].value == pytest.approx(60)
    assert got[("all", "all", "", "utterances_ref")].n == 3  # three previous windows


def test_empty_window_still_says_zero(catalog):
    result = compute_window(catalog, T0, HOUR, config=FAST)
    assert result.utterances == 0
    assert rows(catalog)[("all", "all", "", "utterances")].value == 0


def test_windows_and_durations():
    assert parse_window("1h") == 3600 and parse_window("15m") == 900 and parse_window("7200") == 7200
    for bad in ("", "1x", "-1h", "1.5h", "10s", "1000d"):
        with pytest.raises(ValueError, match="window"):
            parse_window(bad)
    assert align(T0 + timedelta(minutes=59), HOUR) == T0
    assert window_ends(T0 + timedelta(minutes=5), HOUR, 3) == [T0 - timedelta(hours=2), T0 - timedelta(hours=1), T0]


def test_psi_and_ks_from_binned_counts():
    profile = FeatureProfile.of(np.random.default_rng(0).normal(0, 1, 10_000))
    assert len(profile.edges) == 9 and sum(profile.shares) == pytest.approx(1.0)
    same = np.random.default_rng(1).normal(0, 1, 5000)
    cumulative = [float((same < e).sum()) for e in profile.edges]  # what the SQL returns
    counts = bin_counts(cumulative, len(same))
    assert counts.sum() == 5000 and psi(profile.shares, counts) < 0.02 and ks_binned(profile.shares, counts) < 0.03
    shifted = same + 1.0
    counts = bin_counts([float((shifted < e).sum()) for e in profile.edges], len(shifted))
    assert psi(profile.shares, counts) > 0.5
    assert psi(profile.shares, [0] * 10) is None


def test_reference_profile_round_trips(tmp_path):
    ref = reference_profile()
    again = ReferenceProfile.load(ref.save(tmp_path / "ref.json"))
    assert again == ref
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a reference profile"):
        ReferenceProfile.load(tmp_path / "bad.json")


def test_baseline_weights_splits_and_maps_slices():
    b = Baseline.from_flat_metrics(V1, {
        "test_seen.wer": 0.1, "test_seen.n.gender.male": 30, "test_seen.n.gender.female": 70,
        "test_seen.wer.gender.male": 0.1, "test_seen.n.dialect.standard": 100, "test_seen.wer.dialect.standard": 0.1,
        "test_heldout.wer": 0.4, "test_heldout.n.dialect.standard": 50, "test_heldout.wer.dialect.standard": 0.25,
        "test_heldout.n.dialect.jeolla": 50, "test_heldout.wer.dialect.jeolla": 0.55,
    })
    assert b.splits == ("test_seen", "test_heldout")
    assert b.get("wer", "all", "all") == (pytest.approx((0.1 * 100 + 0.4 * 100) / 200), 200)
    assert b.get("wer", "dialect", "standard") == (pytest.approx((0.1 * 100 + 0.25 * 50) / 150), 150)
    assert b.get("wer", "dialect", "jeolla") == (0.55, 50)
    assert b.get("wer", "device_type", "speaker") is None and b.get("wer", "dialect", "jeju") is None
    assert eval_slice("environment", "tv") == ("environment", "tv")
    with pytest.raises(ValueError, match="unknown slice key"):
        eval_slice("gender", "male")
