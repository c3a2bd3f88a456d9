"""Kafka streaming inference (asr.audio → asr.transcripts, malformed input → asr.audio.dlq).

    run_worker(settings, models, group="voiceloop-asr")   # what `voiceloop worker` calls; SIGTERM stops it

More inference = more workers in the same group (up to one per ``asr.audio`` partition).
The contract and the delivery guarantees: docs/kafka.md.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

# Light imports only: the simulator and `voiceloop stack up` use the client without loading torch.
from .client import (
    CHUNK_BYTES,
    Topics,
    audio_consumer,
    ensure_topics,
    make_producer,
    send_utterance,
    transcripts_consumer,
)
from .messages import AUDIO_TOPIC, DLQ_TOPIC, TRANSCRIPTS_TOPIC, Chunk, Reason, Rejection, parse_audio_record
from .sessions import SessionAssembler, SessionLimits

if TYPE_CHECKING:
    from serving.model_manager import ModelManager
    from serving.recognition import RecognitionService
    from voiceloop.settings import Settings

    from .worker import KafkaWorker, WorkerConfig

__all__ = ["AUDIO_TOPIC", "CHUNK_BYTES", "CRASH_AFTER_WRITE_ENV", "DLQ_TOPIC", "TRANSCRIPTS_TOPIC", "Chunk",
           "KafkaWorker", "Reason", "Rejection", "SessionAssembler", "SessionLimits", "Topics", "WorkerConfig",
           "audio_consumer", "ensure_topics", "make_producer", "parse_audio_record", "recognition_service",
           "run_worker", "send_utterance", "transcripts_consumer", "worker_config", "worker_in_thread"]

log = logging.getLogger(__name__)
_LAZY = {"KafkaWorker", "WorkerConfig", "CRASH_AFTER_WRITE_ENV"}  # serving.worker.worker loads the models' stack


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import worker

        return getattr(worker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recognition_service(settings: Settings, models: ModelManager) -> RecognitionService:
    """The same service the HTTP API builds: catalog, audio store, language, grammar, erasure key."""
    from collection.db import connect
    from collection.store import AudioStore
    from serving.recognition import RecognitionService

    return RecognitionService(models, connect(settings.catalog), AudioStore(settings.audio_store),
                              language=settings.language, grammar=settings.grammar,
                              erasure_secret=settings.erasure_secret)


def worker_config(settings: Settings) -> WorkerConfig:
    from .worker import WorkerConfig

    return WorkerConfig(max_batch=settings.kafka_max_batch, max_wait_ms=settings.kafka_max_wait_ms,
                        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                        limits=SessionLimits(max_seconds=settings.max_stream_seconds),
                        topic_prefix=settings.kafka_topic_prefix)


def run_worker(settings: Settings, models: ModelManager, *, group: str = "voiceloop-asr",
               metrics_port: int | None = None, stop: threading.Event | None = None,
               config: WorkerConfig | None = None) -> None:
    """Consume until ``stop`` is set, or SIGTERM/SIGINT arrives (when called from the main thread)."""
    from .worker import KafkaWorker

    service = recognition_service(settings, models)
    if metrics_port:
        from prometheus_client import start_http_server

        from monitoring.catalog_metrics import install_catalog_metrics

        install_catalog_metrics(service.catalog, ttl_s=settings.catalog_metrics_ttl_s)
        start_http_server(metrics_port)
        log.info("metrics on :%d/metrics", metrics_port)
    stop = stop or threading.Event()
    restore = _stop_on_signals(stop)
    models.start()
    try:
        KafkaWorker(service, settings.kafka_bootstrap, group, config or worker_config(settings)).run(stop)
    finally:
        restore()
        models.stop()
        service.close()


@contextmanager
def worker_in_thread(settings: Settings, models: ModelManager, group: str = "voiceloop-asr",
                     config: WorkerConfig | None = None, stop_timeout_s: float = 30.0) -> Iterator[None]:
    """``run_worker`` in a background thread for the block's duration (the demo, tests); on exit it
    finishes its batch, commits and leaves the group, or ``RuntimeError`` after ``stop_timeout_s``."""
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(settings, models),
                              kwargs={"group": group, "stop": stop, "config": config}, name="kafka-worker",
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=stop_timeout_s)
        if thread.is_alive():
            raise RuntimeError(f"the Kafka worker did not stop within {stop_timeout_s:g} s")


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop`` (the loop finishes its batch and commits); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, _frame: object) -> None:
        log.info("%s: finishing the current batch, committing and leaving the group", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
