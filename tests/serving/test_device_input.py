"""Bad input through the real device API: every file of the bad-audio corpus gets its status and a detail
naming the problem (never a 5xx), oversize bodies are refused before they are read, memory stays bounded,
nothing is stored for refused input (and nothing stored is touched), and bad WebSocket streams end with an
error message and close code 1008."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _device_helpers import add_device, auth, device_app, pcm16, stream_until_final, tone_wav
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from starlette.websockets import WebSocketDisconnect

from collection.db import connect
from collection.models import Base, ProductionUtterance

CORPUS = Path(__file__).parent / "fixtures" / "bad_audio"
CASES = json.loads((CORPUS / "MANIFEST.json").read_text())["files"]
BAD = [c for c in CASES if c["status"] != 200]
BUSY = {"device_rate_per_second": 1000.0, "device_burst": 1000}  # many requests per test, no 429s
WAV = {"content-type": "audio/wav"}


@pytest.fixture
def api(tmp_path, catalog_url):
    """(client, catalog url, device key) on the real app with default input limits."""
    with TestClient(device_app(tmp_path, catalog_url, **BUSY)) as client:
        yield client, catalog_url, add_device(catalog_url)


def _corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def _rejected(reason: str | None) -> float:
    value = REGISTRY.get_sample_value("voiceloop_input_rejected_total", {"channel": "http", "reason": str(reason)})
    return value or 0.0


def _row_counts(url: str) -> dict[str, int]:
    with connect(url)() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def _stored_files(client: TestClient) -> list[Path]:
    """Every file in the app's audio store."""
    root = Path(client.app.state.store.root)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_each_upload_gets_its_status_and_a_detail_naming_the_problem(api, case):
    client, url, key = api
    before = _rejected(case["reason"])
    r = client.post("/v1/recognize", content=_corpus(case["file"]), headers={**auth(key), **WAV})
    assert r.status_code == case["status"], r.text
    with connect(url)() as s:
        stored = s.scalar(select(func.count()).select_from(ProductionUtterance))
    if case["status"] == 200:
        assert r.json()["duration_s"] > 0.25 and stored == 1
        return
    detail = r.json()["detail"]
    assert isinstance(detail, str) and case["detail"] in detail.lower()
    if r.status_code != 413 or case["reason"] == "too_long":  # the body-size 413 comes before the audio is read
        assert r.headers["x-error-reason"] == case["reason"]  # firmware can branch on the code
    assert _rejected(case["reason"]) == before + 1  # counted under its reason on /metrics
    assert stored == 0


@pytest.mark.parametrize("name", ["three_bytes.bin", "zero_channels.wav", "truncated_data.wav",
                                  "bomb_flac_unknown_length.flac", "valid_opus.webm"])
def test_multipart_audio_part_gets_the_same_answer_as_a_raw_body(api, name):
    client, _, key = api
    case = next(c for c in CASES if c["file"] == name)
    r = client.post("/v1/recognize", files={"audio": (name, _corpus(name), "application/octet-stream")},
                    headers=auth(key))
    assert r.status_code == case["status"], r.text


@pytest.mark.parametrize("parts", [
    {"voice": ("cmd.wav", tone_wav(1.0), "audio/wav")},  # the file under another name
    {"audio": (None, "not a file")},  # a plain text field named audio
], ids=["file part not named audio", "audio as a text field"])
def test_multipart_without_an_audio_file_part_is_422(api, parts):
    client, url, key = api
    r = client.post("/v1/recognize", files=parts, headers=auth(key))
    assert r.status_code == 422 and "'audio'" in r.json()["detail"]
    assert _row_counts(url)["production_utterances"] == 0


def test_refused_input_stores_nothing_and_touches_nothing_stored(tmp_path, catalog_url):
    """All bad files, one after another on one app, with memory traced: no rows, no audio files, the
    earlier request under the same id untouched, and the next valid request answered."""
    with TestClient(device_app(tmp_path, catalog_url, **BUSY)) as client:
        key = add_device(catalog_url)
        kept = client.post("/v1/recognize", content=tone_wav(1.0), headers={**auth(key), **WAV,
                                                                             "x-request-id": "kept-1"})
        assert kept.status_code == 200, kept.text
        rows, files = _row_counts(catalog_url), _stored_files(client)
        tracemalloc.start()
        try:
            for i, case in enumerate(BAD):
                for request_id in (f"bad-{i}", "kept-1"):  # a new id, and a retry of the stored one with bad audio
                    r = client.post("/v1/recognize", content=_corpus(case["file"]),
                                    headers={**auth(key), **WAV, "x-request-id": request_id})
                    assert r.status_code == case["status"], (case["file"], r.text)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # ~3 MiB in practice; decoding the bombs unbounded holds 55 MiB (5 min of WebM) to 660 MiB (1 h of FLAC).
        assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB held while refusing the corpus"
        assert _row_counts(catalog_url) == rows
        assert _stored_files(client) == files
        for i in range(len(BAD)):
            assert client.get(f"/v1/requests/bad-{i}", headers=auth(key)).status_code == 404
        again = client.get("/v1/requests/kept-1", headers=auth(key)).json()
        assert again["confidence"] == pytest.approx(kept.json()["confidence"], abs=1e-4)
        assert again["model_version"] == kept.json()["model_version"]
        after = client.post("/v1/recognize", content=tone_wav(1.0), headers={**auth(key), **WAV})
        assert after.status_code == 200, after.text


# --- body size ---------------------------------------------------------------------------------

LIMIT = 64_000


@pytest.fixture
def small_api(tmp_path, catalog_url):
    with TestClient(device_app(tmp_path, catalog_url, max_upload_bytes=LIMIT, **BUSY)) as client:
        yield client, add_device(catalog_url)


def _asgi_post(client: TestClient, headers: dict[str, str], chunks: Iterator[bytes]) -> tuple[int, dict, int]:
    """POST /v1/recognize straight through the app's ASGI interface, the body in ``chunks`` (one ASGI
    message each, like a chunked upload arriving); returns (status, JSON body, chunks the app pulled)."""
    pulled, sent = 0, []

    async def receive() -> dict:
        nonlocal pulled
        body = next(chunks, None)
        if body is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": body, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/recognize", "raw_path": b"/v1/recognize", "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("device", 40000), "server": ("testserver", 80), "state": {}}
    client.portal.call(client.app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


def _endless(chunk: int = 16_384, count: int = 4_000) -> Iterator[bytes]:
    """A 64 MB upload (a WAV header, then zeros), produced only as far as it is read."""
    yield tone_wav(0.5)[:44] + b"\0" * (chunk - 44)
    for _ in range(count - 1):
        yield b"\0" * chunk


def test_declared_oversize_body_is_413_before_a_byte_is_read(small_api):
    client, key = small_api
    chunks = _endless()
    status, body, pulled = _asgi_post(client, {**auth(key), **WAV, "content-length": str(64 * 2**20)}, chunks)
    assert status == 413 and "larger than the limit" in body["detail"]
    assert pulled == 0


def test_chunked_oversize_body_is_413_once_the_limit_is_passed(small_api):
    client, key = small_api
    status, body, pulled = _asgi_post(client, {**auth(key), **WAV}, _endless())  # no content-length
    assert status == 413 and "larger than the limit" in body["detail"]
    assert pulled * 16_384 <= LIMIT + 16_384  # stopped one chunk past the limit, not 4,000 chunks later


def test_oversize_bodies_over_http(small_api):
    """The same through an HTTP client: a sized body, a generator body (chunked transfer), a multipart form."""
    client, key = small_api
    big = tone_wav(0.5)[:44] + b"\0" * (2 * LIMIT)
    sized = client.post("/v1/recognize", content=big, headers={**auth(key), **WAV})
    chunked = client.post("/v1/recognize", content=(big[i:i + 8192] for i in range(0, len(big), 8192)),
                          headers={**auth(key), **WAV})
    form = client.post("/v1/recognize", files={"audio": ("big.wav", big, "audio/wav")}, headers=auth(key))
    for r in (sized, chunked, form):
        assert r.status_code == 413 and "larger than the limit" in r.json()["detail"], r.text
    assert "content-length" not in {k.lower() for k in chunked.request.headers}
    small = client.post("/v1/recognize", content=tone_wav(1.0), headers={**auth(key), **WAV})  # 32 KB: fine
    assert small.status_code == 200, small.text


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(small_api):
    client, _ = small_api
    status, _, pulled = _asgi_post(client, {"authorization": "Bearer vlk_nope", **WAV}, _endless())
    assert status == 401 and pulled == 0


# --- WebSocket -------------------------------------------------------------------------------------


def _speech(seconds: float) -> np.ndarray:
    wav, _ = sf.read(io.BytesIO(tone_wav(seconds)), dtype="float32")
    return wav


BAD_STREAMS = {
    "odd-length binary frame": [("bytes", b"\x00\x01\x02")],
    "odd frame after good audio": [("bytes", pcm16(_speech(0.1))), ("bytes", b"\x00")],
    "non-JSON text frame": [("text", "hello")],
    "JSON that is not an object": [("text", "[1, 2]")],
    "unknown control message": [("text", json.dumps({"type": "pause"}))],
    "end before any audio": [("text", json.dumps({"type": "end"}))],
    "start with a bad request id": [("text", json.dumps({"type": "start", "request_id": "no spaces!"}))],
    "chunk over max_chunk_bytes": [("bytes", b"\0" * 64_002)],
}


@pytest.mark.parametrize("frames", BAD_STREAMS.values(), ids=BAD_STREAMS.keys())
def test_bad_stream_gets_an_error_message_and_close_1008(api, frames):
    client, url, key = api
    with client.websocket_connect("/v1/stream", headers=auth(key)) as ws:
        reply = None
        for kind, payload in frames:
            ws.send_bytes(payload) if kind == "bytes" else ws.send_text(payload)
            reply = ws.receive_json()
            if reply["type"] == "error":
                break
            assert reply["type"] == "partial"
        assert reply["type"] == "error" and reply["detail"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    assert _row_counts(url)["production_utterances"] == 0
    # the server is unharmed: the next stream works
    with client.websocket_connect("/v1/stream", headers=auth(key)) as ws:
        ws.send_bytes(pcm16(_speech(0.5)))
        assert ws.receive_json()["type"] == "partial"
        ws.send_json({"type": "end"})
        assert ws.receive_json()["type"] == "final"


def test_stream_longer_than_max_stream_seconds_is_cut(tmp_path, catalog_url):
    with TestClient(device_app(tmp_path, catalog_url, max_stream_seconds=1.0, **BUSY)) as client:
        key = add_device(catalog_url)
        audio = _speech(3.0)  # a continuous tone: no endpoint silence, only the limit can end it
        with client.websocket_connect("/v1/stream", headers=auth(key)) as ws:
            final = stream_until_final(ws, audio)
        assert final is not None and final["ended_by"] == "max_duration"
        assert final["duration_s"] == pytest.approx(1.0, abs=0.01)
        assert _row_counts(catalog_url)["production_utterances"] == 1
