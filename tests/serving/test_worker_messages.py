"""The Kafka message contract and session assembly, without a broker: parsing, DLQ reasons, commit points."""

from __future__ import annotations

import json

import pytest

from serving.worker.messages import (
    Chunk,
    Reason,
    Rejection,
    audio_headers,
    dlq_headers,
    parse_audio_record,
    transcript_value,
)
from serving.worker.sessions import SessionAssembler, SessionLimits

HEADERS = [("seq", b"0"), ("device", b"spk-1")]
SECOND = b"\x01\x00" * 16000  # 1 s of PCM16


def parsed(key: bytes | None = b"req-1", value: bytes | None = b"\x00\x00", headers=HEADERS):  # noqa: ANN001
    return parse_audio_record(key, value, headers)


# -- one record --------------------------------------------------------------------------------------
def test_a_valid_chunk_and_an_end_marker() -> None:
    assert parsed() == Chunk("req-1", "spk-1", 0, False, b"\x00\x00")
    end = parsed(value=b"", headers=audio_headers(3, "spk-1", end=True))
    assert end == Chunk("req-1", "spk-1", 3, True, b"")
    assert parsed(value=None, headers=[*HEADERS, ("end", b"1")]).pcm == b""


def test_the_producers_headers_parse_back() -> None:
    for seq in (0, 7, 99_999):
        chunk = parse_audio_record(b"s:1", b"", audio_headers(seq, "거실-스피커", end=seq == 7))
        assert isinstance(chunk, Chunk)
        assert (chunk.seq, chunk.device_id, chunk.end) == (seq, "거실-스피커", seq == 7)


@pytest.mark.parametrize(("key", "value", "headers", "reason"), [
    (None, b"", HEADERS, Reason.BAD_KEY),
    (b"", b"", HEADERS, Reason.BAD_KEY),
    (b"\xff\xfe", b"", HEADERS, Reason.BAD_KEY),
    (b"has space", b"", HEADERS, Reason.BAD_KEY),
    (b"x" * 65, b"", HEADERS, Reason.BAD_KEY),
    (b"req-1", b"", [("device", b"spk-1")], Reason.MISSING_HEADER),
    (b"req-1", b"", [("seq", b"0")], Reason.MISSING_HEADER),
    (b"req-1", b"", [], Reason.MISSING_HEADER),
    (b"req-1", b"", [("seq", b"-1"), ("device", b"d")], Reason.BAD_SEQ),
    (b"req-1", b"", [("seq", b"one"), ("device", b"d")], Reason.BAD_SEQ),
    (b"req-1", b"", [("seq", b"1.0"), ("device", b"d")], Reason.BAD_SEQ),
    (b"req-1", b"", [("seq", b""), ("device", b"d")], Reason.BAD_SEQ),
    (b"req-1", b"", [("seq", b"100000"), ("device", b"d")], Reason.BAD_SEQ),
    (b"req-1", b"", [("seq", b"\xff"), ("device", b"d")], Reason.BAD_SEQ),
    (b"req-1", b"", [("seq", b"0"), ("seq", b"1"), ("device", b"d")], Reason.BAD_HEADER),
    (b"req-1", b"", [*HEADERS, ("end", b"true")], Reason.BAD_HEADER),
    (b"req-1", b"", [("seq", b"0"), ("device", b"")], Reason.BAD_DEVICE),
    (b"req-1", b"", [("seq", b"0"), ("device", b"\xff")], Reason.BAD_DEVICE),
    (b"req-1", b"", [("seq", b"0"), ("device", b"a\nb")], Reason.BAD_DEVICE),
    (b"req-1", b"", [("seq", b"0"), ("device", b"d" * 65)], Reason.BAD_DEVICE),
    (b"req-1", b"", [*HEADERS, ("rate", b"8000")], Reason.BAD_RATE),
    (b"req-1", b"", [*HEADERS, ("rate", b"")], Reason.BAD_RATE),
    (b"req-1", b"\x00\x00\x00", HEADERS, Reason.ODD_BYTES),
])
def test_malformed_records_name_their_reason(key, value, headers, reason) -> None:  # noqa: ANN001
    rejection = parse_audio_record(key, value, headers)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == reason
    assert len(rejection.detail) > 10  # a sentence, not a code


def test_rate_16000_is_accepted() -> None:
    assert isinstance(parsed(headers=[*HEADERS, ("rate", b"16000")]), Chunk)


def test_dlq_headers_keep_the_original_and_add_the_reason() -> None:
    headers = dict(dlq_headers([("seq", b"x"), ("device", b"d")], Reason.BAD_SEQ, "seq is 'x'", 3, 41))
    assert headers == {"seq": b"x", "device": b"d", "error": b"bad_seq", "error_detail": b"seq is 'x'",
                       "source_partition": b"3", "source_offset": b"41"}


def test_transcript_value_is_the_result_plus_the_device() -> None:
    value = json.loads(transcript_value({"request_id": "r", "text": "불 켜줘"}, "spk-1"))
    assert value == {"request_id": "r", "text": "불 켜줘", "device_id": "spk-1"}


# -- sessions ------------------------------------------------------------------------------------------
def chunk(seq: int, pcm: bytes = SECOND[:3200], *, end: bool = False, sid: str = "s1", device: str = "d1") -> Chunk:
    return Chunk(sid, device, seq, end, pcm)


def test_chunks_out_of_order_and_duplicated_assemble_once_in_seq_order() -> None:
    asm = SessionAssembler()
    parts = [b"\x01\x00" * 1000, b"\x02\x00" * 1000, b"\x03\x00" * 1000]
    assert asm.add(0, 10, chunk(1, parts[1]), 0.0).outcome == "accepted"
    assert asm.add(0, 11, chunk(0, parts[0]), 0.0).outcome == "accepted"
    assert asm.add(0, 12, chunk(1, parts[1]), 0.0).outcome == "duplicate"
    done = asm.add(0, 13, chunk(2, parts[2], end=True), 0.0)
    assert done.outcome == "completed" and done.completed is not None
    assert done.completed.pcm == b"".join(parts)
    assert (done.completed.session_id, done.completed.device_id, done.completed.first_offset) == ("s1", "d1", 10)
    assert asm.add(0, 14, chunk(2, end=True), 0.0).outcome == "duplicate"  # completed, waiting for its batch
    asm.finish("s1")
    assert asm.add(0, 15, chunk(0), 0.0).outcome == "skipped"  # a redelivered chunk of a finished session


def test_an_end_marker_with_a_missing_chunk_is_a_gap() -> None:
    asm = SessionAssembler()
    asm.add(0, 0, chunk(0), 0.0)
    asm.add(0, 1, chunk(2), 0.0)
    added = asm.add(0, 2, chunk(3, end=True), 0.0)
    assert added.outcome == "rejected" and added.rejection.reason == Reason.GAP
    assert "seq 1" in added.rejection.detail
    assert asm.add(0, 3, chunk(1), 0.0).outcome == "skipped"  # the late chunk does not start a new session
    assert asm.commit_point(0, 4) == 4


def test_a_chunk_past_the_end_marker_is_refused() -> None:
    asm = SessionAssembler()
    asm.add(0, 0, chunk(0), 0.0)
    asm.add(0, 1, chunk(2), 0.0)
    added = asm.add(0, 2, chunk(1, end=True), 0.0)
    assert added.rejection.reason == Reason.BAD_SEQ


def test_too_long_too_short_and_another_device() -> None:
    asm = SessionAssembler(SessionLimits(max_seconds=2.0, min_seconds=0.1))
    for seq in range(2):
        assert asm.add(0, seq, chunk(seq, SECOND), 0.0).outcome == "accepted"
    too_long = asm.add(0, 2, chunk(2, b"\x00\x00"), 0.0)
    assert too_long.rejection.reason == Reason.TOO_LONG
    assert asm.add(0, 3, chunk(3, end=True), 0.0).outcome == "skipped"

    empty = asm.add(0, 4, chunk(0, b"", end=True, sid="s2"), 0.0)
    assert empty.rejection.reason == Reason.TOO_SHORT

    asm.add(0, 5, chunk(0, sid="s3"), 0.0)
    other = asm.add(0, 6, chunk(1, sid="s3", device="d2", end=True), 0.0)
    assert other.rejection.reason == Reason.BAD_DEVICE
    assert asm.add(0, 7, chunk(1, sid="s3", end=True), 0.0).outcome == "completed"  # the session survives


def test_the_commit_point_never_passes_an_open_session() -> None:
    asm = SessionAssembler()
    asm.add(0, 5, chunk(0, sid="a"), 0.0)
    asm.add(0, 6, chunk(0, sid="b"), 0.0)
    asm.add(1, 3, chunk(0, sid="c"), 0.0)
    assert asm.commit_point(0, 7) == 5 and asm.commit_point(1, 4) == 3 and asm.commit_point(2, 9) == 9
    asm.add(0, 7, chunk(1, sid="a", end=True), 0.0)
    assert asm.commit_point(0, 8) == 5  # complete, but not written yet
    asm.finish("a")
    assert asm.commit_point(0, 8) == 6
    asm.drop_partitions([0])
    assert asm.commit_point(0, 8) == 8 and asm.commit_point(1, 4) == 3


def test_stale_sessions_are_given_up_and_stop_holding_commits() -> None:
    asm = SessionAssembler(SessionLimits(stale_after_s=5.0))
    asm.add(0, 0, chunk(0, sid="old"), now=0.0)
    asm.add(0, 1, chunk(0, sid="new"), now=4.0)
    assert asm.expire(4.9) == []
    stale = asm.expire(5.0)
    assert [(s.session_id, r.reason) for s, r in stale] == [("old", Reason.INCOMPLETE)]
    assert asm.commit_point(0, 2) == 1
    assert asm.add(0, 2, chunk(1, sid="old", end=True), 6.0).outcome == "skipped"


def test_too_many_open_sessions_evict_the_least_recently_active() -> None:
    asm = SessionAssembler(SessionLimits(max_pending=2))
    asm.add(0, 0, chunk(0, sid="a"), now=1.0)
    asm.add(0, 1, chunk(0, sid="b"), now=0.5)
    added = asm.add(0, 2, chunk(0, sid="c"), now=2.0)
    assert added.outcome == "accepted"
    assert [(s.session_id, r.reason) for s, r in added.evicted] == [("b", Reason.EVICTED)]
    assert set(asm.open) == {"a", "c"}


def test_a_headless_tail_of_a_recorded_session_is_a_replay_not_a_gap() -> None:
    """After a restart the commit point may sit inside a finished session: its tail is re-read."""
    recorded = {"done"}
    asm = SessionAssembler(already_done=lambda sid: sid in recorded)
    assert asm.add(0, 0, chunk(2, sid="done"), 0.0).outcome == "replayed"
    assert asm.add(0, 1, chunk(3, sid="done", end=True), 0.0).outcome == "skipped"
    assert asm.commit_point(0, 2) == 2
    # the same shape for a session the catalog does not know: its head never arrived
    asm.add(0, 2, chunk(2, sid="lost"), 0.0)
    assert asm.add(0, 3, chunk(3, sid="lost", end=True), 0.0).rejection.reason == Reason.GAP
