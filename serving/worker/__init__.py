"""Kafka streaming inference (asr.audio → asr.transcripts, malformed input → asr.audio.dlq)."""


def run_worker(settings, models, *, group: str = "voiceloop-asr", metrics_port: int | None = None) -> None:  # noqa: ANN001
    raise NotImplementedError("being built")
