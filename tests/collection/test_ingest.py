"""Bad input through ``collection.ingest.ingest``: every refusal is a stored Rejection with a reason and
a sentence, nothing already stored is lost, and re-runs / concurrent twins add nothing."""

from __future__ import annotations

import io
import struct
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from _ingest_helpers import SR, speech_like, wav_bytes
from sqlalchemy import func, select

from collection.ingest import ingest
from collection.models import Recording, Rejection


def ten_hour_header() -> bytes:
    """A WAV whose header claims 10 hours of 16 kHz PCM16 but holds one second."""
    n = SR * 3600 * 10
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, SR, SR * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + 2 * n) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", 2 * n)
            + np.zeros(SR, dtype=np.int16).tobytes())


def png_bytes() -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + b"\x80\x80\x80" * 4 for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


GOOD_TEXT = "거실 불 켜줘"
BAD_INPUTS = {
    # name: (bytes, transcript, reason, words the detail must contain)
    "corrupt bytes": (lambda: b"\x00\x13garbage" * 200, GOOD_TEXT, "undecodable", "not a readable audio file"),
    "empty": (lambda: b"", GOOD_TEXT, "undecodable", "0 bytes"),
    "truncated wav": (lambda: wav_bytes(speech_like(2.0))[: 20000], GOOD_TEXT, "undecodable", "truncated"),
    "text file": (lambda: "거실 불 켜줘\n".encode() * 50, GOOD_TEXT, "undecodable", "not a readable audio file"),
    "png": (png_bytes, GOOD_TEXT, "undecodable", "audio"),
    "8 kHz": (lambda: wav_bytes(speech_like(1.5, sr=8000), sr=8000), GOOD_TEXT, "sample_rate", "8000 Hz"),
    "0.05 s": (lambda: wav_bytes(speech_like(0.05)), "불", "too_short", "0.05 s"),
    "45 s": (lambda: wav_bytes(speech_like(45.0)), GOOD_TEXT, "too_long", "45.0 s"),
    "10-hour header": (ten_hour_header, GOOD_TEXT, "undecodable", "36000 s"),
    "clipping": (lambda: wav_bytes(np.clip(speech_like(1.5) * 20, -1, 1)), GOOD_TEXT, "clipping", "clipped"),
    "silence": (lambda: wav_bytes(np.zeros(SR * 2, dtype=np.float32)), GOOD_TEXT, "silence", "no speech"),
    "white noise": (lambda: wav_bytes((0.1 * np.random.default_rng(3).standard_normal(SR * 2)).astype(np.float32)),
                    GOOD_TEXT, "low_snr", "SNR"),
    "punctuation only": (lambda: wav_bytes(speech_like(1.5, seed=4)), " ?! … ", "bad_text", "empty"),
    "wrong alphabet": (lambda: wav_bytes(speech_like(1.5, seed=5)), "hello", "bad_text", "alphabet"),
    "200 chars in 1 s": (lambda: wav_bytes(speech_like(1.0, seed=6)), "가" * 200, "bad_text", "200 characters"),
}


def test_speech_like_signal_passes_qc(catalog, audio_store):
    with catalog() as s:
        result = ingest(s, audio_store, wav_bytes(speech_like()), source="upload", external_id="ok", text=GOOD_TEXT)
        s.commit()
    assert result.status == "accepted", result
    assert result.metrics["snr_db"] > 3 and result.metrics["silence"] < 0.95


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_a_stored_rejection_and_loses_nothing(name, catalog, audio_store):
    make, text, reason, words = BAD_INPUTS[name]
    with catalog() as s:  # something good is already there: a refusal must not touch it
        kept = ingest(s, audio_store, wav_bytes(speech_like(seed=1)), source="upload", external_id="kept",
                      text=GOOD_TEXT)
        s.commit()
    keys_before = audio_store.keys()

    started = time.perf_counter()
    with catalog() as s:
        result = ingest(s, audio_store, make(), source="upload", external_id=f"bad-{name}", text=text, language="ko")
        s.commit()
    assert result.status == "rejected" and result.reason == reason, result
    assert words in result.message
    if name == "10-hour header":
        assert time.perf_counter() - started < 1.0  # refused from the header, not by decoding

    with catalog() as s:
        row = s.scalars(select(Rejection)).one()
        assert (row.source, row.external_id, row.reason) == ("upload", f"bad-{name}", reason)
        assert words in row.detail
        assert count(s, Recording) == 1
        survivor = s.get(Recording, kept.recording_id)
        assert audio_store.get(survivor.uri)  # the earlier recording's bytes are intact
    assert audio_store.keys() == keys_before

    with catalog() as s:  # the same submission again: the stored answer, no second row
        again = ingest(s, audio_store, make(), source="upload", external_id=f"bad-{name}", text=text)
        s.commit()
        assert (again.status, again.reason) == ("rejected", reason)
        assert count(s, Rejection) == 1


def test_signal_measures_are_kept_with_the_rejection(catalog, audio_store):
    with catalog() as s:
        ingest(s, audio_store, wav_bytes(np.zeros(SR, dtype=np.float32)), source="upload", external_id="quiet")
        s.commit()
        row = s.scalars(select(Rejection)).one()
    assert row.metrics["silence"] == 1.0 and row.metrics["duration"] == 1.0


def test_duplicate_audio_under_another_id(catalog, audio_store):
    data = wav_bytes(speech_like(seed=2))
    with catalog() as s:
        first = ingest(s, audio_store, data, source="upload", external_id="a", text=GOOD_TEXT)
        second = ingest(s, audio_store, data, source="upload", external_id="b", text=GOOD_TEXT)
        s.commit()
        assert first.status == "accepted"
        assert second.status == "rejected" and second.reason == "duplicate" and first.recording_id in second.message
        rejection = s.scalars(select(Rejection)).one()
        assert rejection.external_id == "b" and rejection.sha256 == s.get(Recording, first.recording_id).sha256
        assert count(s, Recording) == 1
    assert len(audio_store.keys()) == 1


def test_rerun_with_same_external_id_adds_nothing(catalog, audio_store):
    data = wav_bytes(speech_like(seed=3))
    with catalog() as s:
        first = ingest(s, audio_store, data, source="upload", external_id="same", text=GOOD_TEXT)
        s.commit()
    with catalog() as s:
        again = ingest(s, audio_store, data, source="upload", external_id="same", text=GOOD_TEXT)
        s.commit()
        assert (again.status, again.recording_id) == ("exists", first.recording_id)
        assert again.metrics == first.metrics
        assert (count(s, Recording), count(s, Rejection)) == (1, 0)
    assert len(audio_store.keys()) == 1


def test_concurrent_twins_store_once(catalog, audio_store):
    """Two threads, each with its own session, submit the same audio at the same moment."""
    data = wav_bytes(speech_like(seed=7))
    gate = threading.Barrier(2)
    results, errors = {}, []

    def submit(name: str) -> None:
        try:
            with catalog() as s:
                gate.wait(timeout=10)
                results[name] = ingest(s, audio_store, data, source="upload", external_id=name, text=GOOD_TEXT)
                s.commit()
        except Exception as e:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=submit, args=(n,)) for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(r.status for r in results.values()) == ["accepted", "rejected"]
    assert [r.reason for r in results.values() if r.status == "rejected"] == ["duplicate"]
    with catalog() as s:
        assert count(s, Recording) == 1
        assert s.scalars(select(Rejection.reason)).all() == ["duplicate"]
    assert len(audio_store.keys()) == 1
    assert not [p for p in audio_store.fs.find(audio_store.root) if ".tmp-" in p]


def test_48k_stereo_is_stored_as_16k_mono(catalog, audio_store):
    left = speech_like(2.0, sr=48000, seed=8)
    stereo = np.stack([left, 0.5 * left], axis=1)
    with catalog() as s:
        result = ingest(s, audio_store, wav_bytes(stereo, sr=48000, subtype="FLOAT"), source="upload",
                        external_id="hifi", text=GOOD_TEXT)
        s.commit()
        rec = s.get(Recording, result.recording_id)
    assert result.status == "accepted", result
    assert result.metrics["original_sample_rate"] == 48000 and result.metrics["channels"] == 2
    assert (rec.sample_rate, rec.channels) == (16000, 1)
    stored, sr = sf.read(io.BytesIO(audio_store.get(rec.uri)), always_2d=True)
    assert sr == 16000 and stored.shape == (32000, 1)
    info = sf.info(io.BytesIO(audio_store.get(rec.uri)))
    assert info.subtype == "PCM_16"
    assert rec.prompt_text == "거실 불 켜줘"


def test_compressed_audio_that_expands_past_the_limit_is_refused_while_decoding():
    """Opus packets of a few bytes can expand to hours: decoding stops at the limit instead of
    filling memory (the web upload's size cap alone would not prevent it)."""
    import av
    import numpy as np

    from asr.audio import AudioError
    from collection.qc import decode

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        silence = np.zeros((1, 960), dtype=np.float32)
        for i in range(50 * 70):  # 70 s of 20 ms frames
            frame = av.AudioFrame.from_ndarray(silence, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(AudioError, match="limit is 60 s"):
        decode(buf.getvalue(), max_seconds=60)
    assert decode(buf.getvalue(), max_seconds=120).wav.size > 60 * 16000


def test_containers_outside_the_accepted_list_are_refused():
    from asr.audio import AudioError
    from collection.qc import decode

    with pytest.raises(AudioError, match="not a readable audio file|not accepted"):
        decode(b"#EXTM3U\n#EXTINF:10,\nhttp://example.com/a.mp3\n")
