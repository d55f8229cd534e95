"""Running a VAE on whole signals of any rate and channel count, in bounded memory."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from audiovae.audio import resample, validate
from audiovae.models.vae import VAE

BLOCK_SECONDS = 10.0


def to_model_rate(model: VAE, wave: np.ndarray, sample_rate: int) -> torch.Tensor:
    """(channels, samples) at any rate -> float tensor (channels, samples) at the model's rate."""
    validate(wave)
    return torch.from_numpy(resample(wave.astype(np.float32), sample_rate, model.sample_rate))


@torch.no_grad()
def encode_means(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """Posterior means (channels, latent_dim, frames) of (channels, samples), streamed in blocks;
    the input is padded so that decoding these frames completes every sample."""
    n = x.shape[-1]
    total = -(-(n + model.latency) // model.hop_length) * model.hop_length
    x = F.pad(x, (0, total - n))
    enc = model.stream_encoder()
    block = int(BLOCK_SECONDS * model.sample_rate)
    return torch.cat([enc(x[:, i : i + block]) for i in range(0, total, block)], dim=-1)


@torch.no_grad()
def decode_frames(model: VAE, z: torch.Tensor, length: int) -> torch.Tensor:
    """(channels, latent_dim, frames) -> (channels, length) samples, streamed in blocks."""
    dec = model.stream_decoder()
    block = max(1, int(BLOCK_SECONDS * model.sample_rate / model.hop_length))
    parts = [dec(z[..., i : i + block]) for i in range(0, z.shape[-1], block)]
    parts.append(dec.flush())
    return torch.cat(parts, dim=-1)[:, :length]


def reconstruct(model: VAE, wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Encode to posterior means and decode; returns (channels, samples) at ``sample_rate``."""
    x = to_model_rate(model, wave, sample_rate)
    y = decode_frames(model, encode_means(model, x), x.shape[-1]).numpy()
    y = resample(y, model.sample_rate, sample_rate)
    n = wave.shape[-1]
    return np.pad(y, ((0, 0), (0, max(0, n - y.shape[-1]))))[:, :n]
