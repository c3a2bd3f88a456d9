"""Deployment settings shared by every voiceloop command, read from ``VOICELOOP_*`` env vars or ``.env``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOICELOOP_", env_file=".env", extra="ignore")

    data_dir: Path = Path("data")
    # Defaults to a SQLite store under data_dir; production points this at an MLflow server.
    mlflow_uri: str | None = None
    model_name: str = "voiceloop-asr"
    language: str = "ko"
    # Catalog DB (SQLAlchemy URL) and audio store (fsspec URL); both default under data_dir.
    catalog_url: str | None = None
    audio_store_url: str | None = None
    # "development" allows the built-in secret key; anything else refuses to start without one.
    environment: str = "development"
    secret_key: str | None = None
    # Keys the digests deletion requests leave behind (so erased people stay out of re-imports). Never
    # rotate it: a new key forgets every earlier erasure. Defaults to the session secret.
    erasure_key: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    # Share of label tasks transcribed twice (agreement = CER between the two transcripts).
    double_label_share: float = 0.2

    # -- serving (voiceloop serve / worker) --
    # A local checkpoint instead of models:/<model_name>@champion (no hot swap then).
    model_path: Path | None = None
    decoder: str = "greedy"
    grammar: str = "ko_commands"
    model_poll_seconds: float = 10.0
    shadow: bool = False  # run @challenger on a copy of traffic, store its results, never return them
    canary_share: float = 0.0  # share of requests answered by @challenger
    device_rate_per_second: float = 5.0
    device_burst: int = 20
    max_command_seconds: float = 15.0
    endpoint_silence_seconds: float = 0.6
    max_stream_seconds: float = 10.0
    inference_threads: int = 1  # torch threads per process; scale with processes/replicas instead
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = ""  # <prefix>asr.audio …: several deployments (or test runs) on one cluster
    kafka_max_batch: int = 8  # utterances the worker decodes together
    kafka_max_wait_ms: int = 20  # how long a complete utterance waits for others to fill a batch
    kafka_fetch_max_wait_ms: int = 20  # broker-side fetch wait; kafka-python's 500 ms would delay end markers

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return self.data_dir / "mlartifacts"

    @property
    def catalog(self) -> str:
        return self.catalog_url or f"sqlite:///{(self.data_dir / 'catalog.db').resolve()}"

    @property
    def audio_store(self) -> str:
        return self.audio_store_url or str((self.data_dir / "audio-store").resolve())

    @property
    def session_secret(self) -> str:
        if self.secret_key:
            return self.secret_key
        if self.environment != "development":
            raise ValueError("VOICELOOP_SECRET_KEY must be set outside development "
                             f"(VOICELOOP_ENVIRONMENT={self.environment!r})")
        return "voiceloop-development-only-secret"

    @property
    def erasure_secret(self) -> str:
        return self.erasure_key or self.session_secret

    def with_data_dir(self, data_dir: Path | None) -> Settings:
        return self if data_dir is None else self.model_copy(update={"data_dir": data_dir})


@lru_cache
def get_settings() -> Settings:
    return Settings()
