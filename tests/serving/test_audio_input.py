"""read_command_audio on the bad-audio corpus: each file refused for its reason, at its stage, with memory
bounded; truncated or bit-flipped headers only ever raise InputError."""

from __future__ import annotations

import importlib.util
import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import serving.audio_input as audio_input
from serving.audio_input import InputError, InputLimits, read_command_audio, sniff_container

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "bad_audio"
MANIFEST = json.loads((CORPUS / "MANIFEST.json").read_text())
CASES = MANIFEST["files"]
BAD = [c for c in CASES if c["status"] != 200]
VALID = [c for c in CASES if c["status"] == 200]


def _ids(cases: list[dict]) -> list[str]:
    return [c["file"] for c in cases]


def _data(case: dict) -> bytes:
    return (CORPUS / case["file"]).read_bytes()


def test_the_manifest_lists_exactly_the_small_files_the_generator_makes(monkeypatch):
    spec = importlib.util.spec_from_file_location("make_bad_audio", FIXTURES / "make_bad_audio.py")
    generator = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, generator)  # dataclasses look their module up
    spec.loader.exec_module(generator)
    assert MANIFEST == generator.manifest()  # edited by hand? regenerate instead
    on_disk = {p.name for p in CORPUS.iterdir()} - {"MANIFEST.json"}
    assert on_disk == {c["file"] for c in CASES}
    assert all((CORPUS / name).stat().st_size < 100_000 for name in on_disk)
    assert MANIFEST["limits"]["max_command_seconds"] == InputLimits().max_seconds
    assert len(BOMBS) >= 2 and {c["status"] for c in CASES} == {200, 413, 415, 422}


@pytest.mark.parametrize("case", BAD, ids=_ids(BAD))
def test_bad_file_is_refused_for_its_reason(case):
    with pytest.raises(InputError) as refused:
        read_command_audio(_data(case))
    assert (refused.value.status, refused.value.reason) == (case["status"], case["reason"])
    assert case["detail"] in str(refused.value).lower()


@pytest.mark.parametrize("case", VALID, ids=_ids(VALID))
def test_valid_file_becomes_16k_mono(case):
    wav = read_command_audio(_data(case))
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert 0.25 <= len(wav) / 16000 <= 1.1 and np.isfinite(wav).all() and np.abs(wav).max() > 0.05


HEADER_ONLY = [c for c in BAD if c["refused_at"] in ("sniff", "header")]


@pytest.mark.parametrize("case", HEADER_ONLY, ids=_ids(HEADER_ONLY))
def test_header_refusals_never_reach_the_decoder(case, monkeypatch):
    def no_decoding(*_: object, **__: object) -> None:
        raise AssertionError("decode() was called for a file its header already disqualifies")

    monkeypatch.setattr(audio_input, "decode", no_decoding)
    with pytest.raises(InputError) as refused:
        read_command_audio(_data(case))
    assert refused.value.reason == case["reason"]


BOMBS = [c for c in BAD if c["reason"] == "too_long" and c["refused_at"] == "decode"]


@pytest.mark.parametrize("case", BOMBS, ids=_ids(BOMBS))
def test_a_file_that_expands_to_hours_is_stopped_at_the_limit(case):
    """bomb_flac_unknown_length.flac decodes to an hour (660 MiB traced when decoded unbounded); ~1 MiB here."""
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="more than 15 s"):
            read_command_audio(_data(case))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB held while refusing {case['file']}"


def test_limits_are_configurable():
    data = _data(next(c for c in VALID if c["file"] == "valid.flac"))  # 1 s at 16 kHz
    with pytest.raises(InputError) as refused:
        read_command_audio(data, InputLimits(max_seconds=0.5))
    assert refused.value.status == 413 and "at most 0.5 s" in str(refused.value)
    assert len(read_command_audio(data, InputLimits(max_seconds=2.0))) == 16000


def _mutations(data: bytes, rng: np.random.Generator) -> list[bytes]:
    """Every cut of the first 80 bytes and some later ones; 40 copies with one header byte flipped."""
    cuts = [data[:n] for n in [*range(1, 80), *range(80, len(data), max(1, len(data) // 40))]]
    flips = []
    for _ in range(40):
        copy = bytearray(data)
        copy[int(rng.integers(0, min(64, len(data))))] ^= 1 << int(rng.integers(0, 8))
        flips.append(bytes(copy))
    return cuts + flips


@pytest.mark.parametrize("name", ["extra_chunks.wav", "valid.flac", "stereo_44k.wav", "valid_opus.ogg",
                                  "valid_opus.webm", "valid.mp3"])
def test_cut_or_flipped_headers_only_raise_input_errors(name):
    """A device uploading over a flaky link sends prefixes; a bad firmware build flips bits. Either way
    the answer is a 4xx reason, never an unexpected exception (a 500)."""
    rng = np.random.default_rng(7)
    for data in _mutations((CORPUS / name).read_bytes(), rng):
        try:
            wav = read_command_audio(data)
        except InputError as e:
            assert 400 <= e.status < 500 and str(e)
        else:
            assert wav.dtype == np.float32 and np.isfinite(wav).all()


@pytest.mark.parametrize(("head", "container"), [
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"), (b"RIFF\x00\x00\x00\x00AVI LIST", None), (b"fLaC\x00", "flac"),
    (b"OggS\x00\x02", "ogg"), (b"\x1a\x45\xdf\xa3\x9f", "webm"), (b"\x00\x00\x00\x20ftypM4A ", "mp4"),
    (b"ID3\x04\x00", "mp3"), (b"\xff\xfb\x90\x64", "mp3"), (b"\xff\xf1\x50\x80", None),  # ADTS AAC: no layer
    (b"\x89PNG\r\n\x1a\n", None), (b"", None)])
def test_sniff_container(head, container):
    assert sniff_container(head) == container
