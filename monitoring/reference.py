"""The reference profile of the inputs a model was trained on, and PSI/KS of production against it.

Decision (see docs/monitoring.md): the reference is measured once per champion from the **training split
of the manifest it was trained on** (the run's ``dataset.root`` parameter), with the same functions serving
uses (``serving.recognition.input_features``): duration, speech level, SNR, and speaking rate (from the
reviewed transcript here, from the hypothesis in production).
It is a small JSON file, ``<data dir>/monitoring/reference/<name>_<version>.json``: per feature the decile
edges of the training values and the training share in each bin. Production values are then binned by
those edges in the database (``SUM(CASE WHEN x < edge …)``), so the drift job never reads rows into Python.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# feature name -> ProductionUtterance column holding it
FEATURES: dict[str, str] = {"duration": "duration_s", "speech_dbfs": "speech_dbfs", "snr_db": "snr_db",
                            "speech_rate": "speech_rate"}
BINS = 10
# A bin empty on one side would make PSI infinite; the usual floor for a share.
MIN_SHARE = 1e-4


@dataclass(frozen=True)
class FeatureProfile:
    """``edges``: ascending inner bin edges (bin i holds ``edges[i-1] <= x < edges[i]``);
    ``shares``: the reference's share in each of the ``len(edges) + 1`` bins; ``mean`` in the feature's unit."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    n: int
    mean: float

    @classmethod
    def of(cls, values: Sequence[float], bins: int = BINS) -> FeatureProfile:
        v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
        if not len(v):
            raise ValueError("no values to build a reference profile from")
        edges = np.unique(np.round(np.quantile(v, np.arange(1, bins) / bins), 6))
        counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
        return cls(tuple(float(e) for e in edges), tuple(round(float(c) / len(v), 6) for c in counts),
                   int(len(v)), round(float(v.mean()), 4))


def bin_counts(cumulative: Sequence[float], total: float) -> np.ndarray:
    """Bin counts from ``cumulative[k]`` = values below ``edges[k]`` and ``total`` values (what SQL returns)."""
    cum = np.asarray([0.0, *cumulative, total], dtype=float)
    return np.diff(cum)


def psi(reference_shares: Sequence[float], counts: Sequence[float]) -> float | None:
    """Population stability index of ``counts`` (per bin) against the reference shares; None without data.
    Rules of thumb: < 0.1 stable, 0.1–0.2 moderate shift, > 0.2 large shift."""
    counts = np.asarray(counts, dtype=float)
    if counts.sum() <= 0:
        return None
    expected = np.maximum(np.asarray(reference_shares, dtype=float), MIN_SHARE)
    actual = np.maximum(counts / counts.sum(), MIN_SHARE)
    return round(float(np.sum((actual - expected) * np.log(actual / expected))), 4)


def ks_binned(reference_shares: Sequence[float], counts: Sequence[float]) -> float | None:
    """Kolmogorov–Smirnov distance evaluated at the bin edges (a lower bound of the exact statistic,
    exact when the distributions cross only at edges); None without data."""
    counts = np.asarray(counts, dtype=float)
    if counts.sum() <= 0:
        return None
    diff = np.cumsum(counts / counts.sum()) - np.cumsum(np.asarray(reference_shares, dtype=float))
    return round(float(np.max(np.abs(diff))), 4)


@dataclass(frozen=True)
class ReferenceProfile:
    model_version: str
    source: str  # what was measured (a manifest directory)
    source_hash: str  # its manifest hash, so a changed data set is noticed
    features: dict[str, FeatureProfile] = field(default_factory=dict)
    created_at: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> ReferenceProfile:
        feats = {name: FeatureProfile(tuple(f["edges"]), tuple(f["shares"]), int(f["n"]), float(f["mean"]))
                 for name, f in d["features"].items()}
        return cls(d["model_version"], d["source"], d["source_hash"], feats, d.get("created_at", ""))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a reference profile ({e}); delete it to measure again") from e


def build_reference(values: Mapping[str, Sequence[float]], model_version: str, source: str = "",
                    source_hash: str = "") -> ReferenceProfile:
    """A profile from raw feature values (``values[feature]``; feature names from :data:`FEATURES`)."""
    unknown = set(values) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}; valid: {', '.join(FEATURES)}")
    feats = {name: FeatureProfile.of(v) for name, v in values.items() if any(x is not None for x in v)}
    return ReferenceProfile(model_version, source, source_hash, feats, datetime.now(UTC).isoformat(timespec="seconds"))


def measure_split(split_dir: str | Path, language: str) -> dict[str, list[float]]:
    """Feature values of every utterance of a manifest split (reads each audio file once)."""
    from asr.audio import SAMPLE_RATE, load_audio
    from asr.text import get_language_pack
    from collection.manifest import load_split
    from serving.recognition import input_features  # the measurement serving stores per request

    normalize = get_language_pack(language).normalize
    out: dict[str, list[float]] = {name: [] for name in FEATURES}
    for utt in load_split(split_dir):
        wav = load_audio(utt.audio_path)
        f = input_features(wav, utt.text, normalize)
        for name, value in (("duration", len(wav) / SAMPLE_RATE), ("speech_dbfs", f.speech_dbfs),
                            ("snr_db", f.snr_db), ("speech_rate", f.speech_rate)):
            if value is not None:
                out[name].append(value)
    return out


def reference_from_split(split_dir: str | Path, model_version: str, language: str) -> ReferenceProfile:
    from collection.manifest import manifest_hash

    return build_reference(measure_split(split_dir, language), model_version, str(Path(split_dir).resolve()),
                           manifest_hash(split_dir))


def reference_path(data_dir: str | Path, model_version: str) -> Path:
    """Where the profile of ``model_version`` (``name/version``) is kept under the data dir."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_version)
    return Path(data_dir) / "monitoring" / "reference" / f"{safe}.json"


def champion_reference(model_name: str, data_dir: str | Path, language: str,
                       train_split: str = "train") -> ReferenceProfile | None:
    """The champion's profile: loaded from the data dir, or measured from the training split of the
    manifest its training run names (``dataset.root``) and saved. None (with a warning) when there is no
    champion or its training data is not reachable from here. MLflow must be configured."""
    from mlflow import MlflowClient

    from asr.registry import alias_version

    version = alias_version(model_name, "champion")
    if version is None:
        log.warning("no %s@champion in the registry: no input-drift reference", model_name)
        return None
    label = f"{model_name}/{version}"
    path = reference_path(data_dir, label)
    if path.exists():
        return ReferenceProfile.load(path)
    client = MlflowClient()
    run_id = client.get_model_version(model_name, version).run_id
    root = client.get_run(run_id).data.params.get("dataset.root") if run_id else None
    split_dir = Path(root) / train_split if root else None
    if split_dir is None or not split_dir.is_dir():
        log.warning("%s: training data %s is not reachable; no input-drift reference", label,
                    split_dir or "(the run names no dataset.root)")
        return None
    log.info("measuring the input reference of %s from %s", label, split_dir)
    profile = reference_from_split(split_dir, label, language)
    profile.save(path)
    return profile
