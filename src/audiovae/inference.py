"""Running a VAE on signals of any rate and channel count, in blocks: memory does not grow with length.

The model runs under ``torch.inference_mode()``: its outputs are inference tensors (no autograd; a caller that
needs gradients through them clones them first)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import soxr
import torch
from torch.nn import functional as F

from audiovae.audio import resample, resampled_length, validate
from audiovae.models.vae import VAE

BLOCK_SECONDS = 10.0


def block_frames(sample_rate: int) -> int:
    """Samples per block at ``sample_rate``: what file readers and whole-signal calls feed at a time."""
    return max(1, int(BLOCK_SECONDS * sample_rate))


def split(wave: np.ndarray, frames: int) -> Iterator[np.ndarray]:
    """(channels, samples) -> consecutive (channels, <= frames) views."""
    return (wave[:, i : i + frames] for i in range(0, wave.shape[1], frames))


def to_model_rate(model: VAE, wave: np.ndarray, sample_rate: int) -> torch.Tensor:
    """(channels, samples) at any rate -> float tensor (channels, samples) at the model's rate."""
    validate(wave)
    return torch.from_numpy(resample(wave.astype(np.float32), sample_rate, model.sample_rate))


@torch.inference_mode()
def encode_means(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """Posterior means (channels, latent_dim, frames) of (channels, samples), streamed in blocks;
    the input is padded so that decoding these frames completes every sample."""
    n = x.shape[-1]
    total = model.padded_length(n)
    x = F.pad(x, (0, total - n))
    enc = model.stream_encoder()
    block = block_frames(model.sample_rate)
    return torch.cat([enc(x[:, i : i + block]) for i in range(0, total, block)], dim=-1)


@torch.inference_mode()
def decode_frames(model: VAE, z: torch.Tensor, length: int) -> torch.Tensor:
    """(channels, latent_dim, frames) -> (channels, length) samples, streamed in blocks."""
    dec = model.stream_decoder()
    block = max(1, int(BLOCK_SECONDS * model.sample_rate / model.hop_length))
    parts = [dec(z[..., i : i + block]) for i in range(0, z.shape[-1], block)]
    parts.append(dec.flush())
    return torch.cat(parts, dim=-1)[:, :length]


class EncodeStream:
    """Posterior means of a signal pushed as (channels, n) blocks at ``sample_rate``: ``push`` returns
    the frames completed so far, ``finish`` the rest, padded (as ``encode_means``) so that decoding the
    frames completes every sample. ``samples`` counts the signal at the model's rate."""

    def __init__(self, model: VAE, sample_rate: int, channels: int, on_samples=None):
        self.model, self.channels, self.on_samples = model, channels, on_samples  # on_samples(x at the model's rate)
        self.resampler = None if sample_rate == model.sample_rate else soxr.ResampleStream(
            sample_rate, model.sample_rate, channels, dtype="float32", quality="HQ")
        self.encoder = model.stream_encoder()
        self.received = self.samples = 0  # input samples; samples at the model's rate

    def push(self, block: np.ndarray) -> torch.Tensor:
        self.received += block.shape[1]
        x = self.resampler.resample_chunk(np.ascontiguousarray(block.T)).T if self.resampler else block
        return self._encode(x)

    def finish(self) -> torch.Tensor:
        tail = np.zeros((self.channels, 0), np.float32)
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(tail.T, last=True).T
        self.samples += tail.shape[1]
        tail = np.pad(tail, ((0, 0), (0, self.model.padded_length(self.samples) - self.samples)))
        return self._encode(tail, count=False)

    @torch.inference_mode()
    def _encode(self, x: np.ndarray, count: bool = True) -> torch.Tensor:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.samples += x.shape[1] if count else 0
        if self.on_samples is not None:
            self.on_samples(x)
        return self.encoder(torch.from_numpy(x))


def to_rate(blocks: Iterable[np.ndarray], sr_in: int, sr_out: int, channels: int, limit: int | None = None,
            length: int | None = None) -> Iterator[np.ndarray]:
    """(channels, n) blocks at ``sr_in``: keep the first ``limit`` samples, resample to ``sr_out``, then trim
    or zero-pad to ``length`` samples (None: keep everything), block by block."""
    rs = None if sr_in == sr_out else soxr.ResampleStream(sr_in, sr_out, channels, dtype="float32", quality="HQ")
    seen = done = 0
    for y in blocks:
        if limit is not None:
            y = y[:, : max(0, limit - seen)]
        seen += y.shape[1]
        y = rs.resample_chunk(np.ascontiguousarray(y.T, dtype=np.float32)).T if rs is not None else y
        y = y[:, : max(0, length - done)] if length is not None else y
        done += y.shape[1]
        yield np.ascontiguousarray(y, dtype=np.float32)
    tail = np.zeros((channels, 0), np.float32)
    if rs is not None:
        tail = rs.resample_chunk(tail.T, last=True).T
    if length is not None:
        tail = np.pad(tail, ((0, 0), (0, max(0, length - done - tail.shape[1]))))[:, : length - done]
    yield np.ascontiguousarray(tail, dtype=np.float32)


def reconstruct_blocks(model: VAE, blocks: Iterable[np.ndarray], sample_rate: int, channels: int,
                       length: int) -> Iterator[np.ndarray]:
    """Posterior-mean reconstruction of a ``length``-sample signal given as (channels, n) blocks at
    ``sample_rate``, yielded as blocks at that rate."""
    enc, dec = EncodeStream(model, sample_rate, channels), model.stream_decoder()

    @torch.inference_mode()
    def decoded() -> Iterator[np.ndarray]:
        for block in blocks:
            yield dec(enc.push(block)).numpy()
        yield dec(enc.finish()).numpy()
        yield dec.flush().numpy()

    limit = resampled_length(length, sample_rate, model.sample_rate)
    return to_rate(decoded(), model.sample_rate, sample_rate, channels, limit, length)


def reconstruct(model: VAE, wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Encode to posterior means and decode; returns (channels, samples) at ``sample_rate``."""
    validate(wave)
    blocks = split(wave.astype(np.float32), block_frames(sample_rate))
    return np.concatenate(list(reconstruct_blocks(model, blocks, sample_rate, *wave.shape)), axis=1)
