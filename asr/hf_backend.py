"""Hugging Face ``transformers`` CTC backend (Wav2Vec2ForCTC), behind the same interface as ConformerCTC.

Built from a config, never downloaded: the default is a tiny model that trains on a CPU. To fine-tune a
real pretrained checkpoint, load its weights into this module's ``net`` from a local directory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import Wav2Vec2Config as HFConfig
from transformers import Wav2Vec2ForCTC


@dataclass(frozen=True)
class Wav2Vec2Config:
    vocab_size: int = 0
    hidden_size: int = 96
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 384
    conv_dim: tuple[int, ...] = (64, 64, 64, 64)
    conv_kernel: tuple[int, ...] = (10, 8, 4, 4)
    conv_stride: tuple[int, ...] = (5, 4, 4, 4)  # 320 samples = 20 ms per output frame
    num_conv_pos_embeddings: int = 32
    num_conv_pos_embedding_groups: int = 4
    dropout: float = 0.1
    mask_time_prob: float = 0.05  # SpecAugment-style masking of the latent frames while training

    @classmethod
    def from_dict(cls, d: dict) -> Wav2Vec2Config:
        d = dict(d)
        for key in ("conv_dim", "conv_kernel", "conv_stride"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


class Wav2Vec2Backend(torch.nn.Module):
    """inputs (B, samples) normalised waveforms → log_probs (B, frames, vocab). Token 0 is the CTC blank."""

    name = "wav2vec2_ctc"

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.cfg = cfg
        hf = HFConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size,
            conv_dim=list(cfg.conv_dim),
            conv_kernel=list(cfg.conv_kernel),
            conv_stride=list(cfg.conv_stride),
            num_feat_extract_layers=len(cfg.conv_dim),
            num_conv_pos_embeddings=cfg.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=cfg.num_conv_pos_embedding_groups,
            hidden_dropout=cfg.dropout,
            attention_dropout=cfg.dropout,
            activation_dropout=cfg.dropout,
            feat_proj_dropout=cfg.dropout,
            final_dropout=cfg.dropout,
            mask_time_prob=cfg.mask_time_prob,
            mask_time_length=2,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            pad_token_id=0,
            ctc_loss_reduction="mean",
        )
        self.net = Wav2Vec2ForCTC(hf)

    def prepare(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        """wav (samples,) → zero-mean, unit-variance (samples,), as Wav2Vec2FeatureExtractor does."""
        x = torch.as_tensor(wav, dtype=torch.float32)
        return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)

    def augment(self, inputs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return inputs  # masking happens inside the network (mask_time_prob) while training

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        return self.net._get_feat_extract_output_lengths(input_lengths).long()

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (torch.arange(inputs.shape[1], device=inputs.device)[None, :] < lengths[:, None]).long()
        logits = self.net(input_values=inputs, attention_mask=mask).logits
        return logits.float().log_softmax(-1), self.output_lengths(lengths)

