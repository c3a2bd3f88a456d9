"""voiceloop's speech-recognition core: audio, text, models, streaming, decoding, training, evaluation.

    from asr import Recognizer, load_audio
    rec = Recognizer.load("data/runs/baseline/model.pt", decoder="beam")
    print(rec.transcribe(load_audio("command.wav")).text)

MLflow access (``asr.registry``) is imported on demand: it costs ~120 MB and serving a local
checkpoint does not need it.
"""

from .audio import SAMPLE_RATE, AudioError, load_audio
from .backends import BACKENDS, LoadedModel, build_model, load_checkpoint, save_checkpoint
from .decoding import BeamSearchDecoder, Hypothesis, greedy_decode
from .evaluate import EvalReport, evaluate, score
from .inference import Recognizer
from .lm import NgramLM
from .text import get_language_pack, make_tokenizer
from .train import TrainConfig, TrainResult, load_train_config, train

__all__ = [
    "BACKENDS",
    "SAMPLE_RATE",
    "AudioError",
    "BeamSearchDecoder",
    "EvalReport",
    "Hypothesis",
    "LoadedModel",
    "NgramLM",
    "Recognizer",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "evaluate",
    "get_language_pack",
    "greedy_decode",
    "load_audio",
    "load_checkpoint",
    "load_train_config",
    "make_tokenizer",
    "save_checkpoint",
    "score",
    "train",
]
