"""Real `voiceloop worker` processes against a real broker and catalog, killed at the worst moments.

The claim under test: every acknowledged utterance (the broker acknowledged all its chunks) ends
with exactly one catalog row and at least one result on asr.transcripts, whatever happens to the
workers; a clean stop (SIGTERM) commits everything and exits 0.
Faults: SIGKILL from outside at an arbitrary moment, and the worker's own fault-injection hook
``VOICELOOP_WORKER_CRASH_AFTER_WRITE=<n>`` (exit 137 right after the n-th batch was written, before
its offsets were committed).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from _device_helpers import tiny_checkpoint
from _kafka_helpers import committed, read_topic, stored_rows, topic_ends, unique, utterance_pcm, wait_for

from infra.stack import free_port
from serving.worker import CRASH_AFTER_WRITE_ENV, ensure_topics, make_producer, send_utterance

pytestmark = pytest.mark.slow  # tens of seconds: restarted workers wait for the group to drop the dead one

START_S = 60  # a cold worker: imports, model load, group join; a dead member's session must expire first


class Worker:
    """One `voiceloop worker` process with its log file."""

    def __init__(self, env: dict[str, str], log_path: Path, checkpoint: Path, group: str, data_dir: Path,
                 crash_after_write: int = 0, metrics_port: int | None = None) -> None:
        env = {**env, CRASH_AFTER_WRITE_ENV: str(crash_after_write)} if crash_after_write else env
        options = ["--metrics-port", str(metrics_port)] if metrics_port else []
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "voiceloop.cli", "worker", "--model", str(checkpoint), "--group", group,
                 "--data-dir", str(data_dir), *options], stdout=out, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.process.pid} still runs after {timeout_s:g} s:\n"
                                 f"{self.log()[-3000:]}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class Cluster:
    """Everything one test's workers share: topics (by prefix), group, catalog, data dir, checkpoint."""

    def __init__(self, tmp_path: Path, catalog_url: str, bootstrap: str) -> None:
        self.tmp, self.catalog_url, self.bootstrap = tmp_path, catalog_url, bootstrap
        self.prefix, self.group = unique("r") + ".", unique("g")
        self.topics = ensure_topics(bootstrap, prefix=self.prefix)
        self.checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
        stored_rows(catalog_url)  # creates and migrates the catalog before several workers open it
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VOICELOOP_")} | {
            "VOICELOOP_CATALOG_URL": catalog_url, "VOICELOOP_KAFKA_BOOTSTRAP": bootstrap,
            "VOICELOOP_KAFKA_TOPIC_PREFIX": self.prefix, "VOICELOOP_KAFKA_MAX_BATCH": "4",
            "COLUMNS": "200"}  # rich wraps log lines at the terminal width
        self.producer = make_producer(bootstrap)
        self.acked: list[str] = []
        self.workers: list[Worker] = []

    def start(self, crash_after_write: int = 0, metrics_port: int | None = None) -> Worker:
        worker = Worker(self.env, self.tmp / f"worker-{len(self.workers)}.log", self.checkpoint, self.group,
                        self.tmp / "data", crash_after_write, metrics_port)
        self.workers.append(worker)
        return worker

    def send(self, n: int) -> None:
        """``n`` more utterances, each acknowledged by the broker before the next is sent."""
        for _ in range(n):
            sid = f"utt-{len(self.acked):03d}"
            send_utterance(self.producer, sid, f"spk-{len(self.acked) % 5}", utterance_pcm(0.3, len(self.acked)),
                           chunk_bytes=3200, topic=self.topics.audio, flush=True)
            self.acked.append(sid)

    def rows(self) -> set[str]:
        return set(stored_rows(self.catalog_url))

    def wait_rows(self, at_least: int, timeout_s: float = START_S) -> None:
        try:
            wait_for(lambda: len(self.rows()) >= at_least, timeout_s, f"{at_least} stored rows")
        except AssertionError as e:
            raise AssertionError(f"{e} (have {len(self.rows())})\n{self.logs()}") from None

    def check_everything_arrived_once(self) -> None:
        assert self.rows() == set(self.acked)  # a primary key per request id: one row each, none extra
        read_topic(self.bootstrap, self.topics.transcripts,
                   lambda records: {r.key.decode() for r in records} >= set(self.acked), timeout_s=30)
        ends = topic_ends(self.bootstrap, self.topics.audio)
        assert {p: o or 0 for p, o in committed(self.bootstrap, self.group, self.topics.audio).items()} == ends

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.producer.close(timeout=5)

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name} (rc {w.process.returncode})\n{w.log()[-2000:]}" for w in self.workers)


@pytest.fixture
def cluster(tmp_path: Path, catalog_url: str, kafka_bootstrap: str):
    c = Cluster(tmp_path, catalog_url, kafka_bootstrap)
    try:
        yield c
    finally:
        c.close()


def test_killed_workers_lose_nothing_and_store_nothing_twice(cluster: Cluster) -> None:
    cluster.send(16)

    # dies right after writing its first batch of 4, before committing it
    assert cluster.start(crash_after_write=1).wait(START_S) == 137, cluster.logs()
    assert len(cluster.rows()) >= 4

    # re-reads that batch (an upsert, not a second row), commits it, writes the next, dies again
    assert cluster.start(crash_after_write=2).wait(START_S) == 137, cluster.logs()
    assert len(cluster.rows()) >= 8

    # SIGKILL from outside while utterances keep arriving
    third = cluster.start()
    cluster.wait_rows(12)
    cluster.send(8)
    third.kill()

    last = cluster.start()
    cluster.send(4)
    cluster.wait_rows(len(cluster.acked))
    last.process.send_signal(signal.SIGTERM)
    assert last.wait(30) == 0, cluster.logs()
    cluster.check_everything_arrived_once()
    # the crashes really re-delivered: some results went out twice, yet each utterance has one row
    assert sum(topic_ends(cluster.bootstrap, cluster.topics.transcripts).values()) > len(cluster.acked)


def test_a_dead_workers_partitions_move_to_the_survivor(cluster: Cluster) -> None:
    metrics_port = free_port()
    first, second = cluster.start(), cluster.start(metrics_port=metrics_port)
    try:
        wait_for(lambda: _owned(first) | _owned(second) == set(range(4)) and not _owned(first) & _owned(second),
                 START_S, "both workers sharing the four partitions")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{cluster.logs()}") from None
    assert _owned(first) and _owned(second)
    cluster.send(12)
    cluster.wait_rows(4)
    first.kill()  # SIGKILL: no goodbye to the group; its partitions move once its session times out
    cluster.send(8)
    cluster.wait_rows(len(cluster.acked))
    assert _owned(second) == set(range(4))
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        exposed = response.read().decode()
    utterances = re.search(r"^voiceloop_kafka_utterances_total (\S+)$", exposed, re.M)
    assert utterances and float(utterances.group(1)) > 0
    lag = re.findall(r'^voiceloop_kafka_consumer_lag\{partition="(\d)",topic="r-[^"]+"\} (\S+)$', exposed, re.M)
    assert lag and all(float(value) == 0 for _, value in lag)  # caught up (partitions fetched since assignment)
    second.process.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, cluster.logs()
    cluster.check_everything_arrived_once()


def _owned(worker: Worker) -> set[int]:
    """The partitions of the worker's latest assignment, from its log."""
    found = re.findall(r"partitions assigned: ([\d, ]+|none)", worker.log())
    return {int(p) for p in found[-1].split(",") if p.strip().isdigit()} if found else set()
