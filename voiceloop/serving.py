"""Glue shared by `voiceloop serve` and `voiceloop worker`: which models to serve, from the settings."""

from __future__ import annotations

import torch

from serving.model_manager import ModelManager
from voiceloop.settings import Settings


def model_manager_for(settings: Settings) -> ModelManager:
    """A local checkpoint when ``model_path`` is set, else the registry's aliases (polled for hot swaps).

    From the registry, ``shadow``/``canary_share`` are the defaults: the rollout tags the ``deploy`` DAG writes
    on the registered model (``serving.rollout``) override them on every poll, so a release moves every API
    replica and Kafka worker without a restart."""
    torch.set_num_threads(settings.inference_threads)
    if settings.model_path is not None:
        return ModelManager.from_path(str(settings.model_path), decoder=settings.decoder)
    from voiceloop.pipeline import connect_mlflow

    connect_mlflow(settings)
    return ModelManager.from_registry(settings.model_name, decoder=settings.decoder, shadow=settings.shadow,
                                      canary_share=settings.canary_share, poll_s=settings.model_poll_seconds)
