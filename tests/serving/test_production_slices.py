"""Production slices on a real catalog: device owner profiles (admin API, CLI, simulator) and what serving
records with every request (slice snapshot, input features, grammar, how a stream ended)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from _device_helpers import add_device, auth, device_app, pcm16, stream_until_final, tone_wav
from fastapi.testclient import TestClient

from collection.db import connect
from collection.models import Device, ProductionUtterance
from collection.qc import speech_levels
from collection.users import create_user
from serving.devices import DeviceError, check_profile, register_device, set_device_profile
from serving.recognition import Utterance
from serving.simulator import register_sim_devices, studio_commands

PASSWORD = "correct-horse-battery"
WAV = {"content-type": "audio/wav"}


@pytest.fixture
def api(tmp_path, catalog_url):
    with connect(catalog_url)() as s:
        create_user(s, "boss", "admin", PASSWORD)
        s.commit()
    with TestClient(device_app(tmp_path, catalog_url)) as client:
        token = client.post("/api/token", data={"username": "boss", "password": PASSWORD}).json()["access_token"]
        yield client, catalog_url, {"authorization": f"Bearer {token}"}


def row(url: str, request_id: str) -> ProductionUtterance:
    with connect(url)() as s:
        return s.get(ProductionUtterance, request_id)


def test_profiles_are_checked_against_the_plan_vocabularies(catalog):
    with catalog() as s:
        register_device(s, "d1", profile={"region": "gyeongsang", "age_band": "70s+", "environment": "far_field"})
        with pytest.raises(DeviceError, match=r"region 'busan' is not one of \['standard', 'gyeongsang'"):
            register_device(s, "d2", profile={"region": "busan"})
        with pytest.raises(DeviceError, match=r"unknown profile field\(s\) \['mood'\]"):
            check_profile({"mood": "happy"})
        assert s.get(Device, "d2") is None  # refused: nothing registered
        device = set_device_profile(s, "d1", {"age_band": "60s", "environment": ""})  # "" clears
        assert (device.region, device.age_band, device.environment) == ("gyeongsang", "60s", None)
        with pytest.raises(DeviceError, match="no device 'nope'"):
            set_device_profile(s, "nope", {"age_band": "60s"})


def test_admin_routes_register_and_update_a_profile(api):
    client, url, admin = api
    r = client.post("/v1/admin/devices", json={"device_id": "sp-1", "device_type": "speaker-mini",
                                               "region": "jeolla", "age_band": "60s"}, headers=admin)
    assert r.status_code == 201, r.text
    bad = client.post("/v1/admin/devices", json={"device_id": "sp-2", "age_band": "teen"}, headers=admin)
    assert bad.status_code == 422 and "'20s'" in bad.json()["detail"]  # names the valid bands
    patched = client.patch("/v1/admin/devices/sp-1/profile", json={"environment": "tv"}, headers=admin)
    assert patched.json() == {"device_id": "sp-1", "device_type": "speaker-mini", "region": "jeolla",
                              "age_band": "60s", "environment": "tv"}  # fields left out stay
    cleared = client.patch("/v1/admin/devices/sp-1/profile", json={"region": None}, headers=admin).json()
    assert cleared["region"] is None and cleared["age_band"] == "60s"
    assert client.patch("/v1/admin/devices/nope/profile", json={}, headers=admin).status_code == 404
    assert client.patch("/v1/admin/devices/sp-1/profile", json={"environment": "garage"},
                        headers=admin).status_code == 422


def test_every_request_records_its_slice_and_input_features(api):
    client, url, _ = api
    key = add_device(url, "sp-1", "speaker-mini")
    with connect(url)() as s:
        set_device_profile(s, "sp-1", {"region": "gyeongsang", "age_band": "70s+", "environment": "kitchen"})
        s.commit()
    audio = tone_wav(1.0, quiet_s=0.3)
    r = client.post("/v1/recognize", content=audio, headers={**auth(key), **WAV}).json()
    first = row(url, r["request_id"])
    assert (first.dialect, first.age_band, first.environment, first.device_type) == (
        "gyeongsang", "70s+", "kitchen", "speaker-mini")
    wav, _ = sf.read(io.BytesIO(audio), dtype="float32")
    level, snr = speech_levels(wav)  # the one measurement QC uses
    assert first.speech_dbfs == pytest.approx(level, abs=0.01) and first.snr_db == pytest.approx(snr, abs=0.01)
    assert first.snr_db > 20 and first.speech_rate is not None and first.speech_rate >= 0
    assert first.in_grammar is (r["command"] is not None) and first.ended_by is None
    assert first.hypothesis is None  # no consent: the text is not kept, the numbers are

    with connect(url)() as s:  # the owner moves: new requests get the new slice, old ones keep theirs
        set_device_profile(s, "sp-1", {"region": "standard", "environment": None})
        s.commit()
    second = client.post("/v1/recognize", content=audio, headers={**auth(key), **WAV}).json()["request_id"]
    assert (row(url, second).dialect, row(url, second).environment) == ("standard", None)
    assert row(url, r["request_id"]).dialect == "gyeongsang"

    service = client.app.state.recognition  # a device the catalog does not know (a Kafka message, say)
    ghost = service.recognize(Utterance(wav, "ghost-1", "req-ghost"), channel="kafka")
    kept = row(url, ghost.request_id)
    assert (kept.dialect, kept.age_band, kept.environment, kept.device_type) == (None, None, None, None)
    assert kept.snr_db is not None and kept.ended_by is None


def test_streams_record_what_ended_them(tmp_path, catalog_url):
    with TestClient(device_app(tmp_path, catalog_url, max_stream_seconds=2.0)) as client:
        key = add_device(catalog_url)
        wav, _ = sf.read(io.BytesIO(tone_wav(0.5)), dtype="float32")
        with client.websocket_connect("/v1/stream", headers=auth(key)) as ws:
            ws.send_json({"type": "start", "request_id": "ws-client"})
            ws.send_bytes(pcm16(wav))
            ws.receive_json()
            ws.send_json({"type": "end"})
            assert ws.receive_json()["ended_by"] == "client"
        with client.websocket_connect("/v1/stream", headers=auth(key)) as ws:
            ws.send_json({"type": "start", "request_id": "ws-endpoint"})
            final = stream_until_final(ws, np.concatenate([wav, np.zeros(16000, np.float32)]))
            assert final["ended_by"] == "endpoint"
        long_tone, _ = sf.read(io.BytesIO(tone_wav(3.0)), dtype="float32")
        with client.websocket_connect("/v1/stream", headers=auth(key)) as ws:
            ws.send_json({"type": "start", "request_id": "ws-cut"})
            assert stream_until_final(ws, long_tone)["ended_by"] == "max_duration"  # the device protocol's word
    assert [row(catalog_url, rid).ended_by for rid in ("ws-client", "ws-endpoint", "ws-cut")] == [
        "client", "endpoint", "max_seconds"]  # the catalog's


def test_device_cli_takes_and_changes_a_profile(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from voiceloop.cli import app

    for var in ("VOICELOOP_CATALOG_URL", "VOICELOOP_AUDIO_STORE_URL"):
        monkeypatch.delenv(var, raising=False)
    runner, data = CliRunner(), ["--data-dir", str(tmp_path)]
    added = runner.invoke(app, ["device", "add", "tv-7", "--region", "chungcheong", "--age-band", "60s", *data])
    assert added.exit_code == 0, added.output
    changed = runner.invoke(app, ["device", "profile", "tv-7", "--environment", "tv", "--age-band", "", *data])
    assert changed.exit_code == 0 and "region=chungcheong, age_band=-, environment=tv" in changed.output
    bad = runner.invoke(app, ["device", "profile", "tv-7", "--region", "mars", *data])
    assert bad.exit_code == 1 and "not one of" in bad.output


def test_simulated_fleets_have_owner_profiles_and_matching_speakers(tmp_path, catalog_url, tiny_studio):
    fleet = register_sim_devices(catalog_url, 3, prefix="sim-old", consent_share=1.0, human_review=True,
                                 profiles=[{"region": "gyeongsang"}, {"age_band": "70s+"}])
    assert [d.profile for d in fleet] == [{"region": "gyeongsang"}, {"age_band": "70s+"}, {"region": "gyeongsang"}]
    with connect(catalog_url)() as s:
        assert [s.get(Device, d.device_id).region for d in fleet] == ["gyeongsang", None, "gyeongsang"]
    again = register_sim_devices(catalog_url, 1, prefix="sim-old", profiles=[{"region": "jeolla"}])  # a rerun
    with connect(catalog_url)() as s:
        assert s.get(Device, again[0].device_id).region == "jeolla"

    dialect = studio_commands("tiny", tmp_path, 3, extra_dirs=[tiny_studio], speaker={"dialect": "gyeongsang"})
    older = studio_commands("tiny", tmp_path, 3, extra_dirs=[tiny_studio], speaker={"age_band": ("60s", "70s+")})
    assert {c.dialect for c in dialect} == {"gyeongsang"} and {c.age_band for c in older} == {"70s+"}
    with pytest.raises(ValueError, match="no utterance of a speaker matching"):
        studio_commands("tiny", tmp_path, 1, extra_dirs=[tiny_studio], speaker={"dialect": "jeolla"})
    with pytest.raises(ValueError, match="unknown speaker filter key"):
        studio_commands("tiny", tmp_path, 1, extra_dirs=[tiny_studio], speaker={"gender": "male"})
