import numpy as np
import torch

from audiovae import inference
from audiovae.config import ModelConfig
from audiovae.models.vae import VAE


def tiny():
    torch.manual_seed(0)
    return VAE(ModelConfig(enc_channels=8, enc_blocks=1, dec_channels=8, dec_blocks=1, latent_dim=4)).eval()


def test_stereo_at_another_rate_keeps_shape_and_channels():
    m = tiny()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 44100)) * 0.1).astype(np.float32)
    x[1] *= 0.0  # a silent right channel stays (nearly) silent: channels are not mixed
    y = inference.reconstruct(m, x, 44100)
    assert y.shape == x.shape and y.dtype == np.float32
    left_energy, right_energy = np.abs(y[0]).mean(), np.abs(y[1]).mean()
    assert right_energy < left_energy


def test_blocked_encoding_equals_whole_file(monkeypatch):
    m = tiny()
    x = torch.randn(1, 3 * 16000) * 0.1
    whole = inference.encode_means(m, x)
    monkeypatch.setattr(inference, "BLOCK_SECONDS", 0.37)
    blocked = inference.encode_means(m, x)
    assert torch.allclose(whole, blocked, atol=1e-4)
    y1 = inference.decode_frames(m, whole, x.shape[-1])
    y2 = inference.decode_frames(m, blocked, x.shape[-1])
    assert y1.shape == (1, 3 * 16000) and torch.allclose(y1, y2, atol=1e-4)
    assert torch.allclose(y1, m.reconstruct(x), atol=1e-4)
