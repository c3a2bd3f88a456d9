"""The Kafka inference worker: ``asr.audio`` → utterances → one decode per micro-batch → ``asr.transcripts``.

One loop, in this order, so every acknowledged utterance ends with exactly one catalog row:

1. poll; validate each record (bad ones → ``asr.audio.dlq`` with the reason, the loop goes on) and
   assemble chunks per session (:mod:`serving.worker.sessions`);
2. once ``max_batch`` utterances are complete, or the oldest waited ``max_wait_ms``, recognise them
   together (``RecognitionService.recognize_batch``: one decode per model, then the catalog rows are
   upserted by request id = session id in one transaction);
3. produce the results to ``asr.transcripts`` and flush (DLQ entries included);
4. only then commit, per partition never past the first offset of a session still open.

A crash anywhere re-reads from the last commit: decoding and upserting again is harmless
(at-least-once delivery + upsert = one row per utterance). Revoked partitions are finished where
possible, committed, and their open sessions dropped (the new owner re-reads them). SIGTERM finishes
the current batch, commits and leaves the group.

Fault injection (tests only): ``VOICELOOP_WORKER_CRASH_AFTER_WRITE=<n>`` kills the process
(``os._exit(137)``, as SIGKILL would) right after the n-th batch was written to the catalog and to
``asr.transcripts`` but before its offsets were committed: the worst moment to die.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import InterfaceError, OperationalError

from collection.models import ProductionUtterance
from monitoring import metrics
from serving.recognition import Recognition, RecognitionService, Utterance
from serving.streaming import pcm16_to_float

from .client import Topics, audio_consumer, ensure_topics, make_producer
from .messages import Reason, Rejection, dlq_headers, parse_audio_record, transcript_value
from .sessions import CompletedSession, SessionAssembler, SessionLimits

log = logging.getLogger(__name__)

CRASH_AFTER_WRITE_ENV = "VOICELOOP_WORKER_CRASH_AFTER_WRITE"
# Worth retrying from the log rather than sending to the DLQ: the catalog or the broker is away.
TRANSIENT = (OperationalError, InterfaceError, OSError, KafkaError)
CHANNEL = "kafka"


@dataclass(frozen=True)
class WorkerConfig:
    max_batch: int = 8  # utterances decoded together
    max_wait_ms: int = 20  # how long a complete utterance may wait for others to fill its batch
    # kafka-python's broker-side fetch wait is 500 ms: a quiet partition would hold the end marker that long.
    fetch_max_wait_ms: int = 20
    poll_ms: int = 200
    commit_interval_s: float = 1.0  # progress without a batch (DLQ entries, skipped chunks) is committed this often
    kafka_timeout_s: float = 30.0  # flush and commit give up (and the batch is retried) after this
    max_backoff_s: float = 30.0  # retries after a catalog or broker failure back off up to this
    limits: SessionLimits = field(default_factory=SessionLimits)
    topic_prefix: str = ""  # asr.audio etc. are read and written as <prefix>asr.audio

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)


class KafkaWorker:
    """One member of the consumer group. ``run(stop)`` blocks until ``stop`` is set."""

    def __init__(self, service: RecognitionService, bootstrap: str, group: str,
                 config: WorkerConfig = WorkerConfig()) -> None:
        self.service, self.bootstrap, self.group, self.config = service, bootstrap, group, config
        self.assembler = SessionAssembler(config.limits, already_done=self._already_recorded)
        self.ready: list[CompletedSession] = []
        self._ready_since = 0.0
        self._next: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self._start: dict[TopicPartition, int] = {}  # first offset read since the partition was assigned
        self._committed: dict[TopicPartition, int] = {}  # what this member committed since then
        self._stop = threading.Event()
        self._unconfirmed: list = []  # produce futures since the last commit
        self._last_commit = time.monotonic()
        self._backoff = 0.0
        self._writes = 0
        self._crash_after = int(os.environ.get(CRASH_AFTER_WRITE_ENV, "0") or 0)
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None

    # -- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        if not self._wait_for_models(stop):
            return
        ensure_topics(self.bootstrap, prefix=self.config.topic_prefix)
        self.producer = make_producer(self.bootstrap)
        self.consumer = audio_consumer(self.bootstrap, self.group, fetch_max_wait_ms=self.config.fetch_max_wait_ms)
        self.consumer.subscribe([self.config.topics.audio], listener=_Rebalance(self))
        log.info("worker in group %s reading %s", self.group, self.config.topics.audio)
        try:
            while not stop.is_set():
                self.step()
            self._drain()
        finally:
            self.consumer.close(autocommit=False, timeout_ms=5000)
            self.producer.close(timeout=5)
            log.info("worker stopped")

    def step(self) -> None:
        """Poll once, then write a batch and commit when due. Failures of the catalog or the broker
        rewind to the last commit (after a back-off) instead of stopping the worker."""
        try:
            self._poll()
            if self._batch_due():
                self._write_ready()
            if time.monotonic() - self._last_commit >= self.config.commit_interval_s:
                self._commit()
            self._backoff = 0.0
        except TRANSIENT as e:
            self._backoff = min(self.config.max_backoff_s, max(0.5, self._backoff * 2))
            log.warning("%s: %s; re-reading from the last commit in %.1f s", type(e).__name__, e, self._backoff)
            self._stop.wait(self._backoff)
            self._rewind()

    def _poll(self) -> None:
        assert self.consumer is not None
        timeout = self.config.poll_ms
        if self.ready:
            waited = (time.monotonic() - self._ready_since) * 1000
            timeout = max(0, min(timeout, int(self.config.max_wait_ms - waited)))
        polled = self.consumer.poll(timeout_ms=timeout)
        now = time.monotonic()
        for tp, records in polled.items():
            self._start.setdefault(tp, records[0].offset)
            for record in records:
                self._handle(tp, record, now)
                self._next[tp] = record.offset + 1
        for session, rejection in self.assembler.expire(now):
            self._dead_letter(session.record, rejection)
        self._update_lag()

    def _handle(self, tp: TopicPartition, record, now: float) -> None:  # noqa: ANN001 - a ConsumerRecord
        chunk = parse_audio_record(record.key, record.value, record.headers)
        if isinstance(chunk, Rejection):
            self._dead_letter(record, chunk)
            metrics.KAFKA_CONSUMED.labels("dlq").inc()
            return
        added = self.assembler.add(tp.partition, record.offset, chunk, now, record)
        for session, rejection in added.evicted:
            self._dead_letter(session.record, rejection)
        if added.rejection is not None:
            self._dead_letter(record, added.rejection)
        if added.completed is not None:
            if not self.ready:
                self._ready_since = now
            self.ready.append(added.completed)
        metrics.KAFKA_CONSUMED.labels("dlq" if added.outcome == "rejected" else added.outcome).inc()

    def _batch_due(self) -> bool:
        return bool(self.ready) and (len(self.ready) >= self.config.max_batch or
                                     (time.monotonic() - self._ready_since) * 1000 >= self.config.max_wait_ms)

    # -- writing --------------------------------------------------------------------------------
    def _write_ready(self) -> None:
        while self.ready:
            batch, self.ready = self.ready[: self.config.max_batch], self.ready[self.config.max_batch:]
            self._ready_since = time.monotonic()
            self._write(batch)

    def _write(self, batch: list[CompletedSession]) -> None:
        assert self.producer is not None
        for session, result in self._recognize(batch):
            self._send(self.config.topics.transcripts, session.session_id.encode(),
                       transcript_value(result.to_dict(), result.device_id), None)
        self._confirm_sends()
        self._writes += 1
        if self._crash_after and self._writes >= self._crash_after:
            log.error("fault injection: %s=%d, exiting before the commit", CRASH_AFTER_WRITE_ENV, self._crash_after)
            logging.shutdown()
            os._exit(137)
        for session in batch:
            self.assembler.finish(session.session_id)
        metrics.KAFKA_BATCH.observe(len(batch))
        log.debug("wrote a batch of %d (write %d)", len(batch), self._writes)
        self._commit()

    def _recognize(self, batch: list[CompletedSession]) -> list[tuple[CompletedSession, Recognition]]:
        """Decode the batch together; when it fails for a reason other than the catalog being away, try
        each utterance alone so one bad utterance goes to the DLQ and the others are answered."""
        utts = [Utterance(pcm16_to_float(s.pcm), s.device_id, request_id=s.session_id) for s in batch]
        try:
            results = self.service.recognize_batch(utts, channel=CHANNEL)
            metrics.KAFKA_UTTERANCES.inc(len(results))
            return list(zip(batch, results, strict=True))
        except TRANSIENT:
            raise
        except Exception:
            log.warning("a batch of %d failed; recognising its utterances one by one", len(batch), exc_info=True)
        done = []
        for session, utt in zip(batch, utts, strict=True):
            try:
                done.append((session, self.service.recognize(utt, channel=CHANNEL)))
                metrics.KAFKA_UTTERANCES.inc()
            except TRANSIENT:
                raise
            except Exception as e:
                self._dead_letter(session.record, Rejection(Reason.UNPROCESSABLE, f"{type(e).__name__}: {e}"))
        return done

    def _dead_letter(self, record, rejection: Rejection) -> None:  # noqa: ANN001 - a ConsumerRecord
        log.info("DLQ %s: %s", rejection.reason, rejection.detail)
        headers = dlq_headers(record.headers, rejection.reason, rejection.detail, record.partition, record.offset)
        self._send(self.config.topics.dlq, record.key, record.value, headers)

    def _send(self, topic: str, key: bytes | None, value: bytes | None, headers: list | None) -> None:
        assert self.producer is not None
        if key is None and value is None:
            value = b""  # kafka-python refuses a record with neither
        self._unconfirmed.append(self.producer.send(topic, key=key, value=value, headers=headers or []))

    def _confirm_sends(self) -> None:
        """Every result and DLQ entry since the last commit is on the broker (or raise KafkaError)."""
        assert self.producer is not None
        if not self._unconfirmed:
            return
        self.producer.flush(timeout=self.config.kafka_timeout_s)
        for future in self._unconfirmed:
            future.get(timeout=self.config.kafka_timeout_s)
        self._unconfirmed = []

    # -- offsets ----------------------------------------------------------------------------------
    def _commit(self) -> None:
        """Commit each partition up to its commit point (after confirming what was produced)."""
        assert self.consumer is not None
        self._confirm_sends()
        self._last_commit = time.monotonic()
        offsets = {}
        for tp, next_offset in self._next.items():
            point = self.assembler.commit_point(tp.partition, next_offset)
            if point > self._committed.get(tp, -1):
                offsets[tp] = OffsetAndMetadata(point, "", -1)
        if not offsets:
            return
        try:
            self.consumer.commit(offsets, timeout_ms=int(self.config.kafka_timeout_s * 1000))
        except CommitFailedError as e:  # the group rebalanced: the new owner re-reads from the last commit
            log.warning("commit refused (%s); the partitions' next owner re-reads them", e)
            return
        self._committed.update({tp: o.offset for tp, o in offsets.items()})

    def _rewind(self) -> None:
        """Drop everything read since the last commit and read it again (no broker round trip: the
        broker may be what failed)."""
        assert self.consumer is not None
        self._unconfirmed = []
        self.ready = []
        assigned = self.consumer.assignment()
        self.assembler.drop_partitions(tp.partition for tp in assigned)
        self.assembler.forget_finished()
        for tp in assigned:
            target = self._committed.get(tp, self._start.get(tp))
            if target is not None:  # else nothing was read there since the assignment
                self.consumer.seek(tp, target)
        self._next, self._start = {}, {}

    def _update_lag(self) -> None:
        """Lag = high watermark (from the last fetch response) - our position, per assigned partition."""
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:  # not fetched yet
                continue
            position = self._next.get(tp)
            if position is None:  # nothing read since the assignment: the fetch position is known locally
                try:
                    position = self.consumer.position(tp, timeout_ms=100)
                except KafkaError:
                    continue
            if position is not None:
                metrics.KAFKA_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    # -- group membership ------------------------------------------------------------------------
    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Before giving partitions up: finish what is complete, commit, forget the rest."""
        try:
            self._write_ready()
            self._commit()
        except Exception:  # the next owner re-reads whatever was not committed
            log.warning("could not finish before the rebalance", exc_info=True)
        gone = {tp.partition for tp in partitions}
        self.assembler.drop_partitions(gone)
        self.ready = [s for s in self.ready if s.partition not in gone]
        for tp in partitions:
            self._next.pop(tp, None)
            self._start.pop(tp, None)
            self._committed.pop(tp, None)
            try:
                metrics.KAFKA_LAG.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass

    def _drain(self) -> None:
        """Shutting down: write what is complete and commit; open sessions stay uncommitted for the next owner."""
        try:
            self._write_ready()
            self._commit()
        except TRANSIENT as e:
            log.warning("could not finish the last batch (%s); it will be re-read", e)

    # -- helpers --------------------------------------------------------------------------------
    def _already_recorded(self, session_id: str) -> bool:
        with self.service.catalog() as session:
            return session.get(ProductionUtterance, session_id) is not None

    def _wait_for_models(self, stop: threading.Event) -> bool:
        warned = False
        while not self.service.models.ready:
            if not warned:
                log.warning("no champion model yet; waiting before joining group %s", self.group)
                warned = True
            if stop.wait(1.0):
                return False
        return True


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: KafkaWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked) -> None:  # noqa: ANN001
        if revoked:
            log.info("partitions revoked: %s", _names(revoked))
            self.worker.revoked(set(revoked))

    def on_partitions_assigned(self, assigned) -> None:  # noqa: ANN001
        log.info("partitions assigned: %s", _names(assigned))


def _names(partitions) -> str:  # noqa: ANN001
    return ", ".join(str(tp.partition) for tp in sorted(partitions)) or "none"
