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
    y = inference.reconstruct(m, x.numpy(), 16000)
    monkeypatch.setattr(inference, "BLOCK_SECONDS", 10.0)
    assert y.shape == (1, 3 * 16000) and np.allclose(y, inference.reconstruct(m, x.numpy(), 16000), atol=1e-4)
    assert np.allclose(y, m.reconstruct(x).detach().numpy(), atol=1e-4)


def test_streamed_reconstruction_at_another_rate_keeps_length():
    m = tiny()
    x = (np.random.default_rng(1).standard_normal((2, 30001)) * 0.1).astype(np.float32)
    blocks = list(inference.split(x, 7000))  # 30001 is not a multiple of the block size
    y = np.concatenate(list(inference.reconstruct_blocks(m, blocks, 22050, 2, x.shape[1])), axis=1)
    assert y.shape == x.shape and np.allclose(y, inference.reconstruct(m, x, 22050), atol=1e-4)
