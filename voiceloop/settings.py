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

    # -- VOC (monitoring/voc.py; docs/monitoring.md "VOC") --
    # POST /v1/feedback has its own token bucket per device (a person complains a few times, not 5/s).
    feedback_rate_per_minute: float = 6.0
    feedback_burst: int = 3
    voc_link_window_minutes: float = 10.0  # an ops complaint links the device's utterances within ± this
    voc_low_confidence: float = 0.6  # triage cause low_confidence below this (the labeling queue's threshold)
    voc_low_snr_db: float = 10.0  # triage cause low_snr below this estimated SNR
    voc_endpoint_min_seconds: float = 1.0  # a stream the endpointer ended this short was likely cut off

    # -- drift and alerts (monitoring/drift.py, alerts.py; docs/monitoring.md "Drift and alerts") --
    drift_window_s: int = 3600  # one traffic window (voiceloop monitor drift --window)
    drift_labeled_window_s: int = 7 * 86400  # human transcripts are few: online WER over the last 7 days
    drift_reference_window_s: int = 7 * 86400  # previous windows that define the confidence/VOC/traffic refs
    drift_baseline_splits: list[str] = ["test_seen", "test_unseen", "test_heldout"]  # offline WER, n-weighted
    drift_bootstrap_draws: int = 1000
    alert_wer_margin: float = 0.02  # online WER/CER this far above the offline baseline (and CI low above it)
    alert_min_labeled: int = 30  # transcribed utterances a slice needs before its WER can alert
    alert_psi_threshold: float = 0.2
    alert_min_traffic: int = 200  # utterances a slice needs before PSI or confidence can alert
    alert_confidence_drop: float = 0.05
    alert_voc_spike_factor: float = 2.0  # complaints per 1,000 at this multiple of the previous windows'
    alert_voc_min_count: int = 5
    alert_voc_per_1k_max: float = 20.0  # the spike threshold while there is no history
    alert_no_traffic_min_expected: float = 50.0  # utterances per window a slice averaged before going silent
    catalog_metrics_ttl_s: float = 30.0  # /metrics re-reads drift results and alerts at most this often

    # -- the loop (voiceloop/loop.py, dags/; docs/loop.md) --
    data_plan: str = "demo"  # the plan collect_and_label fills (a name in collection/dataplans or <data>/plans)
    # read by the DAG files when Airflow parses them (voiceloop.orchestration), from VOICELOOP_* in its env
    dag_schedules: bool = True  # False: DAGs run only when triggered or by Asset events (the loop demo)
    dag_retry_delay_s: int = 60  # a failed task's next try waits this long
    loop_min_new_labels: int = 50  # reviewed recordings not yet in a dataset version before a new one is frozen
    loop_train_config: str = "baseline"  # asr/configs/<name>.yaml (or a path): the first model, from scratch
    loop_finetune_config: str | None = "finetune"  # with a champion: fine-tune it (None: always from scratch)
    loop_train_minutes: float | None = None  # training budget per retrain (None: the config's)
    loop_recollect_per_cell: int = 4  # utterances a re-collection plan asks for per cell of a weak slice
    gate_min_gain: float = 0.0  # overall CER must fall by more than this (0.005 = half a point)
    gate_slice_margin: float = 0.01  # a slice regresses when its CER rises by more than this, CI above 0
    gate_min_slice_n: int = 20  # slices with fewer evaluation utterances are shown, not judged
    gate_latency_budget: float = 1.25  # challenger p95 latency at most this × the champion's
    gate_min_latency_n: int = 100  # live p95 latencies over fewer timings are shown, not judged
    gate_size_budget: float = 1.5  # challenger checkpoint at most this × the champion's
    # -- release on live traffic (serving/rollout.py, the deploy DAG; docs/serving.md "Rollout") --
    rollout_canary_share: float = 0.2  # share of requests the challenger answers during the canary step
    rollout_min_utterances: int = 200  # requests each model must decode in a step before it is judged
    rollout_min_labeled: int = 50  # of them with reviewed transcripts (on the smaller side)
    rollout_error_margin: float = 0.005  # the challenger's error share may exceed the champion's by this
    rollout_max_wait_s: int = 2 * 86400  # a step without enough traffic by then fails (and rolls back)
    rollout_poke_s: int = 300  # how often the deploy DAG looks at the traffic of a step

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
