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

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return self.data_dir / "mlartifacts"

    def with_data_dir(self, data_dir: Path | None) -> Settings:
        return self if data_dir is None else self.model_copy(update={"data_dir": data_dir})


@lru_cache
def get_settings() -> Settings:
    return Settings()
