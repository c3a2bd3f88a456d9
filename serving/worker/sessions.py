"""Assemble ``asr.audio`` chunks into utterances, and know how far each partition may be committed.

Chunks of one session (one key, so one partition) are kept by ``seq`` until the end marker arrives;
duplicates from redelivery or producer retries are ignored. The assembler is pure bookkeeping (no
Kafka, no clock of its own), so every rule below is unit-tested without a broker:

- the end marker with a seq below it missing → ``gap``; more audio than ``max_seconds`` → ``too_long``;
  less than ``min_seconds`` at the end → ``too_short``; no message for ``stale_after_s`` → ``incomplete``;
  more than ``max_pending`` sessions at once → the least recently active one is ``evicted``.
- a refused or finished session is remembered (bounded), so its later chunks are skipped, not
  restarted as a new session.
- **the commit point** of a partition is ``min(first offset of every session still open there, next
  offset)``: a restarted or new owner re-reads every session that was not finished.
- so a session whose first chunk lies before the commit point was finished by an earlier owner; its
  tail, re-read after a restart, starts at ``seq > 0`` ("headless"). ``already_done(session_id)``
  (the catalog has its row) tells such leftovers apart from a session whose head never arrived.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from asr.audio import SAMPLE_RATE

from .messages import Chunk, Reason, Rejection


@dataclass(frozen=True)
class SessionLimits:
    max_seconds: float = 10.0  # voice commands are short; longer sessions go to the DLQ (too_long)
    min_seconds: float = 0.1  # shorter than a syllable: a stray tap, not a command (as POST /v1/recognize)
    stale_after_s: float = 30.0  # an unfinished session with no message for this long is given up
    max_pending: int = 1000  # sessions assembled at once (memory: at most max_pending * max_seconds of audio)
    remember: int = 10_000  # finished/refused session ids kept, so their stray chunks are skipped


@dataclass
class OpenSession:
    """A session being assembled. ``record``: the latest raw record (what a session-level DLQ entry holds)."""

    session_id: str
    device_id: str
    partition: int
    first_offset: int
    headless: bool  # its first chunk seen had seq > 0
    last_seen: float
    record: Any = None
    chunks: dict[int, bytes] = field(default_factory=dict)
    samples: int = 0


@dataclass(frozen=True)
class CompletedSession:
    """Every chunk 0..end arrived. ``pcm``: the utterance, PCM16 LE mono 16 kHz; ``record``: the end record."""

    session_id: str
    device_id: str
    partition: int
    first_offset: int
    pcm: bytes
    record: Any = None

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


@dataclass(frozen=True)
class Added:
    """What one chunk did. ``outcome``: accepted | completed | duplicate | skipped | replayed | rejected
    (the chunk's session was refused: ``rejection`` says why). ``evicted``: other sessions given up to
    make room, each with the rejection its DLQ entry carries."""

    outcome: str
    completed: CompletedSession | None = None
    rejection: Rejection | None = None
    evicted: tuple[tuple[OpenSession, Rejection], ...] = ()


class SessionAssembler:
    def __init__(self, limits: SessionLimits = SessionLimits(),
                 already_done: Callable[[str], bool] = lambda session_id: False) -> None:
        self.limits = limits
        self.already_done = already_done
        self.open: dict[str, OpenSession] = {}
        self.completed: dict[str, CompletedSession] = {}  # complete, waiting for their batch to be written
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._max_samples = int(limits.max_seconds * SAMPLE_RATE)

    # -- feeding ------------------------------------------------------------------------------
    def add(self, partition: int, offset: int, chunk: Chunk, now: float, record: Any = None) -> Added:
        sid = chunk.session_id
        if sid in self._finished:
            return Added("skipped")
        if sid in self.completed:
            return Added("duplicate")
        session = self.open.get(sid)
        evicted: tuple[tuple[OpenSession, Rejection], ...] = ()
        if session is None:
            if chunk.seq > 0 and self.already_done(sid):
                self._remember(sid)
                return Added("replayed")
            evicted = self._make_room()
            session = OpenSession(sid, chunk.device_id, partition, offset, chunk.seq > 0, now)
            self.open[sid] = session
        elif chunk.device_id != session.device_id:
            # the message is wrong, the session may still complete
            return Added("rejected", rejection=Rejection(
                Reason.BAD_DEVICE, f"device {chunk.device_id!r} differs from {session.device_id!r}, which sent "
                                   f"the session's first chunk; a session belongs to one device"))
        elif chunk.seq in session.chunks:
            return Added("duplicate")
        session.chunks[chunk.seq] = chunk.pcm
        session.samples += chunk.samples
        session.last_seen, session.record = now, record
        if session.samples > self._max_samples:
            return self._refuse(session, Rejection(
                Reason.TOO_LONG, f"session {sid} passed {self.limits.max_seconds:g} s of audio at seq {chunk.seq}; "
                                 "voice commands are shorter (cut it on the device)"), evicted)
        if not chunk.end:
            return Added("accepted", evicted=evicted)
        return self._end(session, chunk.seq, evicted)

    def _end(self, session: OpenSession, end_seq: int, evicted: tuple) -> Added:
        missing = [seq for seq in range(end_seq) if seq not in session.chunks]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
            return self._refuse(session, Rejection(
                Reason.GAP, f"session {session.session_id} ended at seq {end_seq} but {len(missing)} chunk(s) never "
                            f"arrived (seq {shown})"), evicted)
        beyond = sorted(seq for seq in session.chunks if seq > end_seq)
        if beyond:
            return self._refuse(session, Rejection(
                Reason.BAD_SEQ, f"session {session.session_id} ended at seq {end_seq} but seq {beyond[0]} came "
                                "before it; the end marker must carry the highest seq"), evicted)
        seconds = session.samples / SAMPLE_RATE
        if seconds < self.limits.min_seconds:
            return self._refuse(session, Rejection(
                Reason.TOO_SHORT, f"session {session.session_id} holds {seconds:.3f} s of audio; at least "
                                  f"{self.limits.min_seconds:g} s is needed"), evicted)
        del self.open[session.session_id]
        done = CompletedSession(session.session_id, session.device_id, session.partition, session.first_offset,
                                b"".join(session.chunks[seq] for seq in range(end_seq + 1)), session.record)
        self.completed[done.session_id] = done
        return Added("completed", completed=done, evicted=evicted)

    def _refuse(self, session: OpenSession, rejection: Rejection, evicted: tuple) -> Added:
        del self.open[session.session_id]
        self._remember(session.session_id)
        return Added("rejected", rejection=rejection, evicted=evicted)

    def _make_room(self) -> tuple[tuple[OpenSession, Rejection], ...]:
        if len(self.open) < self.limits.max_pending:
            return ()
        oldest = min(self.open.values(), key=lambda s: s.last_seen)
        del self.open[oldest.session_id]
        self._remember(oldest.session_id)
        return ((oldest, Rejection(Reason.EVICTED, f"session {oldest.session_id} was given up unfinished: "
                                                   f"{self.limits.max_pending} sessions were being assembled "
                                                   "at once")),)

    def _remember(self, session_id: str) -> None:
        self._finished[session_id] = None
        self._finished.move_to_end(session_id)
        while len(self._finished) > self.limits.remember:
            self._finished.popitem(last=False)

    # -- ageing, finishing, forgetting --------------------------------------------------------
    def expire(self, now: float) -> list[tuple[OpenSession, Rejection]]:
        """Give up sessions with no message for ``stale_after_s`` (so they stop holding commits back)."""
        stale = [s for s in self.open.values() if now - s.last_seen >= self.limits.stale_after_s]
        out = []
        for session in stale:
            del self.open[session.session_id]
            self._remember(session.session_id)
            have = sorted(session.chunks)
            out.append((session, Rejection(
                Reason.INCOMPLETE, f"session {session.session_id} got no message for "
                                   f"{self.limits.stale_after_s:g} s and no end marker (has seq "
                                   f"{have[0]}..{have[-1]}, {len(have)} chunk(s))")))
        return out

    def finish(self, session_id: str) -> None:
        """Its result (or DLQ entry) is written: it no longer holds its partition's commit point back."""
        self.completed.pop(session_id, None)
        self._remember(session_id)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget what was being assembled there (revoked, or rewound): the next reader re-reads it."""
        gone = set(partitions)
        self.open = {k: s for k, s in self.open.items() if s.partition not in gone}
        self.completed = {k: s for k, s in self.completed.items() if s.partition not in gone}

    def forget_finished(self) -> None:
        """After a rewind: finished sessions may be read again (a DLQ entry that never reached the broker)."""
        self._finished.clear()

    def commit_point(self, partition: int, next_offset: int) -> int:
        """The offset a consumer may commit on ``partition``: never past the first chunk of an open session."""
        firsts = [s.first_offset for s in (*self.open.values(), *self.completed.values()) if s.partition == partition]
        return min([next_offset, *firsts])
