"""Training data in memory: prepared inputs for every utterance × speed factor, and length-bucketed batches.

On a 2-core machine the front end (resampling for speed perturbation, log-mel) would cost as much
as the model itself if recomputed every epoch, so each utterance is prepared once per speed factor
up front; SpecAugment, which is cheap, runs per batch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from rich.progress import track

from .audio import load_audio, trim_silence
from .features import speed_perturb
from .text import Tokenizer

if TYPE_CHECKING:  # the manifest types only; asr does not need collection at run time
    from collection.manifest import Utterance


@dataclass
class Example:
    variants: list[torch.Tensor]  # one prepared input per speed factor, each (frames, ...)
    targets: list[int]  # token ids
    utterance: Utterance


def prepare_examples(
    utterances: Sequence[Utterance],
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    normalize,
    speed_factors: Sequence[float] = (1.0,),
    description: str = "preparing audio",
    trim: bool = False,
) -> list[Example]:
    """Load, optionally trim silence, speed-perturb and prepare every utterance.

    Utterances whose targets are empty are skipped."""
    examples = []
    for utt in track(utterances, description=description, transient=True):
        targets = tokenizer.encode(normalize(utt.text))
        if not targets:
            continue
        wav = load_audio(utt.audio_path)
        wav = torch.from_numpy(trim_silence(wav) if trim else wav)
        variants = [model.prepare(speed_perturb(wav, f)) for f in speed_factors]
        examples.append(Example(variants, targets, utt))
    return examples


def pad_batch(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (frames, ...) tensors into (B, max_frames, ...) with zeros after each end, plus (B,) lengths."""
    lengths = torch.tensor([len(x) for x in inputs])
    out = inputs[0].new_zeros(len(inputs), int(lengths.max()), *inputs[0].shape[1:])
    for i, x in enumerate(inputs):
        out[i, : len(x)] = x
    return out, lengths


def batches(
    examples: Sequence[Example], max_frames: int, rng: random.Random, rank: int = 0, world: int = 1
) -> Iterator[list[Example]]:
    """One epoch of batches of similar length, each holding at most ``max_frames`` input frames in total.

    Sorting by length keeps padding small; shuffling the batches keeps the order random. Under DDP every
    rank draws the same batch list (same seed) and keeps every ``world``-th batch.
    """
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].variants[0]), rng.random()))
    groups, current, longest = [], [], 0
    for i in order:
        n = len(examples[i].variants[0])
        if current and max(longest, n) * (len(current) + 1) > max_frames:
            groups.append(current)
            current, longest = [], 0
        current.append(examples[i])
        longest = max(longest, n)
    if current:
        groups.append(current)
    rng.shuffle(groups)
    usable = len(groups) - len(groups) % world
    yield from groups[rank:usable:world]
