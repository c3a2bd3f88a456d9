"""Dataset versions: deterministic hash, only reviewed + consented data, speaker-disjoint stable splits,
per-slice counts, and a manifest training can read (real catalog, real eSpeak audio)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
from _dataset_helpers import RATIOS, Clips, add_recording, add_speaker, labeler, speaker_with_recordings, split_keys
from sqlalchemy import func, select
from typer.testing import CliRunner

from asr.audio import load_audio
from collection.datasets import (
    DATASET_FILE,
    assign_split,
    build_dataset,
    count_slices,
    dataset_tags,
    speakers_by_split,
    split_key,
)
from collection.db import connect, session_scope
from collection.manifest import SLICE_KEYS, load_split, manifest_hash, read_jsonl
from collection.models import Consent, DatasetMember, DatasetVersion, Speaker, utcnow
from collection.store import AudioStore


def seed_speakers(catalog, audio_store, clips, n: int, prefix: str = "s", per: int = 2) -> dict[str, list[str]]:
    dialects, ages, genders = ("standard", "gyeongsang", "jeolla"), ("20s", "40s", "60s"), ("female", "male")
    out = {}
    with session_scope(catalog) as s:
        for i in range(n):
            speaker, recs = speaker_with_recordings(s, audio_store, clips, f"{prefix}{i}", per,
                                                    dialect=dialects[i % 3], age_band=ages[i % 3],
                                                    gender=genders[i % 2])
            out[speaker.id] = recs
    return out


def all_supervisions(root) -> dict[str, dict]:
    return {d["id"]: d for split in root.iterdir() if split.is_dir()
            for d in read_jsonl(split / "supervisions.jsonl")}


def test_same_inputs_same_hash_no_duplicate(catalog, audio_store, clips, tmp_path, monkeypatch):
    speakers = seed_speakers(catalog, audio_store, clips, 4)
    out = tmp_path / "datasets"
    with session_scope(catalog) as s:
        first = build_dataset(s, audio_store, out, name="main", split_ratios=RATIOS)
    root = out / first.id
    assert first.id == f"ds-{first.content_hash[:12]}"
    assert manifest_hash(root) == first.content_hash
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    import collection.db

    monkeypatch.setattr(collection.db, "IN_CHUNK", 3)  # big catalogs are read in chunks: same version
    with session_scope(catalog) as s:
        again = build_dataset(s, audio_store, out, name="main", split_ratios=RATIOS)
        assert again.id == first.id and again.content_hash == first.content_hash
        assert s.scalar(select(func.count()).select_from(DatasetVersion)) == 1
        assert s.scalar(select(func.count()).select_from(DatasetMember)) == 8
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps  # nothing rewritten
    assert sorted(p.name for p in out.iterdir()) == [first.id]  # no temporary directory left behind
    meta = json.loads((root / DATASET_FILE).read_text())
    assert meta["id"] == first.id and meta["content_hash"] == first.content_hash and meta["redactions"] == []
    assert dataset_tags(root) == {"dataset_version": first.id, "dataset_hash": first.content_hash}
    assert dataset_tags(tmp_path) == {}
    # Another seed moves speakers between splits: another manifest, another version.
    with session_scope(catalog) as s:
        other = build_dataset(s, audio_store, out, name="main", split_ratios=RATIOS, seed=1)
        key_of = split_keys(s)
    keys = [key_of[spk] for spk in speakers]
    moved = any(assign_split(key, RATIOS, 0) != assign_split(key, RATIOS, 1) for key in keys)
    assert (other.id != first.id) == moved


def test_only_reviewed_labels_from_consented_speakers(catalog, audio_store, clips, tmp_path):
    with session_scope(catalog) as s:
        ok = add_speaker(s, "ok")
        reviewed = {add_recording(s, audio_store, clips, ok, text="거실 불 켜줘")[0]}
        for status in ("prelabelled", "submitted", "rejected"):
            add_recording(s, audio_store, clips, ok, status=status)
        add_recording(s, audio_store, clips, ok, status=None)  # never labelled
        add_recording(s, audio_store, clips, ok, flags=("unintelligible",), text="")
        no_training = add_speaker(s, "review-only", scope_training=False)
        add_recording(s, audio_store, clips, no_training)
        unconsented = add_speaker(s, "no-consent", consent=False)
        add_recording(s, audio_store, clips, unconsented)
        revoked = add_speaker(s, "revoked")
        add_recording(s, audio_store, clips, revoked)
        s.get(Consent, revoked.consent_id).revoked_at = utcnow()
        expired = add_speaker(s, "expired", retention_days=1)
        add_recording(s, audio_store, clips, expired)
        s.get(Consent, expired.consent_id).granted_at = utcnow() - timedelta(days=2)
        voice = add_speaker(s, "voice", consent=False, persona="synthetic")  # no person behind it
        reviewed.add(add_recording(s, audio_store, clips, voice)[0])
        sim = add_speaker(s, "sim")
        simulated = add_recording(s, audio_store, clips, sim, user=labeler(s, "sim-1", simulated=True))[0]
        reviewed.add(simulated)
    with session_scope(catalog) as s:
        version = build_dataset(s, audio_store, tmp_path, name="main", split_ratios=RATIOS)
        without_sim = build_dataset(s, audio_store, tmp_path, name="main", split_ratios=RATIOS,
                                    include_simulated=False)
    sups = all_supervisions(tmp_path / version.id)
    assert set(sups) == reviewed
    assert next(d["text"] for d in sups.values() if d["speaker"] == ok.id) == "거실 불 켜줘"  # the label's text
    assert sups[simulated]["custom"]["labeler_simulated"] is True
    assert set(all_supervisions(tmp_path / without_sim.id)) == reviewed - {simulated}
    assert version.recipe["skipped"] == {"no_training_consent": 4}
    assert without_sim.parent_id == version.id


def test_splits_disjoint_counts_right_and_stable(catalog, audio_store, clips, tmp_path):
    seed_speakers(catalog, audio_store, clips, 8)
    with session_scope(catalog) as s:
        v1 = build_dataset(s, audio_store, tmp_path, name="main", split_ratios=RATIOS)
        split_of_v1 = {spk: split for split, spks in speakers_by_split(s, v1.id).items() for spk in spks}
        keys = split_keys(s)
    root = tmp_path / v1.id
    by_split = {split: load_split(root / split) for split in RATIOS}
    speakers = {split: {u.speaker for u in utts} for split, utts in by_split.items()}
    for a in RATIOS:
        for b in RATIOS:
            assert a == b or not speakers[a] & speakers[b], f"{a} and {b} share a speaker"
    assert sum(len(u) for u in by_split.values()) == 16
    for split, utts in by_split.items():
        assert v1.counts[split] == count_slices(utts)
        expected = Counter(u.supervision.custom["dialect"] for u in utts)
        assert v1.counts[split]["dialect"] == dict(expected)
        assert v1.counts[split]["total"]["speakers"] == len(speakers[split])
        assert set(v1.counts[split]) == {"total", *SLICE_KEYS}
        for u in utts:
            assert split_of_v1[u.speaker] == split == assign_split(keys[u.speaker], RATIOS, 0)
    # New speakers arrive: every old speaker keeps its split; the new version names v1 as parent.
    seed_speakers(catalog, audio_store, clips, 4, prefix="new")
    with session_scope(catalog) as s:
        v2 = build_dataset(s, audio_store, tmp_path, name="main", split_ratios=RATIOS)
        split_of_v2 = {spk: split for split, spks in speakers_by_split(s, v2.id).items() for spk in spks}
    assert v2.id != v1.id and v2.parent_id == v1.id
    assert len(split_of_v2) == 12
    assert all(split_of_v2[spk] == split for spk, split in split_of_v1.items())


def test_a_speakers_split_key_is_who_they_are_where_they_came_from():
    # the same persona or device in another catalog gets another catalog id, and the same split key
    assert split_key(Speaker(id="spk-a", source="synthetic", external_id="tiny/60s/spk000")) == \
        split_key(Speaker(id="spk-b", source="synthetic", external_id="tiny/60s/spk000")) == "synthetic:tiny/60s/spk000"
    assert split_key(Speaker(id="spk-c")) == "spk-c"  # nothing else to go by


def test_assign_split_follows_ratios():
    ids = [f"spk-{i:06d}" for i in range(4000)]
    shares = Counter(assign_split(i, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=3) for i in ids)
    assert abs(shares["train"] / 4000 - 0.8) < 0.03 and abs(shares["dev"] / 4000 - 0.1) < 0.02
    assert [assign_split(i, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=3) for i in ids[:50]] == \
        [assign_split(i, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=3) for i in ids[:50]]


def test_training_reads_the_version(catalog, audio_store, clips, tmp_path):
    spk = seed_speakers(catalog, audio_store, clips, 3)
    with session_scope(catalog) as s:
        version = build_dataset(s, audio_store, tmp_path, name="main", split_ratios={"train": 1.0})
    utts = load_split(tmp_path / version.id / "train")
    assert {u.id for u in utts} == {r for recs in spk.values() for r in recs}
    for u in utts:
        wav = load_audio(u.audio_path)
        assert wav.shape == (u.recording.num_samples,)
        assert u.audio_path.is_relative_to(audio_store.root)
        assert set(u.slices) == set(SLICE_KEYS) and u.slices["source"] == "upload"
        assert u.supervision.custom["label_id"].startswith("lbl-") and u.text


def test_nothing_to_freeze_and_bad_options(catalog, audio_store, tmp_path):
    with session_scope(catalog) as s:
        with pytest.raises(ValueError, match="nothing to freeze"):
            build_dataset(s, audio_store, tmp_path, name="main")
        with pytest.raises(ValueError, match="positive shares"):
            build_dataset(s, audio_store, tmp_path, name="main", split_ratios={"train": 0})
        with pytest.raises(ValueError, match="parent dataset version 'ds-nope' does not exist"):
            build_dataset(s, audio_store, tmp_path, name="main", parent="ds-nope")


def test_cli_build_and_list(tmp_path, monkeypatch, tiny_studio):
    from voiceloop.cli import app

    for var in ("VOICELOOP_CATALOG_URL", "VOICELOOP_AUDIO_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    url = f"sqlite:///{(tmp_path / 'catalog.db').resolve()}"
    seed_speakers(connect(url), AudioStore(tmp_path / "audio-store"), Clips(tiny_studio), 3)
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    built = runner.invoke(app, ["dataset", "build", "--splits", "train=0.5,dev=0.25,test=0.25", *data])
    assert built.exit_code == 0, built.output
    (version,) = [p.name for p in (tmp_path / "datasets").iterdir()]
    assert version in built.output and "dialect" in built.output and "gyeongsang" in built.output
    again = runner.invoke(app, ["dataset", "build", "--splits", "train=0.5,dev=0.25,test=0.25", *data])
    assert again.exit_code == 0 and version in again.output
    listed = runner.invoke(app, ["dataset", "list", *data])
    assert listed.exit_code == 0 and listed.output.count("ds-") == 1, listed.output
    bad = runner.invoke(app, ["dataset", "build", "--splits", "train", *data])
    assert bad.exit_code != 0
