"""The catalog schema and the audio store, on a real database (SQLite; PostgreSQL under `make test-pg`)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from sqlalchemy import inspect, select

from collection.db import make_engine, session_scope, upgrade
from collection.ingest import ensure_speaker, ingest
from collection.models import Base, Recording
from collection.store import AudioStore, sha256_bytes


def _tone_wav(seconds: float = 1.0, sr: int = 16000, freq: float = 220.0, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * freq * t) * ((t > 0.2) & (t < seconds - 0.2)) + 1e-3 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, wav.astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def test_migrations_create_every_model_table_and_rerun_is_a_no_op(catalog_url):
    upgrade(catalog_url)
    upgrade(catalog_url)  # second run: nothing to do, no error
    engine = make_engine(catalog_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    assert "alembic_version" in tables


def test_migration_matches_the_models(catalog_url):
    """Autogenerate against a migrated database finds nothing to add: models and migration agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    upgrade(catalog_url)
    engine = make_engine(catalog_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_store_writes_the_same_bytes_once(tmp_path):
    store = AudioStore(tmp_path / "store")
    data = _tone_wav()
    first, second = store.put(data), store.put(data)
    assert first.created and not second.created
    assert first.uri == second.uri and first.sha256 == sha256_bytes(data)
    assert store.keys() == [first.sha256]
    assert store.get(first.uri) == data
    assert store.delete(first.sha256) and store.keys() == []


def test_store_accepts_file_urls(tmp_path):
    store = AudioStore(f"file://{tmp_path / 'store'}")
    stored = store.put(b"RIFF-not-really-audio")
    assert (tmp_path / "store" / stored.sha256[:2] / f"{stored.sha256}.wav").exists()


def test_ingest_stores_canonical_audio_with_speaker_and_qc(catalog, audio_store):
    with session_scope(catalog) as s:
        spk = ensure_speaker(s, source="upload", external_id="volunteer-1", age_band="60s", gender="female",
                             dialect="jeolla")
        again = ensure_speaker(s, source="upload", external_id="volunteer-1")
        assert again.id == spk.id
        result = ingest(s, audio_store, _tone_wav(sr=48000), source="upload", speaker_id=spk.id,
                        external_id="sub-1", text="거실 불 7시에 켜줘", environment="quiet")
    assert result.status == "accepted"
    with session_scope(catalog) as s:
        rec = s.scalar(select(Recording))
        assert rec.sample_rate == 16000 and rec.qc["original_sample_rate"] == 48000
        assert rec.prompt_text == "거실 불 일곱 시에 켜줘"  # normalised with the language pack
        wav, sr = sf.read(io.BytesIO(audio_store.get(rec.uri)))
        assert sr == 16000 and wav.ndim == 1 and sha256_bytes(audio_store.get(rec.uri)) == rec.sha256


def test_replicas_migrating_a_fresh_database_at_once_do_not_collide(catalog_url):
    """Three processes upgrade the same empty database together (API replicas starting at once):
    every one succeeds and the schema is complete."""
    import subprocess
    import sys

    code = "import sys; from collection.db import upgrade; upgrade(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, catalog_url], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], results
    engine = make_engine(catalog_url)
    assert {t.name for t in Base.metadata.sorted_tables} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_audio_left_behind_by_a_rolled_back_transaction_is_swept(catalog, audio_store):
    """An upload whose catalog transaction rolled back leaves a file no recording points at; deletion
    requests would never find it, so the retention job sweeps such files (once they are old enough)."""
    from collection.deletion import sweep_orphans

    with catalog() as s:  # no commit: rolled back
        kept_in_store = ingest(s, audio_store, _tone_wav(seed=1), source="upload", external_id="lost")
        s.rollback()
    with session_scope(catalog) as s:
        stored = ingest(s, audio_store, _tone_wav(seed=2), source="upload", external_id="kept")
    assert kept_in_store.status == stored.status == "accepted" and len(audio_store.keys()) == 2
    with session_scope(catalog) as s:
        assert sweep_orphans(s, audio_store) == 0  # too young: may belong to a transaction in flight
        assert sweep_orphans(s, audio_store, min_age_s=0) == 1
        assert audio_store.keys() == [s.scalar(select(Recording.sha256))]
