import numpy as np
import torch

from audiovae import inference
from audiovae.config import ModelConfig
from audiovae.models.vae import VAE
from audiovae.registry import load, load_embedder
from audiovae.train.head import FinetuneConfig, finetune_head
from audiovae.train.run import initial_weights, load_grown


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


def test_loaded_models_are_frozen_and_run_without_autograd():
    m = load("speech16k")
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert not m.decode(torch.randn(1, m.latent_dim, 10)).requires_grad
    means = inference.encode_means(m, torch.randn(1, 16000) * 0.1)
    assert means.is_inference() and inference.decode_frames(m, means, 16000).is_inference()
    assert not any(p.requires_grad for p in load_embedder(m)[0].parameters())


def test_training_from_a_loaded_model_gets_trainable_weights():
    cfg, state, _ = initial_weights("speech16k")  # what `train --init speech16k` starts from
    vae = VAE(cfg)
    load_grown(vae, state, cfg.dec_blocks)
    assert all(p.requires_grad for p in vae.parameters())
    head = load_embedder(load("speech16k"))[0]
    rng = torch.Generator().manual_seed(0)
    clips = [torch.randn(60, head.config.latent_dim, generator=rng) + (i % 2) for i in range(8)]
    tuned = finetune_head(head, clips, [i % 2 for i in range(8)], 50.0, FinetuneConfig(steps=2, batch_size=4),
                          progress=False)
    moved = [not torch.equal(a, b) for a, b in zip(head.parameters(), tuned.parameters(), strict=True)]
    assert any(moved) and not any(p.requires_grad for p in head.parameters())  # the shipped head stays frozen
