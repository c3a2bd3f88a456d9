"""Prometheus metrics shared by every voiceloop service (API, Kafka worker), in the default registry.

Each process exposes them at ``/metrics`` (the API) or on its own port (the worker's
``--metrics-port``). Label values stay low-cardinality: routes are templates (``/v1/recognize``),
model versions are registry versions, never request or device ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets around the 250 ms p99 target of a 2-second command.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter("voiceloop_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
HTTP_LATENCY = Histogram("voiceloop_http_request_seconds", "HTTP request handling time", ["route", "method"],
                         buckets=LATENCY_BUCKETS)
RECOGNITIONS = Counter("voiceloop_recognitions_total", "Utterances recognised",
                       ["channel", "model_version", "route"])
RECOGNITION_LATENCY = Histogram("voiceloop_recognition_seconds", "Decode time per utterance (audio in → text)",
                                ["channel", "model_version"], buckets=LATENCY_BUCKETS)
REAL_TIME_FACTOR = Histogram("voiceloop_real_time_factor", "Decode time / audio duration",
                             ["channel", "model_version"],
                             buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
CONFIDENCE = Histogram("voiceloop_confidence", "Confidence of served hypotheses", ["channel", "model_version"],
                       buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0))
OUT_OF_GRAMMAR = Counter("voiceloop_out_of_grammar_total", "Hypotheses that parse to no command", ["channel"])
ENDPOINT_TRUNCATIONS = Counter("voiceloop_endpoint_truncations_total",
                               "Streams cut at the maximum duration before the speaker stopped", ["channel"])
INPUT_REJECTED = Counter("voiceloop_input_rejected_total", "Requests refused for their audio", ["channel", "reason"])
RATE_LIMITED = Counter("voiceloop_rate_limited_total", "Requests refused by a device's rate limit")
AUTH_FAILURES = Counter("voiceloop_auth_failures_total", "Requests with a missing, wrong, expired or revoked key")
MODEL_INFO = Gauge("voiceloop_model_info", "1 for the model version serving each alias", ["alias", "version"])
MODEL_SWAPS = Counter("voiceloop_model_swaps_total", "Hot swaps after an alias moved", ["alias"])
SHADOW_RESULTS = Counter("voiceloop_shadow_total", "Shadow decodes by the challenger", ["outcome"])
KAFKA_CONSUMED = Counter("voiceloop_kafka_messages_total", "asr.audio messages consumed", ["outcome"])
KAFKA_UTTERANCES = Counter("voiceloop_kafka_utterances_total", "Utterances transcribed by the worker")
KAFKA_BATCH = Histogram("voiceloop_kafka_batch_size", "Utterances per micro-batch",
                        buckets=(1, 2, 4, 8, 16, 32, 64))
KAFKA_LAG = Gauge("voiceloop_kafka_consumer_lag", "Messages behind the end of each assigned partition",
                  ["topic", "partition"])


def set_model_info(alias: str, version: str) -> None:
    """Exactly one version per alias reads 1 (the info-metric convention)."""
    for labels in list(MODEL_INFO._metrics):  # noqa: SLF001 - prometheus_client has no public "children"
        if labels[0] == alias:
            MODEL_INFO.remove(*labels)
    MODEL_INFO.labels(alias, version).set(1)


# -- VOC (monitoring/voc.py) --
# One increment per slice key for each complaint (slice_key "all" too), so a rate per dialect or per age
# band is one selector: sum by (slice_value) (rate(voiceloop_voc_total{slice_key="dialect"}[1h])).
# Values are the profile vocabularies (a handful each) or "unknown"; never device ids.
VOC_RECEIVED = Counter("voiceloop_voc_total", "Complaints (VOC) taken in, by category and slice",
                       ["source", "category", "slice_key", "slice_value"])
