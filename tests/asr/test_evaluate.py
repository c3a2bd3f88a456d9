"""Scoring: WER/CER/exact-match by slice with bootstrap intervals, JSON and MLflow-friendly output."""

import json

import pytest

from asr.evaluate import edit_counts, score


def test_edit_counts_words_and_characters():
    # one substituted word; one substituted syllable; CER ignores spaces
    assert edit_counts("거실 불 켜줘", "거실 물 켜줘") == (1, 3, 1, 5)
    assert edit_counts("거실 불 켜줘", "거실불 켜줘")[2] == 0  # spacing slip: no character error
    assert edit_counts("", "켜줘") == (1, 0, 2, 0)


def test_score_overall_and_slices(tmp_path):
    refs = ["거실 불 켜줘", "티비 꺼줘", "볼륨 삼으로 해줘", "안방 에어컨 켜줘"]
    hyps = ["거실 불 켜줘", "티비 꺼져", "볼륨 삼으로 해줘", "안방 에어컨 켜"]
    slices = [{"dialect": "standard", "age_band": "30s"}, {"dialect": "jeolla", "age_band": "30s"},
              {"dialect": "standard", "age_band": "70s+"}, {"dialect": "jeolla", "age_band": "70s+"}]
    report = score(refs, hyps, slices, ids=["a", "b", "c", "d"], confidences=[0.9, 0.5, 0.8, 0.4])
    assert report.overall.n == 4
    assert report.overall.exact_match == 0.5
    assert report.overall.cer == pytest.approx(2 / 23, abs=1e-3)  # 2 char errors over 23 reference syllables
    assert set(report.slices["dialect"]) == {"standard", "jeolla"}
    assert report.slices["dialect"]["standard"].cer == 0.0
    assert report.slices["dialect"]["jeolla"].exact_match == 0.0
    lo, hi = report.overall.cer_ci
    assert lo <= report.overall.cer <= hi
    flat = report.flat_metrics()
    assert flat["cer.dialect.standard"] == 0.0 and flat["n.age_band.70s+"] == 2
    report.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["utterances"][1] == {"id": "b", "ref": "티비 꺼줘", "hyp": "티비 꺼져", "confidence": 0.5,
                                     "cer": 0.25, "dialect": "jeolla", "age_band": "30s"}


def test_bootstrap_is_deterministic_and_narrows_with_more_data():
    refs, hyps = ["가나다라"] * 10, ["가나다마"] * 5 + ["가나다라"] * 5
    small = score(refs, hyps, [{}] * 10).overall
    big = score(refs * 20, hyps * 20, [{}] * 200).overall
    assert small == score(refs, hyps, [{}] * 10).overall
    assert (big.cer_ci[1] - big.cer_ci[0]) < (small.cer_ci[1] - small.cer_ci[0])


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        score([], [], [])
