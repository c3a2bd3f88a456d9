"""The device simulator against the real app served by uvicorn (a thread, a free port) on a real catalog:
studio commands over HTTP and the WebSocket, every one answered, recorded and scored."""

from __future__ import annotations

import pytest
from _device_helpers import device_app
from sqlalchemy import select

from collection.db import connect
from collection.models import Consent, ProductionUtterance
from serving.api.background import serve_in_thread
from serving.devices import authenticate_device
from serving.simulator import SimulationConfig, register_sim_devices, run_simulation, studio_commands, what_was_said


@pytest.fixture
def server(tmp_path, catalog_url):
    """Base URL of the device API (tiny checkpoint) under uvicorn."""
    app = device_app(tmp_path, catalog_url, device_rate_per_second=1000.0, device_burst=1000)
    with serve_in_thread(app) as url:
        yield url


def test_http_and_ws_answer_every_utterance(server, tmp_path, catalog_url, tiny_studio):
    commands = studio_commands("tiny", tmp_path, 8, extra_dirs=[tiny_studio])
    assert not (tmp_path / "simulator").exists()  # the studio's audio was reused, nothing rendered
    assert len({c.id for c in commands}) == 8 and all(c.text and c.command for c in commands)
    devices = register_sim_devices(catalog_url, 2, consent_share=0.5)
    assert [(d.device_id, d.consented) for d in devices] == [("sim-0001", False), ("sim-0002", True)]

    summary = run_simulation(SimulationConfig(url=server, via=("http", "ws"), timeout_s=20), devices, commands)

    assert summary.first_errors() == []
    for channel in ("http", "ws"):
        c = summary.channels[channel]
        assert (c.sent, c.answered, c.errors) == (4, 4, 0)
        assert c.p50_ms is not None and c.p95_ms >= c.p50_ms
        assert c.wer is not None and c.cer is not None  # a tiny untrained model: the numbers mean nothing
    assert {o.answer["request_id"] for o in summary.outcomes} == {o.request_id for o in summary.outcomes}
    with connect(catalog_url)() as session:
        rows = {r.request_id: r for r in session.scalars(select(ProductionUtterance))}
        consents = session.scalars(select(Consent).where(Consent.subject_type == "device")).all()
    assert {o.request_id: (o.device_id, o.channel) for o in summary.outcomes} == {
        rid: (r.device_id, r.channel) for rid, r in rows.items()}
    assert [c.subject_id for c in consents] == ["sim-0002"]
    assert [o.answer["ended_by"] for o in summary.outcomes if o.channel == "ws"] == ["client"] * 4


def test_rerun_rotates_keys_and_endpointing_ends_streams(server, tmp_path, catalog_url, tiny_studio):
    first = register_sim_devices(catalog_url, 1)
    again = register_sim_devices(catalog_url, 1)  # a rerun: same device, a new key, the old one stops
    with connect(catalog_url)() as session:
        assert authenticate_device(session, first[0].key) is None
        assert authenticate_device(session, again[0].key).id == "sim-0001"

    quiet = [c for c in studio_commands("tiny", tmp_path, 40, extra_dirs=[tiny_studio]) if c.environment == "quiet"]
    config = SimulationConfig(url=server, via=("ws",), send_end=False, timeout_s=20)
    summary = run_simulation(config, again, quiet[:2])

    assert summary.first_errors() == []
    assert [o.answer["ended_by"] for o in summary.outcomes] == ["endpoint", "endpoint"]


def test_kafka_answers_every_utterance(tmp_path, catalog_url, kafka_bootstrap, tiny_studio):
    """Through a real broker and a real worker (a thread here; `voiceloop worker` runs the same loop)."""
    from _device_helpers import tiny_checkpoint

    from serving.model_manager import ModelManager
    from serving.worker import worker_in_thread
    from voiceloop.settings import Settings

    prefix = f"sim-{tmp_path.name}-"
    settings = Settings(data_dir=tmp_path, catalog_url=catalog_url, kafka_bootstrap=kafka_bootstrap,
                        kafka_topic_prefix=prefix)
    models = ModelManager.from_path(str(tiny_checkpoint(tmp_path / "tiny.pt")))
    devices = register_sim_devices(catalog_url, 2)
    with worker_in_thread(settings, models, group=prefix):
        config = SimulationConfig(via=("kafka",), kafka_bootstrap=kafka_bootstrap, kafka_topic_prefix=prefix,
                                  timeout_s=60)
        summary = run_simulation(config, devices, studio_commands("tiny", tmp_path, 4, extra_dirs=[tiny_studio]))

    assert summary.first_errors() == []
    assert (summary.channels["kafka"].sent, summary.channels["kafka"].answered) == (4, 4)
    with connect(catalog_url)() as session:
        rows = {r.request_id: (r.device_id, r.channel) for r in session.scalars(select(ProductionUtterance))}
    assert rows == {o.request_id: (o.device_id, "kafka") for o in summary.outcomes}


def test_owners_complain_about_wrong_answers(server, tmp_path, catalog_url, tiny_studio):
    from collection.models import Feedback

    commands = studio_commands("tiny", tmp_path, 4, extra_dirs=[tiny_studio])
    devices = register_sim_devices(catalog_url, 2, consent_share=1.0)
    config = SimulationConfig(url=server, via=("http", "ws"), timeout_s=20, complain_share=1.0)
    summary = run_simulation(config, devices, commands)
    # a tiny untrained model gets every command wrong: every owner complains (within the feedback limit)
    complained = {o.request_id: o.complaint for o in summary.outcomes if o.complaint}
    assert len(complained) == 4 and sum(c.complaints for c in summary.channels.values()) == 4
    with connect(catalog_url)() as session:
        stored = {f.request_id: f.id for f in session.scalars(select(Feedback))}
    assert stored == complained
    # what the speakers said, keyed by the audio the service kept: the simulated people's ears
    heard = what_was_said(catalog_url, summary.outcomes)
    with connect(catalog_url)() as session:
        kept = dict(session.execute(select(ProductionUtterance.recording_id, ProductionUtterance.request_id)
                                    .where(ProductionUtterance.recording_id.is_not(None))).all())
    said = {o.request_id: o.reference for o in summary.outcomes}
    assert len(heard) == 4 and heard == {rec: said[rid] for rec, rid in kept.items()}
    with pytest.raises(ValueError, match="complain_share"):
        SimulationConfig(complain_share=2.0)


def test_dither_makes_each_request_new_audio(tiny_studio, tmp_path):
    import numpy as np

    from serving.simulator import dithered

    (cmd,) = studio_commands("tiny", tmp_path, 1, extra_dirs=[tiny_studio])
    a, b = dithered(cmd, "req-1"), dithered(cmd, "req-2")
    assert a.wav != cmd.wav and a.wav != b.wav and dithered(cmd, "req-1") == a  # new bytes, same per request
    diff = np.frombuffer(a.pcm16, "<i2").astype(int) - np.frombuffer(cmd.pcm16, "<i2").astype(int)
    assert len(a.pcm16) == len(cmd.pcm16) and np.abs(diff).max() <= 1  # inaudible
