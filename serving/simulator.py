"""Simulated devices: studio commands spoken to the service over HTTP, the WebSocket and Kafka, every answer checked.

    devices = register_sim_devices(settings.catalog, 4, consent_share=0.5)   # sim-0001 … (keys rotated on rerun)
    commands = studio_commands("tiny", data_dir, 40)                          # eSpeak audio + transcripts
    older = register_sim_devices(url, 2, prefix="sim-old", profiles=[{"region": "gyeongsang", "age_band": "70s+"}])
    spoken = studio_commands("tiny", data_dir, 10, speaker={"dialect": "gyeongsang", "age_band": ("60s", "70s+")})
    summary = run_simulation(SimulationConfig(via=("http", "ws")), devices, commands)
    summary.table()                                                          # per channel: latency, WER/CER, …

Utterance i comes from device i mod n (round robin over the fleet); each round over the fleet uses
the next channel of ``via``, so every device speaks over every channel in turn. Without a rate, every
device speaks its next command once the last one was answered (a household does not talk over its
speaker); with ``rate`` (utterances/s overall) arrivals follow a fixed schedule whether or not earlier
ones were answered (open loop), so a slow service builds a queue instead of slowing the load down.
What a channel counts as latency:

- ``http``: request sent → response read (the whole WAV in one POST /v1/recognize);
- ``ws``: end marker sent → final received (100 ms PCM16 chunks paced in real time before it); with
  ``send_end=False`` digital silence follows the utterance until the server's endpointer ends the
  stream, timed from the chunk holding the last loud 10 ms frame (the endpoint silence is included);
- ``kafka``: the utterance (``send_utterance``: all chunks and the end message at once, as a gateway
  forwarding a finished recording would) acknowledged by ``asr.audio`` → its result read from
  ``asr.transcripts``.

An answer counts only when it is a final result for the same request id (and, on Kafka, the same
device); anything else — an HTTP error, a WebSocket error message, a close, a timeout — is an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from rich.table import Table

from collection.store import stable_fraction

log = logging.getLogger(__name__)

CHANNEL_NAMES = ("http", "ws", "kafka")
DEVICE_PREFIX = "sim"
STUDIO_DIRS = ("studio", "synthetic")  # under the data dir: where `make demo` / `voiceloop synth` render
CONSENT_TEXT = "device-sim-v1"
FETCH_MAX_WAIT_MS = 20  # the result consumer's fetch wait (latency of reading asr.transcripts)


# -- inputs --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpokenCommand:
    """One studio utterance. ``wav``: the PCM16 WAV file bytes (16 kHz mono); ``pcm16``: its samples."""

    id: str
    text: str
    command: dict[str, Any]
    wav: bytes
    pcm16: bytes
    split: str
    environment: str
    dialect: str = "standard"  # the studio speaker's
    age_band: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.pcm16) / 2 / 16000


@dataclass(frozen=True)
class SimDevice:
    device_id: str
    key: str
    consented: bool
    profile: dict[str, str | None] = field(default_factory=dict)  # the owner's region / age_band / environment


#: what a studio speaker filter may name, and how it reads a studio utterance
SPEAKER_KEYS: dict[str, Callable[[Any], str]] = {"dialect": lambda s: s.persona.dialect,
                                                 "age_band": lambda s: s.persona.age_band,
                                                 "environment": lambda s: s.environment}


def _speaker_filter(speaker: dict[str, str | Sequence[str]] | None) -> Callable[[Any], bool]:
    """A predicate over studio utterance specs: every key matches (a value or any of several)."""
    if not speaker:
        return lambda spec: True
    unknown = sorted(set(speaker) - set(SPEAKER_KEYS))
    if unknown:
        raise ValueError(f"unknown speaker filter key(s) {unknown}; valid: {list(SPEAKER_KEYS)}")
    wanted = {k: {v} if isinstance(v, str) else set(v) for k, v in speaker.items()}
    return lambda spec: all(SPEAKER_KEYS[k](spec) in values for k, values in wanted.items())


def _load_wav(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    samples, rate = sf.read(path, dtype="int16")
    if rate != 16000 or samples.ndim != 1:
        raise ValueError(f"{path}: studio audio must be 16 kHz mono, got {rate} Hz with shape {samples.shape}")
    return data, samples.astype("<i2").tobytes()


def studio_commands(plan: str, data_dir: Path, count: int, *, seed: int = 0, extra_dirs: Sequence[Path] = (),
                    min_s: float = 0.0, max_s: float = float("inf"),
                    speaker: dict[str, str | Sequence[str]] | None = None) -> list[SpokenCommand]:
    """``count`` utterances of the studio ``plan`` (drawn across all its splits, repeated when the plan has
    fewer), keeping only those between ``min_s`` and ``max_s`` seconds long and, with ``speaker``, only
    those whose studio speaker matches it: ``{"dialect": "gyeongsang"}``, ``{"age_band": ("60s", "70s+")}``,
    ``{"environment": "tv"}`` (keys :data:`SPEAKER_KEYS`; a value or several) — traffic to pair with
    devices whose owner profile says the same.

    Audio is looked up by recording id (the id hashes everything that shapes the audio, so a file with
    the id is that audio) in ``extra_dirs``, ``<data_dir>/studio``, ``<data_dir>/synthetic`` and the cache
    ``<data_dir>/simulator/<plan>``; what is missing is rendered with eSpeak into the cache, so a rerun
    renders nothing.
    """
    from collection.studio import load_plan, plan_utterances
    from collection.studio.synth import render_utterance, write_wav

    p = load_plan(plan)
    if p.sample_rate != 16000:
        raise ValueError(f"plan {p.name!r} renders at {p.sample_rate} Hz; devices send 16 kHz")
    matches = _speaker_filter(speaker)
    everything = [s for split in plan_utterances(p).values() for s in split]
    specs = sorted((s for s in everything if matches(s)), key=lambda s: s.recording_id)
    if not specs:
        have = {k: sorted({read(s) for s in everything}) for k, read in SPEAKER_KEYS.items()}
        raise ValueError(f"plan {p.name!r} has no utterance of a speaker matching {speaker}; it has {have}")
    order = np.random.default_rng(seed).permutation(len(specs))
    cache = data_dir / "simulator" / p.name / "audio"
    places = [Path(d) / "audio" for d in extra_dirs] + [data_dir / d / "audio" for d in STUDIO_DIRS] + [cache]
    chosen: list[SpokenCommand] = []
    for i in order:
        spec = specs[i]
        path = next((d / f"{spec.recording_id}.wav" for d in places if (d / f"{spec.recording_id}.wav").exists()),
                    None)
        if path is None:
            cache.mkdir(parents=True, exist_ok=True)
            path = cache / f"{spec.recording_id}.wav"
            write_wav(path, render_utterance(spec), p.sample_rate)
        wav, pcm = _load_wav(path)
        cmd = SpokenCommand(spec.recording_id, spec.sentence.text, dict(spec.sentence.command), wav, pcm,
                            spec.split, spec.environment, spec.persona.dialect, spec.persona.age_band)
        if min_s <= cmd.duration_s <= max_s:
            chosen.append(cmd)
            if len(chosen) == count:
                break
    if not chosen:
        raise ValueError(f"plan {p.name!r} has no utterance between {min_s} and {max_s} s")
    return [chosen[i % len(chosen)] for i in range(count)]


def register_sim_devices(catalog_url: str, count: int, *, consent_share: float = 0.0,
                         prefix: str = DEVICE_PREFIX, profiles: Sequence[dict[str, str | None]] = (),
                         human_review: bool = False) -> list[SimDevice]:
    """Devices ``<prefix>-0001`` … in the catalog, each with a usable key: new ones are registered, ones
    left by an earlier run get a new key at once (their old keys stop). ``consent_share`` of them (spread
    over the fleet) get an owner's consent to keep audio for training (and, with ``human_review``, to have
    people listen to it: what VOC labeling needs); the others have none (not revoked: a device that never
    consented simply has no consent). ``profiles``: owner profiles (region / age_band / environment) dealt
    round robin over the fleet (device i gets ``profiles[i % len]``); a rerun sets them again."""
    from collection.consent import grant_device_consent
    from collection.db import session_scope
    from serving.devices import DeviceError, check_profile, register_device, rotate_key, set_device_profile

    if not 0.0 <= consent_share <= 1.0:
        raise ValueError(f"consent_share must be within [0, 1], got {consent_share}")
    devices = []
    with session_scope(catalog_url) as session:
        for i in range(count):
            device_id = f"{prefix}-{i + 1:04d}"
            profile = check_profile(profiles[i % len(profiles)]) if profiles else {}
            try:
                issued = register_device(session, device_id, "speaker", actor="simulator", profile=profile)
            except DeviceError as e:
                if e.code != "conflict":
                    raise
                issued = rotate_key(session, device_id, overlap=timedelta(0), actor="simulator")
                set_device_profile(session, device_id, profile, actor="simulator")
            consented = int((i + 1) * consent_share) > int(i * consent_share)
            if consented:
                grant_device_consent(session, device_id=device_id, text_version=CONSENT_TEXT, scope_training=True,
                                     scope_human_review=human_review, retention_days=30, actor="simulator")
            devices.append(SimDevice(device_id, issued.key, consented, profile))
    return devices


# -- channels ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulationConfig:
    url: str = "http://127.0.0.1:8000"
    via: tuple[str, ...] = ("http", "ws")
    rate: float | None = None  # utterances/s overall (open loop); None: each device waits for its answer
    poisson: bool = False  # with ``rate``: exponential gaps instead of even spacing
    chunk_ms: int = 100
    pace: float = 1.0  # 1 = stream in real time; 0 = send chunks as fast as possible
    send_end: bool = True  # False: let the server's endpointer end WebSocket streams (silence is appended)
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = ""
    timeout_s: float = 30.0
    seed: int = 0
    # share of wrong answers (the command is not what was said) the owner complains about: POST /v1/feedback
    complain_share: float = 0.0
    # add ±1 LSB of dither per request: a replayed studio utterance becomes new audio, as every real request
    # is (otherwise QC keeps only the first copy and the rest of the fleet's audio is never kept or labelled)
    dither: bool = False

    def __post_init__(self) -> None:
        bad = [c for c in self.via if c not in CHANNEL_NAMES]
        if bad or not self.via:
            raise ValueError(f"unknown channel(s) {bad or 'none'}; valid: {', '.join(CHANNEL_NAMES)}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0 utterances/s, got {self.rate}")
        if not 0.0 <= self.complain_share <= 1.0:
            raise ValueError(f"complain_share must be within [0, 1], got {self.complain_share}")


class SimulationError(RuntimeError):
    """The server answered, but not with a final result for this request (or not in time)."""


@dataclass
class Outcome:
    channel: str
    device_id: str
    request_id: str
    utterance_id: str
    reference: str
    expected_command: dict[str, Any]
    sent_at: float  # seconds since the simulation started (the scheduled start in open loop)
    answer: dict[str, Any] | None = None
    latency_ms: float | None = None
    error: str | None = None
    complaint: str | None = None  # the feedback id when the owner complained about a wrong answer

    @property
    def ok(self) -> bool:
        return self.answer is not None


def _check(answer: dict[str, Any], request_id: str) -> dict[str, Any]:
    if answer.get("request_id") != request_id:
        raise SimulationError(f"answer for request {answer.get('request_id')!r}, expected {request_id!r}")
    return answer


def speech_end_offset(pcm16: bytes, speech_dbfs: float = -40.0) -> int:
    """Byte offset just after the last 10 ms frame louder than ``speech_dbfs`` (the server endpointer's
    threshold): where the speaker stopped, as the endpointer hears it."""
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64) / 32768.0
    n = len(samples) // 160
    frames = samples[: n * 160].reshape(n, 160)
    loud = np.flatnonzero(10 * np.log10(np.mean(frames**2, axis=1) + 1e-12) > speech_dbfs)
    return int((loud[-1] + 1) * 160 * 2) if len(loud) else len(pcm16)


class HttpChannel:
    """POST /v1/recognize with the WAV file as the body."""

    name = "http"

    def __init__(self, config: SimulationConfig) -> None:
        import httpx

        # Idle connections are dropped before uvicorn's 5 s keep-alive closes them: at equal timeouts a
        # request could go out on a connection the server was closing (httpx.ReadError; seen in the demo).
        self.client = httpx.AsyncClient(base_url=config.url, timeout=config.timeout_s, trust_env=False,
                                        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64,
                                                            keepalive_expiry=2.0))

    async def start(self) -> None:
        pass

    async def recognize(self, device: SimDevice, cmd: SpokenCommand, request_id: str) -> tuple[dict, float]:
        headers = {"authorization": f"Bearer {device.key}", "content-type": "audio/wav", "x-request-id": request_id}
        started = time.perf_counter()
        r = await self.client.post("/v1/recognize", content=cmd.wav, headers=headers)
        latency = time.perf_counter() - started
        if r.status_code != 200:
            raise SimulationError(f"HTTP {r.status_code}: {r.text[:200]}")
        return _check(r.json(), request_id), latency

    async def close(self) -> None:
        await self.client.aclose()


class WsChannel:
    """WS /v1/stream: a start message with the request id, PCM16 chunks paced in real time, the end marker."""

    name = "ws"

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.url = config.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/")

    async def start(self) -> None:
        pass

    async def recognize(self, device: SimDevice, cmd: SpokenCommand, request_id: str) -> tuple[dict, float]:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        cfg = self.config
        step = 16000 * 2 * cfg.chunk_ms // 1000
        if cfg.send_end:
            audio, speech_end = cmd.pcm16, len(cmd.pcm16)
        else:  # digital silence after the utterance until the endpointer answers; timed from the end of speech
            audio, speech_end = cmd.pcm16 + bytes(int(16000 * 2 * cfg.timeout_s)), speech_end_offset(cmd.pcm16)
        final: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        async with connect(f"{self.url}/v1/stream", additional_headers={"authorization": f"Bearer {device.key}"},
                           proxy=None, compression=None, open_timeout=cfg.timeout_s) as ws:

            async def receive() -> None:
                try:
                    async for message in ws:
                        reply = json.loads(message)
                        if reply.get("type") == "final":
                            return _settle(final, reply, None)
                        if reply.get("type") == "error":
                            return _settle(final, None, SimulationError(f"stream error: {reply.get('detail')}"))
                    _settle(final, None, SimulationError(f"stream closed without a final ({ws.close_code})"))
                except (ConnectionClosed, ValueError) as e:
                    _settle(final, None, SimulationError(f"stream broke off without a final ({e})"))

            receiver = asyncio.create_task(receive())
            try:
                await ws.send(json.dumps({"type": "start", "request_id": request_id}))
                t0 = time.perf_counter()
                speech_sent = t0
                for k, offset in enumerate(range(0, len(audio), step)):
                    if final.done():
                        break  # the endpointer ended the stream
                    due = t0 + k * cfg.chunk_ms / 1000 * cfg.pace
                    if (wait := due - time.perf_counter()) > 0:
                        await asyncio.sleep(wait)
                    try:
                        await ws.send(audio[offset:offset + step])
                    except ConnectionClosed:
                        break
                    if offset < speech_end:
                        speech_sent = time.perf_counter()
                ended = speech_sent
                if cfg.send_end and not final.done():
                    try:
                        await ws.send(json.dumps({"type": "end"}))
                        ended = time.perf_counter()
                    except ConnectionClosed:
                        pass
                reply = await asyncio.wait_for(final, cfg.timeout_s)
                latency = time.perf_counter() - ended
            finally:
                receiver.cancel()
        return _check(reply, request_id), latency

    async def close(self) -> None:
        pass


class KafkaChannel:
    """The utterance's chunks and end marker to ``asr.audio``; the answer from ``asr.transcripts``."""

    name = "kafka"

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.producer = None
        self.topics = None

    async def start(self) -> None:
        from serving.worker.client import ensure_topics, make_producer, transcripts_consumer

        bootstrap = self.config.kafka_bootstrap
        self.topics = await asyncio.to_thread(ensure_topics, bootstrap, prefix=self.config.kafka_topic_prefix)
        self.producer = await asyncio.to_thread(make_producer, bootstrap)
        # No group: every partition, from the oldest result on (earlier results are simply not waited for).
        # A short fetch wait: with kafka-python's 500 ms default a result waited ~140 ms more on tansu.
        consumer = await asyncio.to_thread(transcripts_consumer, bootstrap, topic=self.topics.transcripts,
                                           fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                           enable_auto_commit=False)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._consume, args=(consumer, ready), daemon=True,
                                        name="sim-transcripts")
        self._thread.start()
        if not await asyncio.to_thread(ready.wait, self.config.timeout_s):
            raise SimulationError(f"no partitions of {self.topics.transcripts} assigned within "
                                  f"{self.config.timeout_s} s")

    def _consume(self, consumer, ready: threading.Event) -> None:  # noqa: ANN001 - a kafka-python consumer
        try:
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=100)
                if consumer.assignment():
                    ready.set()
                received = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        self._deliver(record.key, record.value, received)
        finally:
            consumer.close()

    def _deliver(self, key: str | None, value: Any, received: float) -> None:
        with self._lock:
            waiter = self._waiting.pop(key or "", None)
        if waiter is None:
            return  # another client's result, or a redelivered one
        loop, future = waiter
        if not isinstance(value, dict):
            loop.call_soon_threadsafe(_settle, future, None, SimulationError(f"result is not a JSON object: {value!r}"))
        else:
            loop.call_soon_threadsafe(_settle, future, (value, received), None)

    async def recognize(self, device: SimDevice, cmd: SpokenCommand, request_id: str) -> tuple[dict, float]:
        from serving.worker.client import send_utterance

        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            self._waiting[request_id] = (loop, future)

        def send() -> float:
            send_utterance(self.producer, request_id, device.device_id, cmd.pcm16, topic=self.topics.audio,
                           flush=True, timeout_s=self.config.timeout_s)
            return time.perf_counter()

        try:
            ended = await asyncio.to_thread(send)
            value, received = await asyncio.wait_for(future, self.config.timeout_s)
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
        if value.get("device_id") != device.device_id:
            raise SimulationError(f"result names device {value.get('device_id')!r}, expected {device.device_id!r}")
        return _check(value, request_id), received - ended

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        if self.producer is not None:
            await asyncio.to_thread(self.producer.close, 5)


def _settle(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


CHANNELS: dict[str, Callable[[SimulationConfig], Any]] = {"http": HttpChannel, "ws": WsChannel, "kafka": KafkaChannel}


# -- results -------------------------------------------------------------------------------------------------
def dithered(cmd: SpokenCommand, request_id: str) -> SpokenCommand:
    """``cmd`` with ±1 LSB of noise seeded by ``request_id``: inaudible, but new bytes (a new recording)."""
    import hashlib
    import io

    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "little"))
    samples = np.frombuffer(cmd.pcm16, dtype="<i2").astype(np.int32)
    samples = np.clip(samples + rng.integers(-1, 2, size=samples.size), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="WAV", subtype="PCM_16")
    return replace(cmd, wav=buf.getvalue(), pcm16=samples.tobytes())


def command_matches(parsed: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
    """Whether the parsed command is the one the speaker said (intent, device, room, action, value)."""
    if not parsed:
        return False
    return all(parsed.get(k) == expected.get(k) for k in ("intent", "device", "room", "action", "value"))


@dataclass
class ChannelSummary:
    channel: str
    sent: int
    answered: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    commands_parsed: int
    commands_right: int
    wer: float | None
    cer: float | None
    complaints: int = 0


def _percentile(xs: Sequence[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def summarize_channel(channel: str, outcomes: Sequence[Outcome], language: str = "ko") -> ChannelSummary:
    from asr.evaluate import score
    from asr.text import get_language_pack

    normalize = get_language_pack(language).normalize
    done = [o for o in outcomes if o.ok]
    latencies = [o.latency_ms for o in done if o.latency_ms is not None]
    wer = cer = None
    if done:
        report = score([normalize(o.reference) for o in done], [normalize(o.answer.get("text") or "") for o in done],
                       [{} for _ in done])
        wer, cer = report.overall.wer, report.overall.cer
    return ChannelSummary(
        channel, len(outcomes), len(done), len(outcomes) - len(done), _percentile(latencies, 50),
        _percentile(latencies, 95), max(latencies) if latencies else None,
        sum(1 for o in done if o.answer.get("command")),
        sum(1 for o in done if command_matches(o.answer.get("command"), o.expected_command)), wer, cer,
        sum(1 for o in done if o.complaint))


@dataclass
class SimulationSummary:
    config: SimulationConfig
    channels: dict[str, ChannelSummary]
    outcomes: list[Outcome] = field(repr=False)
    wall_s: float

    @property
    def errors(self) -> int:
        return sum(c.errors for c in self.channels.values())

    def table(self, title: str = "simulated devices") -> Table:
        def ms(x: float | None) -> str:
            return "–" if x is None else f"{x:.0f}"

        def pct(x: float | None) -> str:
            return "–" if x is None else f"{100 * x:.1f} %"

        t = Table("channel", "sent", "answered", "errors", "p50 ms", "p95 ms", "max ms", "cmd parsed",
                  "cmd right", "WER", "CER", "complaints", title=title)
        for c in self.channels.values():
            t.add_row(c.channel, str(c.sent), str(c.answered), f"[red]{c.errors}[/]" if c.errors else "0",
                      ms(c.p50_ms), ms(c.p95_ms), ms(c.max_ms), str(c.commands_parsed), str(c.commands_right),
                      pct(c.wer), pct(c.cer), str(c.complaints))
        return t

    def first_errors(self, n: int = 5) -> list[str]:
        return [f"{o.channel} {o.request_id}: {o.error}" for o in self.outcomes if o.error][:n]

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "wall_s": round(self.wall_s, 2),
                "channels": {k: asdict(v) for k, v in self.channels.items()},
                "outcomes": [{k: v for k, v in asdict(o).items()} for o in self.outcomes]}


# -- running -------------------------------------------------------------------------------------------------
def arrival_offsets(n: int, rate: float, poisson: bool = False, seed: int = 0) -> np.ndarray:
    """Start times (seconds from 0) of ``n`` arrivals at ``rate`` per second: evenly spaced, or a Poisson
    process (exponential gaps) with the same mean."""
    if poisson:
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
        return np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
    return np.arange(n) / rate


def channel_of(i: int, devices: int, via: Sequence[str]) -> str:
    """The channel of utterance ``i``: a round over all devices uses one channel, the next round the next,
    so every device speaks over every channel in turn."""
    return via[(i // devices) % len(via)]


async def _simulate(config: SimulationConfig, devices: Sequence[SimDevice], commands: Sequence[SpokenCommand],
                    on_done: Callable[[Outcome], None]) -> list[Outcome]:
    channels = {name: CHANNELS[name](config) for name in config.via}
    run = secrets.token_hex(3)
    jobs = []
    for i, cmd in enumerate(commands):
        device, name = devices[i % len(devices)], channel_of(i, len(devices), config.via)
        jobs.append((channels[name], device, cmd, f"{device.device_id}-{run}-{i + 1:05d}"))
    outcomes: list[Outcome] = []
    feedback = HttpChannel(config) if config.complain_share else None  # complaints go over HTTP from any channel
    try:
        for channel in channels.values():
            await channel.start()
        t0 = time.perf_counter()

        async def one(channel, device: SimDevice, cmd: SpokenCommand, request_id: str,  # noqa: ANN001
                      due: float | None = None) -> None:
            if due is not None and (wait := t0 + due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            o = Outcome(channel.name, device.device_id, request_id, cmd.id, cmd.text, cmd.command,
                        round(due if due is not None else time.perf_counter() - t0, 4))
            if config.dither:
                cmd = dithered(cmd, request_id)
            try:
                o.answer, latency = await channel.recognize(device, cmd, request_id)
                o.latency_ms = latency * 1000
            except Exception as e:  # an error is a result here: counted and shown, never raised
                o.error = f"{type(e).__name__}: {e}"[:300]
            if o.ok and config.complain_share and not command_matches(o.answer.get("command"), cmd.command) \
                    and stable_fraction("complain", request_id) < config.complain_share:
                o.complaint = await complain(feedback, device, request_id)
            outcomes.append(o)
            on_done(o)

        if config.rate is not None:
            offsets = arrival_offsets(len(jobs), config.rate, config.poisson, config.seed)
            await asyncio.gather(*(one(*job, due=float(d)) for job, d in zip(jobs, offsets, strict=True)))
        else:
            async def speak(device_id: str) -> None:
                for job in jobs:
                    if job[1].device_id == device_id:
                        await one(*job)

            await asyncio.gather(*(speak(d.device_id) for d in devices))
    finally:
        for channel in channels.values():
            await channel.close()
        if feedback is not None:
            await feedback.close()
    return outcomes


async def complain(channel: HttpChannel | None, device: SimDevice, request_id: str) -> str | None:
    """The owner says "that's not what I said": POST /v1/feedback. The feedback id, or None when refused
    (the device's feedback rate limit, say): complaints are best effort, like people."""
    import httpx

    if channel is None:
        return None
    try:
        r = await channel.client.post("/v1/feedback", json={"request_id": request_id, "category": "misrecognized",
                                                             "text": "그게 아니라니까요"},
                                      headers={"authorization": f"Bearer {device.key}"})
    except httpx.HTTPError as e:  # a lost complaint is not a failed simulation
        log.warning("complaint about %s not delivered: %s", request_id, type(e).__name__)
        return None
    if r.status_code not in (200, 201):
        log.info("complaint about %s refused: HTTP %d %s", request_id, r.status_code, r.text[:120])
        return None
    return r.json().get("feedback_id")


def run_simulation(config: SimulationConfig, devices: Sequence[SimDevice], commands: Sequence[SpokenCommand], *,
                   language: str = "ko", progress: bool = False) -> SimulationSummary:
    """Send every command once (device and channel round robin) and wait for every answer or its timeout."""
    if not devices:
        raise ValueError("no devices to simulate")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    per_channel = {name: sum(1 for i in range(len(commands)) if channel_of(i, len(devices), config.via) == name)
                   for name in config.via}
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("[red]{task.fields[errors]} errors"), TimeElapsedColumn(), disable=not progress)
    tasks = {name: bar.add_task(name, total=n, errors=0) for name, n in per_channel.items()}
    errors = dict.fromkeys(per_channel, 0)

    def on_done(o: Outcome) -> None:
        errors[o.channel] += 0 if o.ok else 1
        bar.update(tasks[o.channel], advance=1, errors=errors[o.channel])
        if o.error:
            log.warning("%s %s: %s", o.channel, o.request_id, o.error)

    started = time.perf_counter()
    with bar:
        outcomes = asyncio.run(_simulate(config, devices, commands, on_done))
    wall = time.perf_counter() - started
    outcomes.sort(key=lambda o: o.request_id)
    summaries = {name: summarize_channel(name, [o for o in outcomes if o.channel == name], language)
                 for name in config.via}
    return SimulationSummary(config, summaries, outcomes, wall)


def what_was_said(catalog_url: str, outcomes: Sequence[Outcome]) -> dict[str, str]:
    """recording id → the text the simulated speaker said, for the answered requests whose audio the
    service kept (under the owner's consent): what a simulated person hears when labeling production
    audio (``voiceloop.collect.simulated_labeling(heard=...)``)."""
    from sqlalchemy import select

    from collection.db import session_scope
    from collection.models import ProductionUtterance

    said = {o.request_id: o.reference for o in outcomes if o.ok}
    out: dict[str, str] = {}
    with session_scope(catalog_url) as session:
        ids = list(said)
        for i in range(0, len(ids), 500):
            for rid, rec in session.execute(select(ProductionUtterance.request_id, ProductionUtterance.recording_id)
                                            .where(ProductionUtterance.request_id.in_(ids[i:i + 500]),
                                                   ProductionUtterance.recording_id.is_not(None))):
                out[rec] = said[rid]
    return out


def latency_stats(values_ms: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean of a list of milliseconds (None when empty): shared by the serving benchmarks."""
    if not values_ms:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    return {"n": len(values_ms), "p50": _percentile(values_ms, 50), "p95": _percentile(values_ms, 95),
            "p99": _percentile(values_ms, 99), "max": max(values_ms), "mean": statistics.fmean(values_ms)}
