"""Conformer-CTC: shapes, chunk mask, streaming equals offline, checkpoints reload bit-identically."""

import numpy as np
import pytest
import torch

from asr.backends import build_model, load_checkpoint, save_checkpoint
from asr.model import chunk_attention_mask
from asr.text import JamoTokenizer

TINY = {"d_model": 48, "n_heads": 2, "ffn_dim": 96, "n_layers": 2, "conv_kernel": 7,
        "chunk_frames": 4, "left_chunks": 2}


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("conformer_ctc", TINY, vocab_size=len(JamoTokenizer())).eval()


def test_chunk_mask_allows_own_chunk_and_left_context_only():
    mask = chunk_attention_mask(8, chunk=2, left_chunks=1)
    allowed = ~mask
    assert allowed[0].tolist() == [True, True, False, False, False, False, False, False]
    assert allowed[5].tolist() == [False, False, True, True, True, True, False, False]


def test_offline_output_shape_and_lengths():
    model = tiny_model()
    wavs = [np.random.default_rng(i).normal(0, 0.1, n).astype(np.float32) for i, n in enumerate([16000, 9000])]
    feats = [model.prepare(w) for w in wavs]
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    log_probs, lengths = model(x, torch.tensor([len(f) for f in feats]))
    assert log_probs.shape[:2] == (2, len(feats[0]) // 4)
    assert lengths.tolist() == [len(f) // 4 for f in feats]
    assert torch.isfinite(log_probs).all()
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(()), atol=1e-4)


def test_padding_does_not_change_an_utterance():
    model = tiny_model()
    wav = np.random.default_rng(1).normal(0, 0.1, 12000).astype(np.float32)
    f = model.prepare(wav)
    alone, _ = model(f[None], torch.tensor([len(f)]))
    padded = torch.cat([f, torch.zeros(37, f.shape[1])])[None]
    batched, _ = model(padded, torch.tensor([len(f)]))
    assert torch.allclose(alone[0], batched[0, : alone.shape[1]], atol=1e-5)


@pytest.mark.parametrize("piece", [160, 1234, 5120, 40000])
def test_streaming_equals_offline(piece):
    model = tiny_model()
    wav = np.random.default_rng(2).normal(0, 0.1, 16000 * 2 + 777).astype(np.float32)
    f = model.prepare(wav)
    offline, _ = model(f[None], torch.tensor([len(f)]))
    stream = model.stream()
    out = [stream.accept(wav[i : i + piece]) for i in range(0, len(wav), piece)]
    out.append(stream.finish())
    streamed = torch.cat(out)
    assert streamed.shape == offline[0].shape
    assert (streamed - offline[0]).abs().max() < 1e-4


def test_checkpoint_reloads_bit_identically(tmp_path):
    model = tiny_model(seed=3)
    tok = JamoTokenizer()
    save_checkpoint(tmp_path / "m.pt", model, tok, "ko", step=7)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.meta["step"] == 7 and loaded.language == "ko"
    assert loaded.model.cfg == model.cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    f = model.prepare(np.random.default_rng(4).normal(0, 0.1, 8000).astype(np.float32))
    a, _ = model(f[None], torch.tensor([len(f)]))
    b, _ = loaded.model(f[None], torch.tensor([len(f)]))
    assert torch.equal(a, b)
    assert loaded.tokenizer.vocab == tok.vocab


def test_bad_checkpoint_and_unknown_backend(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a voiceloop checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="available: conformer_ctc, wav2vec2_ctc"):
        build_model("rnnt", {}, 10)
    with pytest.raises(ValueError, match="unknown conformer_ctc config field 'layers'"):
        build_model("conformer_ctc", {"layers": 3}, 10)


def test_a_model_needs_a_vocabulary():
    with pytest.raises(ValueError, match="vocab_size must be positive"):
        build_model("conformer_ctc", TINY, vocab_size=0)
