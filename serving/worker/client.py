"""kafka-python helpers every Kafka user of voiceloop shares: the worker, the device simulator, benchmarks.

    ensure_topics("127.0.0.1:9092")                      # asr.audio, asr.transcripts, asr.audio.dlq
    producer = make_producer("127.0.0.1:9092")
    send_utterance(producer, "req-1", "spk-kitchen-01", pcm16, flush=True)
    for record in transcripts_consumer("127.0.0.1:9092"):
        record.value   # {"request_id": "req-1", "text": …, "device_id": "spk-kitchen-01", …}

Topic names are the contract's; ``prefix`` (``VOICELOOP_KAFKA_TOPIC_PREFIX``) puts several
deployments (or test runs) on one cluster without sharing topics.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from .messages import AUDIO_TOPIC, DLQ_TOPIC, TRANSCRIPTS_TOPIC, audio_headers

log = logging.getLogger(__name__)

# A consumer-group join takes ~23 s with kafka-python's defaults against tansu and ~3 s with these;
# a dead consumer's partitions move to the survivors after about session_timeout_ms.
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
CHUNK_BYTES = 6400  # 0.2 s of 16 kHz PCM16


@dataclass(frozen=True)
class Topics:
    audio: str = AUDIO_TOPIC
    transcripts: str = TRANSCRIPTS_TOPIC
    dlq: str = DLQ_TOPIC

    @classmethod
    def with_prefix(cls, prefix: str = "") -> Topics:
        return cls(prefix + AUDIO_TOPIC, prefix + TRANSCRIPTS_TOPIC, prefix + DLQ_TOPIC)

    def all(self) -> tuple[str, str, str]:
        return self.audio, self.transcripts, self.dlq


def ensure_topics(bootstrap: str, partitions: int = 4, prefix: str = "", timeout_s: float = 30.0) -> Topics:
    """Create the three topics where missing (existing ones are left as they are); returns their names.
    ``partitions`` bounds how many workers share the audio: one partition feeds at most one worker."""
    topics = Topics.with_prefix(prefix)
    admin = _admin(bootstrap, timeout_s)
    try:
        missing = [t for t in topics.all() if t not in set(admin.list_topics())]
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                    timeout_ms=int(timeout_s * 1000))
                log.info("created topic %s (%d partitions)", name, partitions)
            except TopicAlreadyExistsError:
                pass  # created meanwhile by another worker
    finally:
        admin.close()
    return topics


def _admin(bootstrap: str, timeout_s: float) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, client_id="voiceloop")
        except KafkaError as e:
            if time.monotonic() >= deadline:
                raise KafkaError(f"no Kafka broker answers at {bootstrap} after {timeout_s:g} s "
                                 "(start one with `voiceloop stack up`, or set VOICELOOP_KAFKA_BOOTSTRAP)") from e
            time.sleep(0.5)


def make_producer(bootstrap: str, **options) -> KafkaProducer:
    """acks=all; one request in flight per broker, so a retried chunk cannot overtake the next one."""
    config = {"bootstrap_servers": bootstrap, "acks": "all", "linger_ms": 5, "retries": 5,
              "max_in_flight_requests_per_connection": 1, "client_id": "voiceloop"} | options
    return KafkaProducer(**config)


def send_utterance(producer: KafkaProducer, session_id: str, device_id: str, pcm16: bytes,
                   chunk_bytes: int = CHUNK_BYTES, *, topic: str = AUDIO_TOPIC, flush: bool = False,
                   timeout_s: float = 30.0) -> None:
    """Send one utterance as ``asr.audio`` chunks (seq 0, 1, …) and an empty end message.

    ``pcm16``: PCM16 LE mono 16 kHz bytes; ``chunk_bytes``: even, bytes per message. With ``flush``,
    returns only once the broker acknowledged every message (raises ``KafkaError`` otherwise): that is
    what "the utterance was accepted" means.
    """
    if chunk_bytes <= 0 or chunk_bytes % 2:
        raise ValueError(f"chunk_bytes must be a positive even number (whole PCM16 samples), got {chunk_bytes}")
    key = session_id.encode()
    chunks = [pcm16[i:i + chunk_bytes] for i in range(0, len(pcm16), chunk_bytes)]
    futures = [producer.send(topic, key=key, value=chunk, headers=audio_headers(seq, device_id))
               for seq, chunk in enumerate(chunks)]
    futures.append(producer.send(topic, key=key, value=b"", headers=audio_headers(len(chunks), device_id, end=True)))
    if flush:
        producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)  # raises the send's KafkaError


def audio_consumer(bootstrap: str, group: str, **options) -> KafkaConsumer:
    """The worker's consumer: manual commits; a new group starts at the oldest message, so nothing
    produced before the first worker joined is skipped."""
    config = {"bootstrap_servers": bootstrap, "group_id": group, "enable_auto_commit": False,
              "auto_offset_reset": "earliest", "client_id": "voiceloop-worker", **GROUP_TIMEOUTS} | options
    return KafkaConsumer(**config)


def transcripts_consumer(bootstrap: str, group: str | None = None, *, topic: str = TRANSCRIPTS_TOPIC,
                         **options) -> KafkaConsumer:
    """Results from the oldest on: key = session id (str), value = the result dict. Without ``group``
    every partition is read and nothing is committed."""
    config = {"bootstrap_servers": bootstrap, "group_id": group, "auto_offset_reset": "earliest",
              "key_deserializer": lambda k: k.decode() if k is not None else None,
              "value_deserializer": lambda v: json.loads(v) if v else None, **GROUP_TIMEOUTS} | options
    consumer = KafkaConsumer(**config)
    consumer.subscribe([topic])
    return consumer
