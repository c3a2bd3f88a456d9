"""Builders for the Kafka worker tests: utterances to send, and reading topics and the catalog back (all bounded)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import numpy as np
from _device_helpers import pcm16
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import select

from collection.db import connect
from collection.models import ProductionUtterance
from serving.worker.client import Topics


def utterance_pcm(seconds: float = 0.5, seed: int = 0) -> bytes:
    """A voiced-sounding tone as PCM16 LE mono 16 kHz (each seed a different pitch)."""
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 150 + 10 * (seed % 20)
    return pcm16(sum(0.2 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 4)).astype(np.float32))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def read_topic(bootstrap: str, topic: str, until: Callable[[list], bool], timeout_s: float = 30.0) -> list:
    """Every record of ``topic`` from the oldest on, read until ``until(records)`` holds."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    try:
        consumer.subscribe([topic])
        records: list = []
        deadline = time.monotonic() + timeout_s
        while not until(records):
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout_s:g} s reading {topic}: {len(records)} record(s)")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close(autocommit=False)


def topic_ends(bootstrap: str, topic: str, partitions: int = 4, idle_s: float = 2.0) -> dict[int, int]:
    """The next offset of each partition, found by reading everything (tansu's ListOffsets(latest) answers
    the last batch's base offset + 1, not the high watermark)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = dict.fromkeys(range(partitions), 0)
        last_new = time.monotonic()
        while time.monotonic() - last_new < idle_s:
            for tp, batch in consumer.poll(timeout_ms=200).items():
                ends[tp.partition] = batch[-1].offset + 1
                last_new = time.monotonic()
        return ends
    finally:
        consumer.close(autocommit=False)


def committed(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p), timeout_ms=10_000) for p in range(partitions)}
    finally:
        consumer.close(autocommit=False)


def stored_rows(catalog_url: str) -> dict[str, ProductionUtterance]:
    with connect(catalog_url)() as session:
        return {row.request_id: row for row in session.scalars(select(ProductionUtterance))}


def topics(prefix: str) -> Topics:
    return Topics.with_prefix(prefix)
