"""The Kafka worker in-process (a thread) against a real tansu broker and a real catalog.

Each test has its own topics (a prefix) and consumer group on the session's broker.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from _device_helpers import add_device, tiny_checkpoint
from _kafka_helpers import committed, read_topic, stored_rows, topic_ends, unique, utterance_pcm, wait_for
from prometheus_client import REGISTRY

from serving.model_manager import ModelManager
from serving.worker import (
    SessionLimits,
    WorkerConfig,
    ensure_topics,
    make_producer,
    send_utterance,
    transcripts_consumer,
    worker_in_thread,
)
from serving.worker.messages import audio_headers
from voiceloop.settings import Settings


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelManager:
    return ModelManager.from_path(str(tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pt")))


@pytest.fixture
def settings(tmp_path: Path, catalog_url: str, kafka_bootstrap: str) -> Settings:
    prefix = unique("t") + "."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    return Settings(data_dir=tmp_path, catalog_url=catalog_url, kafka_bootstrap=kafka_bootstrap,
                    kafka_topic_prefix=prefix)


@pytest.fixture
def producer(settings: Settings):
    producer = make_producer(settings.kafka_bootstrap)
    yield producer
    producer.close(timeout=5)


@contextlib.contextmanager
def worker(settings: Settings, models: ModelManager, group: str, **config: object) -> Iterator[None]:
    with worker_in_thread(settings, models, group, WorkerConfig(topic_prefix=settings.kafka_topic_prefix, **config)):
        yield


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_sessions_across_partitions_become_one_row_and_one_result_each(settings, models, catalog_url, producer) -> None:
    add_device(catalog_url, "spk-consent")  # registered or not, the worker serves a device
    sessions = {f"req-{i:02d}": f"spk-{i % 3}" for i in range(10)}
    before = metric("voiceloop_kafka_utterances_total")
    for i, (sid, device) in enumerate(sessions.items()):
        send_utterance(producer, sid, device, utterance_pcm(0.5, seed=i), chunk_bytes=3200,
                       topic=settings.kafka_topic_prefix + "asr.audio", flush=True)
    group = unique("g")
    topic = settings.kafka_topic_prefix + "asr.transcripts"
    with worker(settings, models, group, max_batch=4):
        results = read_topic(settings.kafka_bootstrap, topic, lambda rs: {r.key for r in rs} >= {s.encode() for s in
                             sessions}, timeout_s=60)
        wait_for(lambda: len(stored_rows(catalog_url)) == len(sessions), 30, "catalog rows")

    rows = stored_rows(catalog_url)
    assert set(rows) == set(sessions)
    for sid, row in rows.items():
        assert (row.device_id, row.channel) == (sessions[sid], "kafka")
        assert row.model_version == "tiny.pt" and row.duration_s == pytest.approx(0.5, abs=0.01)
    by_key = {r.key.decode(): json.loads(r.value) for r in results}
    assert all(by_key[sid]["request_id"] == sid and by_key[sid]["device_id"] == sessions[sid] for sid in sessions)
    assert len({r.partition for r in results}) > 1  # the sessions were spread over partitions
    assert metric("voiceloop_kafka_utterances_total") - before >= len(sessions)
    # a clean stop commits everything it read
    audio_topic = settings.kafka_topic_prefix + "asr.audio"
    ends = topic_ends(settings.kafka_bootstrap, audio_topic)
    assert {p: o or 0 for p, o in committed(settings.kafka_bootstrap, group, audio_topic).items()} == ends


def test_malformed_messages_go_to_the_dlq_and_the_worker_keeps_going(settings, models, catalog_url, producer) -> None:
    bootstrap, audio_topic = settings.kafka_bootstrap, settings.kafka_topic_prefix + "asr.audio"
    ok = b"\x00\x01" * 800

    def send(key: bytes | None, value: bytes, headers: list) -> None:
        producer.send(audio_topic, key=key, value=value, headers=headers).get(timeout=10)

    send(b"bad-hdr", ok, [("device", b"d")])
    send(b"bad-seq", ok, [("seq", b"first"), ("device", b"d")])
    send(b"bad-odd", b"\x00\x01\x02", audio_headers(0, "d"))
    send(b"bad-rate", ok, [("seq", b"0"), ("device", b"d"), ("rate", b"8000")])
    send(b"\xff\xfe garbage", ok, audio_headers(0, "d"))
    send(b"bad-gap", ok, audio_headers(0, "d"))
    send(b"bad-gap", ok, audio_headers(2, "d"))
    send(b"bad-gap", b"", audio_headers(3, "d", end=True))
    send(b"bad-stale", ok, audio_headers(0, "d"))  # never ends
    send(b"bad-long", b"\x00\x00" * 16000 * 3, audio_headers(0, "d"))  # 3 s > max_seconds=2
    send_utterance(producer, "good-1", "spk-1", utterance_pcm(0.4), topic=audio_topic, flush=True)

    want = {"missing_header", "bad_seq", "odd_bytes", "bad_rate", "bad_key", "gap", "incomplete", "too_long"}
    dlq_topic = settings.kafka_topic_prefix + "asr.audio.dlq"
    group = unique("g")
    with worker(settings, models, group, limits=SessionLimits(max_seconds=2.0, stale_after_s=1.5),
                commit_interval_s=0.2):
        dlq = read_topic(bootstrap, dlq_topic,
                         lambda rs: {dict(r.headers)["error"].decode() for r in rs} >= want, timeout_s=60)
        wait_for(lambda: "good-1" in stored_rows(catalog_url), 30, "the good utterance")
        send_utterance(producer, "good-2", "spk-1", utterance_pcm(0.4), topic=audio_topic, flush=True)
        wait_for(lambda: "good-2" in stored_rows(catalog_url), 30, "an utterance sent after the bad ones")
        # the stale session no longer holds its partition's commit back
        wait_for(lambda: committed(bootstrap, group, audio_topic) == topic_ends(bootstrap, audio_topic, idle_s=0.5),
                 30, "offsets committed past every malformed message")

    assert set(stored_rows(catalog_url)) == {"good-1", "good-2"}
    by_reason = {dict(r.headers)["error"].decode(): r for r in dlq}
    gap = by_reason["gap"]
    headers = dict(gap.headers)
    assert gap.key == b"bad-gap" and headers["end"] == b"1" and b"seq 1" in headers["error_detail"]
    assert {"source_partition", "source_offset"} <= set(headers)
    odd = by_reason["odd_bytes"]
    assert odd.value == b"\x00\x01\x02" and dict(odd.headers)["seq"] == b"0"  # the original record, kept whole
    assert by_reason["bad_key"].key == b"\xff\xfe garbage"
    assert Counter(dict(r.headers)["error"] for r in dlq)[b"gap"] == 1


def test_redelivery_is_harmless(settings, models, catalog_url, producer) -> None:
    """Duplicated chunks, a session sent twice, and a second group re-reading everything: still one row each."""
    audio_topic = settings.kafka_topic_prefix + "asr.audio"
    pcm = utterance_pcm(0.4)
    send_utterance(producer, "dup-1", "spk-1", pcm, topic=audio_topic, flush=True)
    send_utterance(producer, "dup-1", "spk-1", pcm, topic=audio_topic, flush=True)  # a producer retry, whole
    for seq in (0, 0, 1, 1):
        producer.send(audio_topic, key=b"dup-2", value=pcm[:3200], headers=audio_headers(seq, "spk-2")).get(10)
    producer.send(audio_topic, key=b"dup-2", value=b"", headers=audio_headers(2, "spk-2", end=True)).get(10)

    for _ in range(2):  # the second group reads everything again, as after losing every commit
        with worker(settings, models, unique("g")):
            wait_for(lambda: set(stored_rows(catalog_url)) == {"dup-1", "dup-2"}, 60, "both utterances")
            read_topic(settings.kafka_bootstrap, settings.kafka_topic_prefix + "asr.transcripts",
                       lambda rs: {r.key for r in rs} >= {b"dup-1", b"dup-2"})
    rows = stored_rows(catalog_url)
    assert set(rows) == {"dup-1", "dup-2"}
    assert rows["dup-2"].duration_s == pytest.approx(0.2, abs=0.001)  # two distinct chunks of 0.1 s
    results = transcripts_consumer(settings.kafka_bootstrap, topic=settings.kafka_topic_prefix + "asr.transcripts")
    try:
        seen = []
        wait_for(lambda: seen.extend(r for b in results.poll(200).values() for r in b) or len(seen) >= 2, 20,
                 "the results")
        assert {r.key for r in seen} == {"dup-1", "dup-2"} and seen[0].value["request_id"] in {"dup-1", "dup-2"}
    finally:
        results.close()


def test_one_unrecordable_utterance_goes_to_the_dlq_and_its_batch_is_answered(settings, models, catalog_url,
                                                                              producer) -> None:
    """A request id that already belongs to another device cannot be stored: that utterance alone is refused."""
    from collection.consent import record_production
    from collection.db import connect
    from collection.store import AudioStore

    with connect(catalog_url)() as session:
        record_production(session, AudioStore(settings.audio_store), request_id="taken", device_id="dev-a", audio=None,
                          hypothesis=None, confidence=None, latency_ms=None, model_version=None, language="ko")
        session.commit()
    audio_topic = settings.kafka_topic_prefix + "asr.audio"
    for sid in ("fine-1", "taken", "fine-2"):
        send_utterance(producer, sid, "dev-b", utterance_pcm(0.3), topic=audio_topic, flush=True)
    with worker(settings, models, unique("g"), max_wait_ms=500):
        dlq = read_topic(settings.kafka_bootstrap, settings.kafka_topic_prefix + "asr.audio.dlq", lambda rs: rs)
        wait_for(lambda: {"fine-1", "fine-2"} <= set(stored_rows(catalog_url)), 30, "the other two")
    assert dlq[0].key == b"taken" and dict(dlq[0].headers)["error"] == b"unprocessable"
    assert b"belongs to device" in dict(dlq[0].headers)["error_detail"]
    assert stored_rows(catalog_url)["taken"].device_id == "dev-a"


def test_a_catalog_outage_rewinds_and_loses_nothing(settings, models, catalog_url, producer, caplog) -> None:
    """The catalog fails once mid-batch: the worker re-reads from its last commit and stores everything once."""
    from sqlalchemy.exc import OperationalError

    from collection.db import connect
    from collection.store import AudioStore
    from serving.recognition import RecognitionService
    from serving.worker import KafkaWorker

    class FlakyCatalog(RecognitionService):
        failures = 1

        def record(self, results, utts) -> None:  # noqa: ANN001
            if self.failures:
                self.failures -= 1
                raise OperationalError("INSERT INTO production_utterances", {}, Exception("database is locked"))
            super().record(results, utts)

    service = FlakyCatalog(models, connect(catalog_url), AudioStore(settings.audio_store), language="ko")
    audio_topic = settings.kafka_topic_prefix + "asr.audio"
    sids = [f"flaky-{i}" for i in range(6)]
    for sid in sids:
        send_utterance(producer, sid, "dev-1", utterance_pcm(0.3), topic=audio_topic, flush=True)
    stop = threading.Event()
    config = WorkerConfig(topic_prefix=settings.kafka_topic_prefix, max_batch=4)
    thread = threading.Thread(target=KafkaWorker(service, settings.kafka_bootstrap, unique("g"), config).run,
                              args=(stop,), daemon=True)
    with caplog.at_level("WARNING", logger="serving.worker"):
        thread.start()
        try:
            wait_for(lambda: set(stored_rows(catalog_url)) == set(sids), 60, "every utterance")
        finally:
            stop.set()
            thread.join(timeout=30)
    assert not thread.is_alive() and service.failures == 0
    assert "re-reading from the last commit" in caplog.text
