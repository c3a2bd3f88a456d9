"""Bad audio gets a clear AudioError naming what was wrong."""

import io

import numpy as np
import pytest
import soundfile as sf

from asr.audio import AudioError, check_waveform, load_audio


def wav_bytes(data: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_reads_mono_16k():
    wav = load_audio(wav_bytes(np.full(1600, 0.25, dtype=np.float32)))
    assert wav.dtype == np.float32 and wav.shape == (1600,)
    assert abs(float(wav.mean()) - 0.25) < 1e-3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a readable audio file"),
        (b"hello, this is not audio at all" * 10, "not a readable audio file"),
    ],
)
def test_unreadable_bytes(data, message):
    with pytest.raises(AudioError, match=message):
        load_audio(data)


def test_wrong_rate():
    with pytest.raises(AudioError, match="sample rate is 8000 Hz; expected 16000 Hz"):
        load_audio(wav_bytes(np.zeros(800, dtype=np.float32), rate=8000))


def test_stereo():
    with pytest.raises(AudioError, match="2 channels; expected mono"):
        load_audio(wav_bytes(np.zeros((800, 2), dtype=np.float32)))


def test_too_long_is_refused_from_the_header():
    with pytest.raises(AudioError, match="lasts 3.0 s; the limit is 2 s"):
        load_audio(wav_bytes(np.zeros(48000, dtype=np.float32)), max_seconds=2)


def test_truncated_file(tmp_path):
    data = wav_bytes(np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32))
    path = tmp_path / "cut.wav"
    path.write_bytes(data[:30])  # header cut in the middle
    with pytest.raises(AudioError, match="cut.wav"):
        load_audio(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")


def test_nan_and_shape_checks():
    with pytest.raises(AudioError, match="NaN"):
        check_waveform(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(AudioError, match="mono"):
        check_waveform(np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(AudioError, match="no samples"):
        check_waveform(np.zeros(0, dtype=np.float32))


def test_nan_inside_a_float_wav_file():
    buf = io.BytesIO()
    sf.write(buf, np.array([0.0, np.nan, 0.1] * 100, dtype=np.float32), 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(buf.getvalue())


def test_trim_silence_keeps_speech_and_a_margin():
    from asr.audio import trim_silence

    rng = np.random.default_rng(0)
    speech = rng.normal(0, 0.2, 8000).astype(np.float32)
    wav = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(16000, np.float32)])
    trimmed = trim_silence(wav, margin_s=0.1)
    assert 8000 <= len(trimmed) <= 8000 + 2 * 1600 + 2 * 320
    assert np.allclose(trimmed[np.abs(trimmed) > 0][:10], speech[:10])
    assert len(trim_silence(speech)) == len(speech)  # nothing to trim
