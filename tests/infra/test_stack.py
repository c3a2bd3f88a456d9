"""`voiceloop stack`: the broker starts in the background, answers, survives a second `up`, and stops.

The MLflow server is left out here (a cold `mlflow server` takes tens of seconds); it goes through the same
start/wait/stop code with another command and readiness check.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra import stack
from voiceloop.cli import app
from voiceloop.settings import Settings


@pytest.fixture
def settings(tmp_path: Path):
    s = Settings(data_dir=tmp_path)
    try:
        stack.tansu_binary()
    except stack.StackError as e:
        pytest.skip(str(e))
    yield s
    stack.down(s, grace_s=5)


def test_up_status_up_again_down(settings: Settings) -> None:
    port = stack.free_port()
    first = stack.up(settings, {"kafka": port}, ("kafka",))
    kafka = first["kafka"]
    assert kafka.running and kafka.state.url == f"127.0.0.1:{port}"
    assert stack.kafka_answers(kafka.state.url)
    assert Path(kafka.state.log).is_file() and (settings.data_dir / "stack" / "state.json").is_file()

    again = stack.up(settings, {"kafka": port}, ("kafka",))["kafka"]
    assert again.state.pid == kafka.state.pid  # harmless: the running broker is kept

    result = CliRunner().invoke(app, ["stack", "status", "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0 and "kafka: running" in result.output and "mlflow: stopped" in result.output

    assert stack.down(settings) == ["kafka"]
    assert not stack.process_alive(kafka.state.pid) and not stack.port_open(port)
    assert not stack.status(settings)["kafka"].running
    assert stack.down(settings) == []


def test_a_port_in_use_is_refused_with_the_option_to_change(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(stack.StackError, match="--kafka-port"):
            stack.up(settings, {"kafka": taken.getsockname()[1]}, ("kafka",))
    assert not stack.status(settings)["kafka"].running


def test_a_dead_service_is_reported_and_restarted(settings: Settings) -> None:
    port = stack.free_port()
    pid = stack.up(settings, {"kafka": port}, ("kafka",))["kafka"].state.pid
    stack.stop_process(pid)
    status = stack.status(settings)["kafka"]
    assert not status.running and "is gone" in status.problem
    result = CliRunner().invoke(app, ["stack", "status", "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 1
    assert stack.up(settings, {"kafka": port}, ("kafka",))["kafka"].running
