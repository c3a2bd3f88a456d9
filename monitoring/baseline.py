"""The offline yardstick for online WER: a model version's evaluation per slice, as MLflow holds it.

``voiceloop.pipeline.evaluate_splits`` logs ``<split>.wer``, ``<split>.cer``, ``<split>.exact_match`` and,
per slice, ``<split>.<metric>.<key>.<value>`` with ``<split>.n.<key>.<value>`` (utterances) into the
training run of the version (or an ``eval-<name>/<version>`` run tagged ``stage=eval``). A baseline
combines the configured test splits, weighting each split's rate by its utterance count: commands are
short and similar in length, so this is close to the pooled corpus rate, and it lets the held-out dialect
and age slices (only in ``test_heldout``) sit beside the standard ones (``test_seen``/``test_unseen``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .slices import ALL, eval_slice

log = logging.getLogger(__name__)

METRICS = ("wer", "cer", "exact_match")
DEFAULT_SPLITS = ("test_seen", "test_unseen", "test_heldout")


@dataclass(frozen=True)
class Baseline:
    """``rates[metric][(eval_key, eval_value)] = (rate, utterances)``; ``(all, all)`` is the whole test set."""

    model_version: str
    splits: tuple[str, ...]
    rates: dict[str, dict[tuple[str, str], tuple[float, int]]] = field(default_factory=dict)

    def get(self, metric: str, slice_key: str, slice_value: str) -> tuple[float, int] | None:
        """(offline rate, utterances) for a *production* slice, or None when the evaluation has none."""
        target = eval_slice(slice_key, slice_value)
        return None if target is None else self.rates.get(metric, {}).get(target)

    @classmethod
    def from_flat_metrics(cls, model_version: str, metrics: Mapping[str, float],
                          splits: Iterable[str] = DEFAULT_SPLITS) -> Baseline:
        """From MLflow-style flat metrics (``EvalReport.flat_metrics`` prefixed with ``<split>.``); splits
        missing from ``metrics`` are skipped."""
        sums: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
        used = []
        for split in splits:
            if f"{split}.wer" not in metrics:
                continue
            used.append(split)
            counts = _slice_counts(metrics, split)
            # A split's size: its utterances summed over the values of any one slice key.
            per_key: dict[str, float] = defaultdict(float)
            for (key, _), n in counts.items():
                per_key[key] += n
            total = int(max(per_key.values(), default=0))
            for metric in METRICS:
                if f"{split}.{metric}" in metrics and total:
                    acc = sums[metric][(ALL, ALL)]
                    acc[0] += metrics[f"{split}.{metric}"] * total
                    acc[1] += total
                for (key, value), n in counts.items():
                    rate = metrics.get(f"{split}.{metric}.{key}.{value}")
                    if rate is not None and n:
                        acc = sums[metric][(key, value)]
                        acc[0] += rate * n
                        acc[1] += int(n)
        rates = {m: {s: (round(a / n, 4), int(n)) for s, (a, n) in vals.items() if n} for m, vals in sums.items()}
        return cls(model_version, tuple(used), rates)


def _slice_counts(metrics: Mapping[str, float], split: str) -> dict[tuple[str, str], float]:
    prefix = f"{split}.n."
    out = {}
    for name, n in metrics.items():
        if name.startswith(prefix):
            key, _, value = name[len(prefix):].partition(".")
            out[(key, value)] = n
    return out


BaselineSource = Callable[[str], "Baseline | None"]


def as_source(baselines: Mapping[str, Baseline] | BaselineSource | None) -> BaselineSource:
    """A lookup ``model version label -> Baseline | None`` (``""``: the champion, for all traffic)."""
    if baselines is None:
        return lambda _version: None
    if isinstance(baselines, Mapping):
        return baselines.get
    return baselines


class MlflowBaselines:
    """Baselines read from the MLflow registry of ``model_name`` (call ``asr.registry.configure`` first).

    ``source("voiceloop-asr/3")`` is version 3's evaluation; ``source("")`` the champion's. Versions of
    other models, local checkpoints and versions never evaluated give None. Each version is read once.
    """

    def __init__(self, model_name: str, splits: Iterable[str] = DEFAULT_SPLITS):
        self.model_name, self.splits = model_name, tuple(splits)
        self._cache: dict[str, Baseline | None] = {}

    def __call__(self, version_label: str) -> Baseline | None:
        if version_label not in self._cache:
            self._cache[version_label] = self._load(version_label)
        return self._cache[version_label]

    def _load(self, version_label: str) -> Baseline | None:
        from asr.registry import alias_version

        if version_label == "":
            version = alias_version(self.model_name, "champion")
            if version is None:
                log.warning("no %s@champion in the registry: online WER has no offline baseline", self.model_name)
                return None
            version_label = f"{self.model_name}/{version}"
        name, _, version = version_label.rpartition("/")
        if name != self.model_name or not version.isdigit():
            return None
        metrics = evaluation_metrics(name, version)
        baseline = Baseline.from_flat_metrics(version_label, metrics, self.splits)
        if not baseline.splits:
            log.warning("%s has no evaluation of %s in MLflow: no offline baseline", version_label,
                        ", ".join(self.splits))
            return None
        return baseline


def evaluation_metrics(model_name: str, version: str) -> dict[str, float]:
    """The evaluation metrics of a registered version: its training run's, else those of its newest
    ``eval-<name>/<version>`` run (what ``evaluate_splits`` writes without a run id)."""
    import mlflow
    from mlflow import MlflowClient

    from asr.registry import EXPERIMENT

    client = MlflowClient()
    try:
        mv = client.get_model_version(model_name, version)
    except mlflow.exceptions.MlflowException:
        return {}
    metrics = dict(client.get_run(mv.run_id).data.metrics) if mv.run_id else {}
    if any(k.endswith(".wer") for k in metrics):
        return metrics
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return metrics
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1,
                              filter_string=f"tags.stage = 'eval' and attributes.run_name = "
                                            f"'eval-{model_name}/{version}'")
    return dict(runs[0].data.metrics) if runs else metrics
