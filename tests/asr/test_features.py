"""Front end and training augmentations."""

import numpy as np
import torch

from asr.features import FeatureConfig, LogMel, SpecAugmentConfig, spec_augment, speed_perturb, warp_frequency


def test_log_mel_frames_depend_only_on_their_samples():
    mel = LogMel(FeatureConfig())
    wav = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32))
    whole = mel(wav)
    assert whole.shape == (mel.num_frames(16000), 80) == (98, 80)
    tail = mel(wav[160 * 50 :])  # starts exactly at frame 50
    assert torch.allclose(whole[50:], tail, atol=1e-4)
    assert mel(wav[:100]).shape == (0, 80)


def test_spec_augment_returns_a_masked_copy():
    feats = torch.randn(200, 80)
    out = spec_augment(feats, SpecAugmentConfig(warp=0.0), torch.Generator().manual_seed(1))
    assert out.shape == feats.shape and not torch.equal(out, feats)
    assert torch.equal(feats, feats.clone())  # input untouched


def test_frequency_warp_moves_energy_up_or_down_the_mel_axis():
    feats = torch.zeros(1, 80)
    feats[0, 40] = 1.0
    assert torch.equal(warp_frequency(feats, 1.0), feats)
    assert int(warp_frequency(feats, 1.1).argmax()) == 44
    assert int(warp_frequency(feats, 0.9).argmax()) == 36


def test_speed_perturbation_changes_duration():
    wav = torch.randn(16000)
    assert abs(len(speed_perturb(wav, 1.1)) - 16000 / 1.1) <= 1
    assert abs(len(speed_perturb(wav, 0.9)) - 16000 / 0.9) <= 1
    assert speed_perturb(wav, 1.0) is wav
