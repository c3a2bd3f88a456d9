"""The Kafka message contract, as pure functions: one ``asr.audio`` record → a :class:`Chunk` or a
:class:`Rejection` (a DLQ reason), plus the headers producers and the dead-letter queue write.

``asr.audio``: key = session id (utf-8, 1-64 chars of ``A-Za-z0-9._:-``; the session id is the
utterance's request id), value = raw PCM16 little-endian mono 16 kHz bytes of one chunk (may be empty
on the end message), headers ``seq`` (ascii decimal 0, 1, 2, … per session), ``device`` (utf-8 device
id), ``end`` = ``b"1"`` on the session's last message only, ``rate`` = ``b"16000"`` (optional).
No broker is needed here: everything is unit-testable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asr.audio import SAMPLE_RATE

AUDIO_TOPIC = "asr.audio"
TRANSCRIPTS_TOPIC = "asr.transcripts"
DLQ_TOPIC = "asr.audio.dlq"

SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_DEVICE_ID = 64  # the catalog's column width
MAX_SEQ = 99_999  # far past any voice command (10 s in 1 ms chunks); keeps a session's chunk map bounded
SEQ = re.compile(r"[0-9]{1,6}")
REQUIRED_HEADERS = ("seq", "device")

Headers = Sequence[tuple[str, bytes]]


class Reason:
    """DLQ reason codes (the ``error`` header). Per message: the record itself is wrong. Per session:
    the record that settled a session's fate carries the reason for the whole session."""

    # per message
    BAD_KEY = "bad_key"  # no key, not utf-8, or not 1-64 chars of A-Za-z0-9._:-
    MISSING_HEADER = "missing_header"  # seq or device absent
    BAD_HEADER = "bad_header"  # a header given twice, or end not b"1"
    BAD_SEQ = "bad_seq"  # seq not an ascii decimal within 0..MAX_SEQ
    BAD_DEVICE = "bad_device"  # device not utf-8 / empty / too long / control characters, or changed mid-session
    BAD_RATE = "bad_rate"  # rate given and not 16000
    ODD_BYTES = "odd_bytes"  # PCM16 needs an even number of bytes
    # per session
    GAP = "gap"  # the end marker arrived while some seq below it never did
    TOO_LONG = "too_long"  # more audio than the worker's max_seconds
    TOO_SHORT = "too_short"  # less audio than min_seconds (an end marker with no audio, a stray tap)
    INCOMPLETE = "incomplete"  # no message for stale_after_s and no end marker
    EVICTED = "evicted"  # given up to bound memory: too many sessions were being assembled at once
    UNPROCESSABLE = "unprocessable"  # recognising or recording it failed for this utterance alone


@dataclass(frozen=True)
class Chunk:
    """One valid ``asr.audio`` record. ``pcm``: PCM16 LE mono 16 kHz bytes (even length, maybe empty)."""

    session_id: str
    device_id: str
    seq: int
    end: bool
    pcm: bytes

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


def _headers(headers: Headers) -> dict[str, bytes] | Rejection:
    seen: dict[str, bytes] = {}
    for name, value in headers or ():
        if name in seen:
            return Rejection(Reason.BAD_HEADER, f"header {name!r} appears more than once; send each header once")
        seen[name] = value if value is not None else b""
    return seen


def parse_audio_record(key: bytes | None, value: bytes | None, headers: Headers) -> Chunk | Rejection:
    """Validate one ``asr.audio`` record (checks in a fixed order; the first problem is reported)."""
    session_id = _session_id(key)
    if isinstance(session_id, Rejection):
        return session_id
    found = _headers(headers)
    if isinstance(found, Rejection):
        return found
    missing = [h for h in REQUIRED_HEADERS if h not in found]
    if missing:
        return Rejection(Reason.MISSING_HEADER, f"missing header(s) {', '.join(missing)}; every asr.audio message "
                                                "needs seq (0, 1, 2, …) and device")
    seq = _seq(found["seq"])
    if isinstance(seq, Rejection):
        return seq
    device = _device(found["device"])
    if isinstance(device, Rejection):
        return device
    end = found.get("end")
    if end is not None and end != b"1":
        return Rejection(Reason.BAD_HEADER, f"end header is {end[:16]!r}; send end=b'1' on the last message only")
    rate = found.get("rate")
    if rate is not None and rate != str(SAMPLE_RATE).encode():
        return Rejection(Reason.BAD_RATE, f"rate is {rate[:16]!r}; only {SAMPLE_RATE} Hz PCM16 mono is accepted "
                                          "(resample on the device)")
    pcm = value or b""
    if len(pcm) % 2:
        return Rejection(Reason.ODD_BYTES, f"the chunk has {len(pcm)} bytes; PCM16 needs an even number")
    return Chunk(session_id, device, seq, end is not None, pcm)


def _session_id(key: bytes | None) -> str | Rejection:
    if not key:
        return Rejection(Reason.BAD_KEY, "the record has no key; the key is the session id")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection(Reason.BAD_KEY, f"the key {key[:16]!r} is not utf-8")
    if not SESSION_ID.fullmatch(text):
        return Rejection(Reason.BAD_KEY, f"the key {text[:70]!r} is not a session id "
                                         "(1-64 characters of A-Z a-z 0-9 . _ : -)")
    return text


def _seq(raw: bytes) -> int | Rejection:
    text = raw.decode("ascii", errors="replace")
    if not SEQ.fullmatch(text) or int(text) > MAX_SEQ:
        return Rejection(Reason.BAD_SEQ, f"seq is {raw[:16]!r}; send an ascii decimal 0..{MAX_SEQ} "
                                         "(0 for the first chunk of a session)")
    return int(text)


def _device(raw: bytes) -> str | Rejection:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection(Reason.BAD_DEVICE, f"device {raw[:16]!r} is not utf-8")
    if not 1 <= len(text) <= MAX_DEVICE_ID or not text.isprintable():
        return Rejection(Reason.BAD_DEVICE, f"device {text[:70]!r} must be 1-{MAX_DEVICE_ID} printable characters")
    return text


# -- what producers and the worker write ------------------------------------------------------
def audio_headers(seq: int, device_id: str, *, end: bool = False) -> list[tuple[str, bytes]]:
    """Headers of one ``asr.audio`` message."""
    headers = [("seq", str(seq).encode()), ("device", device_id.encode()), ("rate", str(SAMPLE_RATE).encode())]
    return headers + [("end", b"1")] if end else headers


def dlq_headers(original: Headers, reason: str, detail: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The original headers plus why the record was refused and where it came from."""
    kept = [(name, value if value is not None else b"") for name, value in original or ()
            if name not in ("error", "error_detail", "source_partition", "source_offset")]
    return kept + [("error", reason.encode()), ("error_detail", detail.encode("utf-8")),
                   ("source_partition", str(partition).encode()), ("source_offset", str(offset).encode())]


def transcript_value(result: dict[str, Any], device_id: str) -> bytes:
    """``asr.transcripts`` value: ``Recognition.to_dict()`` plus ``device_id``, as UTF-8 JSON."""
    return json.dumps({**result, "device_id": device_id}, ensure_ascii=False).encode("utf-8")
