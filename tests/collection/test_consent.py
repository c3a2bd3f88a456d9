"""Consent, deletion requests, retention and the consent gate on production audio (real catalog, real audio
store, real manifests, a real MLflow registry)."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _dataset_helpers import (
    RATIOS,
    SECRET,
    Clips,
    add_recording,
    add_speaker,
    speaker_with_recordings,
    split_keys,
)
from sqlalchemy import func, select
from typer.testing import CliRunner

from collection.consent import (
    ConsentError,
    active_consent,
    expire_retention,
    grant_consent,
    grant_device_consent,
    record_production,
    revoke_consent,
)
from collection.datasets import assign_split, build_dataset, count_version
from collection.db import connect, session_scope
from collection.deletion import delete_speaker, subject_digest, was_erased
from collection.ingest import ingest
from collection.manifest import load_split, manifest_hash
from collection.models import (
    AuditEntry,
    Base,
    Consent,
    DatasetVersion,
    Label,
    LabelTask,
    ProductionUtterance,
    Recording,
    Speaker,
    utcnow,
)
from collection.store import AudioStore


def short_wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, dtype=np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def hits(catalog, store_root: Path, datasets_root: Path, needles: set[str]) -> list[str]:
    """Every place a needle still appears: each value of each row of every table, every file name in the audio
    store, and the name and text of every file under the datasets root."""
    found = []
    with session_scope(catalog) as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)).all():
                text = " ".join(str(v) for v in row)
                found += [f"{table.name}: {n}" for n in needles if n in text]
    for path in store_root.rglob("*"):
        found += [f"audio store {path}" for n in needles if n in str(path)]
    for path in datasets_root.rglob("*"):
        text = str(path) + (path.read_text(encoding="utf-8") if path.is_file() else "")
        found += [f"datasets {path}" for n in needles if n in text]
    return found


def register_model_on(mlflow_store, version: DatasetVersion, tmp_path: Path) -> tuple[str, str]:
    from mlflow import MlflowClient

    from asr.registry import register

    exp, _ = mlflow_store
    client = MlflowClient()
    run = client.create_run(exp, tags={"dataset_version": version.id, "dataset_hash": version.content_hash})
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not a real checkpoint: the registry only needs the artifact")
    client.log_artifact(run.info.run_id, str(ckpt), "checkpoint")
    client.set_terminated(run.info.run_id)
    name = f"deletion-test-{uuid.uuid4().hex[:6]}"
    return name, register(run.info.run_id, name)


def test_deletion_leaves_no_trace(catalog, audio_store, clips, tmp_path, mlflow_store):
    datasets = tmp_path / "datasets"
    with session_scope(catalog) as s:
        target, target_recs = speaker_with_recordings(s, audio_store, clips, "target", 3)
        others = {sp.id: recs for sp, recs in (speaker_with_recordings(s, audio_store, clips, f"other{i}", 2)
                                              for i in range(4))}
        unlabeled = add_recording(s, audio_store, clips, target, status=None)[0]
        s.add(LabelTask(recording_id=unlabeled))  # an open task on their audio
        assert ingest(s, audio_store, short_wav(), source="upload", speaker_id=target.id,
                      external_id="target/short", language="ko").reason == "too_short"
        target_recs.append(unlabeled)
        shas = set(s.scalars(select(Recording.sha256).where(Recording.id.in_(target_recs))))
        # Someone else submitting the target's audio again: a rejection that holds the target's audio hash.
        first_audio = audio_store.get(s.get(Recording, target_recs[0]).uri)
        other_id = next(iter(others))
        assert ingest(s, audio_store, first_audio, source="upload", speaker_id=other_id, external_id="copy",
                      language="ko").reason == "duplicate"
        external = target.external_id
    with session_scope(catalog) as s:
        v1 = build_dataset(s, audio_store, datasets, name="main", split_ratios=RATIOS)
        # A seed that moves some speaker to another split, so the second version differs from the first.
        key_of = split_keys(s)
        keys = [key_of[sp] for sp in (target.id, *others)]
        seed = next(k for k in range(1, 1000)
                    if any(assign_split(key, RATIOS, k) != assign_split(key, RATIOS, 0) for key in keys))
        v2 = build_dataset(s, audio_store, datasets, name="main", split_ratios=RATIOS, seed=seed)
    with session_scope(catalog) as s:  # a transcript submitted after the versions were frozen
        s.add(Label(task_id=s.scalar(select(LabelTask.id).where(LabelTask.recording_id == unlabeled)),
                    recording_id=unlabeled, text="x", status="submitted"))
    model_name, model_version = register_model_on(mlflow_store, v1, tmp_path)
    lines_before = {v.id: sum(len(load_split(d)) for d in (datasets / v.id).iterdir() if d.is_dir())
                    for v in (v1, v2)}
    other_files = {r: audio_store.local_path(uri) for r, uri in _uris(catalog, others)}
    assert hits(catalog, Path(audio_store.root), datasets, {target.id, *shas})  # the scan does see them

    with session_scope(catalog) as s:
        report = delete_speaker(s, audio_store, target.id, actor="dpo@example", reason=f"ticket 42 for {target.id}",
                                secret=SECRET)

    assert hits(catalog, Path(audio_store.root), datasets, {target.id, *shas}) == []
    assert report.recordings == 4 and report.audio_files == 4
    assert report.dataset_versions == sorted([v1.id, v2.id])
    assert [(m["model"], m["version"], m["dataset_version"]) for m in report.model_versions] == [
        (model_name, model_version, v1.id)]
    assert report.rows["rejections"] == 2 and report.rows["labels"] == 4 and report.rows["label_tasks"] == 4
    with session_scope(catalog) as s:
        (audit,) = s.scalars(select(AuditEntry).where(AuditEntry.action == "delete_speaker")).all()
        assert audit.subject_digest == subject_digest(SECRET, target.id) and audit.actor == "dpo@example"
        assert audit.detail["dataset_versions"] == report.dataset_versions
        assert audit.detail["model_versions"] == report.model_versions
        assert audit.detail["reason"] == "ticket 42 for [subject]"
        consent = s.scalar(select(Consent).where(Consent.subject_id == audit.subject_digest))
        assert consent.revoked_at is not None and consent.text_version == "v1"  # proof kept, identity not
        assert was_erased(s, SECRET, source="test", external_id=external)
        assert was_erased(s, SECRET, sha256=next(iter(shas)))
        assert not was_erased(s, SECRET, source="test", external_id="other0")
        # Everyone else is untouched: rows, audio files, manifest lines.
        assert s.scalar(select(func.count()).select_from(Speaker)) == 4
        assert sorted(s.scalars(select(Recording.id))) == sorted(r for recs in others.values() for r in recs)
        assert s.scalar(select(func.count()).select_from(Label)) == 8
        for version in (v1, v2):
            row = s.get(DatasetVersion, version.id)
            root = Path(row.manifest_uri)
            assert row.content_hash == version.content_hash  # the version keeps its identity
            (redaction,) = row.redactions
            assert redaction["request_id"] == report.request_id and redaction["lines_removed"] == 6
            assert redaction["hash_after"] == manifest_hash(root) and row.counts == count_version(root)
            assert sum(len(load_split(d)) for d in root.iterdir() if d.is_dir()) == lines_before[version.id] - 3
            assert json.loads((root / "dataset.json").read_text())["redactions"] == row.redactions
    assert all(path.is_file() for path in other_files.values())
    with session_scope(catalog) as s, pytest.raises(LookupError, match="already deleted"):
        delete_speaker(s, audio_store, target.id, actor="dpo", reason="again", secret=SECRET)
    # The next version is built without them.
    with session_scope(catalog) as s:
        v3 = build_dataset(s, audio_store, datasets, name="main", split_ratios=RATIOS)
    assert v3.id not in (v1.id, v2.id) and v3.parent_id == v2.id


def _uris(catalog, others: dict[str, list[str]]) -> list[tuple[str, str]]:
    with session_scope(catalog) as s:
        return list(s.execute(select(Recording.id, Recording.uri).where(
            Recording.id.in_([r for recs in others.values() for r in recs]))).tuples())


def test_revoke_by_speaker_and_shared_corpus_consent(catalog, audio_store, clips, tmp_path):
    with session_scope(catalog) as s:
        own, _ = speaker_with_recordings(s, audio_store, clips, "own", 1)
        corpus = Consent(subject_type="speaker", subject_id="corpus:kaldi:demo", text_version="corpus:kaldi:demo",
                         scope_training=True, scope_human_review=True, retention_days=3650)
        s.add(corpus)
        s.flush()
        members = [add_speaker(s, f"c{i}", consent=False) for i in range(3)]
        for m in members:
            m.consent_id = corpus.id
            add_recording(s, audio_store, clips, m)
        corpus_id, member_ids = corpus.id, [m.id for m in members]
    with session_scope(catalog) as s:
        (report,) = revoke_consent(s, audio_store, own.id, actor="web", secret=SECRET, check_models=False)
        assert report.action == "revoke_consent" and report.recordings == 1
        # One contributor leaving does not end the corpus' consent for the others.
        revoke_consent(s, audio_store, member_ids[0], actor="web", secret=SECRET, check_models=False)
        assert s.get(Consent, corpus_id).revoked_at is None
        assert s.get(Speaker, member_ids[1]) is not None
    with session_scope(catalog) as s:  # withdrawing the corpus erases everyone under it
        reports = revoke_consent(s, audio_store, corpus_id, actor="legal", secret=SECRET, check_models=False)
        assert len(reports) == 2 and s.get(Consent, corpus_id).revoked_at is not None
        assert s.scalar(select(func.count()).select_from(Recording)) == 0
        assert audio_store.keys() == []
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "revoke_consent")) == 4
        with pytest.raises(LookupError, match="neither a consent id nor a speaker id"):
            revoke_consent(s, audio_store, "spk-nobody", actor="web", secret=SECRET)


def test_grant_consent_checks_the_form(catalog):
    required = ["voice", "purpose", "retention", "human_review"]
    with session_scope(catalog) as s:
        spk = add_speaker(s, "p", consent=False)
        with pytest.raises(ConsentError, match=r"\['human_review'\] not ticked"):
            grant_consent(s, subject_type="speaker", subject_id=spk.id, text_version="v1", scope_training=True,
                          scope_human_review=True, retention_days=30, checklist=required[:3], required=required)
        with pytest.raises(ConsentError, match="unknown item"):
            grant_consent(s, subject_type="speaker", subject_id=spk.id, text_version="v1", scope_training=True,
                          scope_human_review=True, retention_days=30, checklist=[*required, "sell_data"],
                          required=required)
        for bad, match in (({"subject_type": "robot"}, "unknown subject_type"),
                           ({"retention_days": 0}, "positive whole number"),
                           ({"subject_id": "spk-missing"}, "no speaker 'spk-missing'")):
            args = {"subject_type": "speaker", "subject_id": spk.id, "retention_days": 30, **bad}
            with pytest.raises(ConsentError, match=match):
                grant_consent(s, text_version="v1", scope_training=True, scope_human_review=True,
                              checklist=required, required=required, **args)
        first = grant_consent(s, subject_type="speaker", subject_id=spk.id, text_version="v1", scope_training=True,
                              scope_human_review=True, retention_days=30, checklist=required, required=required)
        same = grant_consent(s, subject_type="speaker", subject_id=spk.id, text_version="v1", scope_training=True,
                             scope_human_review=True, retention_days=30, checklist=required, required=required)
        assert same.id == first.id
        newer = grant_consent(s, subject_type="speaker", subject_id=spk.id, text_version="v2", scope_training=False,
                              scope_human_review=True, retention_days=30, checklist=required, required=required)
        assert first.revoked_at is not None and spk.consent_id == newer.id
        assert active_consent(s, "speaker", spk.id) == newer
        assert active_consent(s, "speaker", spk.id, scope="scope_training") is None


def test_expire_retention(catalog, audio_store, clips):
    with session_scope(catalog) as s:
        old, _ = speaker_with_recordings(s, audio_store, clips, "old", 1, retention_days=30)
        s.get(Consent, old.consent_id).granted_at = utcnow() - timedelta(days=31)
        keep, keep_recs = speaker_with_recordings(s, audio_store, clips, "keep", 1, retention_days=30)
        grant_device_consent(s, device_id="dev-1", text_version="d1", scope_training=True, retention_days=7)
        wav_old, wav_new = clips.take()[0], clips.take()[0]
        stale = record_production(s, audio_store, request_id="r-old", device_id="dev-1", audio=wav_old,
                                  hypothesis="a", confidence=0.9, latency_ms=80.0, model_version="m/1", language="ko")
        fresh = record_production(s, audio_store, request_id="r-new", device_id="dev-1", audio=wav_new,
                                  hypothesis="b", confidence=0.9, latency_ms=80.0, model_version="m/1", language="ko")
        s.get(Recording, stale.recording_id).created_at = utcnow() - timedelta(days=8)
        old_id, fresh_rec = old.id, fresh.recording_id
    with session_scope(catalog) as s:
        reports = expire_retention(s, audio_store, secret=SECRET, check_models=False)
        assert sorted(r.action for r in reports) == ["expire_retention", "expire_retention"]
        assert s.get(Speaker, old_id) is None and s.get(Speaker, keep.id) is not None
        assert sorted(s.scalars(select(Recording.id))) == sorted([*keep_recs, fresh_rec])
        assert s.get(ProductionUtterance, "r-old").recording_id is None
        assert active_consent(s, "device", "dev-1") is not None  # the device's consent itself stays
    with session_scope(catalog) as s:
        assert expire_retention(s, audio_store, secret=SECRET, check_models=False) == []  # re-run: nothing left


def test_renewed_consent_is_not_erased_by_the_lapsed_one(catalog, audio_store, clips):
    """A speaker whose consent lapsed renews it before the retention job runs: the job must not erase
    what the new consent covers."""
    with session_scope(catalog) as s:
        spk, recs = speaker_with_recordings(s, audio_store, clips, "renewer", 1, retention_days=30)
        s.get(Consent, spk.consent_id).granted_at = utcnow() - timedelta(days=31)
        grant_consent(s, subject_type="speaker", subject_id=spk.id, text_version="v2", scope_training=True,
                      scope_human_review=True, retention_days=365, checklist=["voice", "purpose"])
    with session_scope(catalog) as s:
        assert expire_retention(s, audio_store, secret=SECRET, check_models=False) == []
        assert s.get(Speaker, spk.id) is not None and sorted(s.scalars(select(Recording.id))) == sorted(recs)


def test_a_replayed_request_does_not_bring_erased_audio_back(catalog, audio_store, clips):
    common = {"confidence": 0.8, "latency_ms": 120.0, "model_version": "voiceloop-asr/3", "language": "ko",
              "erasure_secret": SECRET}
    with session_scope(catalog) as s:
        grant_device_consent(s, device_id="tv-1", text_version="d1", scope_training=True, retention_days=30)
        wav = clips.take()[0]
        rec_id = record_production(s, audio_store, request_id="q1", device_id="tv-1", audio=wav, hypothesis="a",
                                   **common).recording_id
        speaker_id = s.get(Recording, rec_id).speaker_id
        delete_speaker(s, audio_store, speaker_id, actor="ops", reason="request", secret=SECRET, check_models=False)
    with session_scope(catalog) as s:  # Kafka redelivers q1 (at-least-once) and the device re-sends the audio
        grant_device_consent(s, device_id="tv-1", text_version="d2", scope_training=True, retention_days=30)
        assert record_production(s, audio_store, request_id="q1", device_id="tv-1", audio=wav, hypothesis="a",
                                 **common).recording_id is None
        assert s.scalar(select(func.count()).select_from(Recording)) == 0 and audio_store.keys() == []


def test_production_audio_only_with_device_consent(catalog, audio_store, clips):
    common = {"confidence": 0.8, "latency_ms": 120.0, "model_version": "voiceloop-asr/3", "language": "ko"}
    with session_scope(catalog) as s:
        utt = record_production(s, audio_store, request_id="q1", device_id="tv-1", audio=clips.take()[0],
                                hypothesis="볼륨 올려줘", **common)
        assert utt.recording_id is None and s.scalar(select(func.count()).select_from(Recording)) == 0
        assert utt.hypothesis is None and utt.confidence == 0.8  # no consent: the service log, not what was said
        grant_device_consent(s, device_id="tv-2", text_version="d1", scope_training=False, retention_days=30)
        q2 = record_production(s, audio_store, request_id="q2", device_id="tv-2", audio=clips.take()[0],
                               hypothesis="x", **common)
        assert q2.recording_id is None and q2.hypothesis == "x"  # consent without training: text, no audio
        assert audio_store.keys() == []
        grant_device_consent(s, device_id="tv-1", text_version="d1", scope_training=True, retention_days=30)
        wav = clips.take()[0]
        utt = record_production(s, audio_store, request_id="q3", device_id="tv-1", audio=wav, hypothesis="불 꺼줘",
                                **common)
        rec = s.get(Recording, utt.recording_id)
        assert rec.source == "production" and rec.device == "tv-1" and rec.prompt_text is None
        speaker = s.get(Speaker, rec.speaker_id)
        assert (speaker.source, speaker.external_id, speaker.persona) == ("production", "tv-1", "real")
        # A replay (at-least-once delivery) updates the same row and stores nothing twice.
        again = record_production(s, audio_store, request_id="q3", device_id="tv-1", audio=wav, hypothesis="불 꺼 줘",
                                  **{**common, "latency_ms": 99.0})
        assert again.recording_id == rec.id and again.hypothesis == "불 꺼 줘" and again.latency_ms == 99.0
        assert s.scalar(select(func.count()).select_from(ProductionUtterance)) == 3
        assert s.scalar(select(func.count()).select_from(Recording)) == 1
        with pytest.raises(ValueError, match="belongs to device 'tv-1'"):
            record_production(s, audio_store, request_id="q3", device_id="tv-9", audio=None, hypothesis="", **common)
        consent_id, speaker_id, sha = active_consent(s, "device", "tv-1").id, speaker.id, rec.sha256
    with session_scope(catalog) as s:  # the owner withdraws: the audio goes, the service log stays
        (report,) = revoke_consent(s, audio_store, consent_id, actor="app", secret=SECRET, check_models=False)
        assert report.recordings == 1 and s.get(Speaker, speaker_id) is None
        utt = s.get(ProductionUtterance, "q3")
        assert utt.recording_id is None and utt.hypothesis is None and utt.latency_ms == 99.0
        assert not audio_store.exists(sha)
        later = record_production(s, audio_store, request_id="q4", device_id="tv-1", audio=clips.take()[0],
                                  hypothesis="y", **common)
        assert later.recording_id is None and s.scalar(select(func.count()).select_from(Recording)) == 0


def test_cli_delete_revoke_expire(tmp_path, monkeypatch, tiny_studio):
    from voiceloop.cli import app

    for var in ("VOICELOOP_CATALOG_URL", "VOICELOOP_AUDIO_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    catalog = connect(f"sqlite:///{(tmp_path / 'catalog.db').resolve()}")
    store = AudioStore(tmp_path / "audio-store")
    clips = Clips(tiny_studio)
    with session_scope(catalog) as s:
        a = speaker_with_recordings(s, store, clips, "a", 1)[0].id
        b = speaker_with_recordings(s, store, clips, "b", 1)[0].id
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    deleted = runner.invoke(app, ["consent", "delete", a, "--reason", "request 7", "--no-models", *data])
    assert deleted.exit_code == 0, deleted.output
    assert '"recordings": 1' in deleted.output and "model versions not checked" in deleted.output
    missing = runner.invoke(app, ["consent", "delete", a, "--reason", "again", "--no-models", *data])
    assert missing.exit_code == 1 and "already deleted" in missing.output
    revoked = runner.invoke(app, ["consent", "revoke", b, "--no-models", *data])
    assert revoked.exit_code == 0 and '"action": "revoke_consent"' in revoked.output
    expired = runner.invoke(app, ["consent", "expire", "--no-models", *data])
    assert expired.exit_code == 0 and "0 deletion(s)" in expired.output
    assert store.keys() == []
