"""The waveform VAE: causal STFT encoder -> Gaussian posterior at the latent rate -> iSTFT decoder.

Encoder: causal STFT frames (``enc_n_fft``, hop = ``hop_length``) -> log magnitude + compressed
complex spectrum -> ConvNeXt blocks -> (mu, std) per latent frame. Decoder: ConvNeXt blocks at the
latent rate -> each latent frame predicts ``upsample`` STFT frames (log magnitude + phase, Vocos
style) -> causal overlap-add. Everything is causal, so streaming is exact; the decoder's output
lags by ``n_fft - hop`` samples (``latency``), which ``reconstruct`` pads for.

With ``noise_bands``, the decoder also predicts a gate per band and synthesis frame that adds up to a
full turn of pseudo-random phase to the bins of that band. Where the latents cannot say the phase (noise,
reverberant tails), a deterministic decoder fed near-constant latents repeats itself every latent frame,
a line spectrum at the frame rate (the "comb"); the gate lets it render noise there instead. The phase
noise is a hash of (synthesis frame index, bin), so decoding is deterministic and streaming stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audiovae.config import ModelConfig
from audiovae.models.blocks import (
    CausalISTFT,
    CausalSTFT,
    ConvNeXtStack,
    compressed,
    log_magnitude,
)


@dataclass
class Posterior:
    """Diagonal Gaussian q(z|x); tensors are (batch, latent_dim, frames)."""

    mean: Tensor
    std: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per element, same shape as ``mean``."""
        var = self.std**2
        return 0.5 * (self.mean**2 + var - 1.0 - torch.log(var))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.stft = CausalSTFT(cfg.enc_n_fft, cfg.hop_length)
        bins = cfg.enc_n_fft // 2 + 1
        self.proj = nn.Conv1d(3 * bins, cfg.enc_channels, 1)
        self.stack = ConvNeXtStack(cfg.enc_channels, cfg.enc_blocks, cfg.expansion, cfg.kernel)
        self.out = nn.Conv1d(cfg.enc_channels, 2 * cfg.latent_dim, 1)

    def forward(self, x: Tensor, state: list | None = None) -> tuple[Tensor, Tensor, list]:
        spec, s_stft = self.stft(x, None if state is None else state[0])
        if spec.shape[-1] == 0:  # a block shorter than one hop: nothing to emit yet
            empty = x.new_zeros(x.shape[0], self.out.out_channels // 2, 0)
            return empty, empty, [s_stft, None if state is None else state[1]]
        h = self.proj(torch.cat([log_magnitude(spec), compressed(spec)], dim=1))
        h, s_stack = self.stack(h, None if state is None else state[1])
        mean, scale = self.out(h).chunk(2, dim=1)
        return mean, F.softplus(scale) + 1e-4, [s_stft, s_stack]


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.upsample = cfg.upsample
        self.bins = cfg.n_fft // 2 + 1
        self.proj = nn.Conv1d(cfg.latent_dim, cfg.dec_channels, 1)
        self.stack = ConvNeXtStack(cfg.dec_channels, cfg.dec_blocks, cfg.expansion, cfg.kernel)
        self.head = nn.Conv1d(cfg.dec_channels, cfg.upsample * 2 * self.bins, 1)
        self.noise_bands = cfg.noise_bands
        if cfg.noise_bands:
            self.noise = nn.Conv1d(cfg.dec_channels, cfg.upsample * cfg.noise_bands, 1)
            # starts half open: closed, the random phase has no first-order effect on any loss, so it stays shut
            nn.init.zeros_(self.noise.weight)
            nn.init.zeros_(self.noise.bias)
        self.istft = CausalISTFT(cfg.n_fft, cfg.hop_length // cfg.upsample)

    def _frames(self, x: Tensor) -> Tensor:
        """(b, c * upsample, t) at the latent rate -> (b, c, t * upsample) synthesis frames."""
        b, _, t = x.shape
        return x.reshape(b, self.upsample, -1, t).permute(0, 2, 3, 1).reshape(b, -1, t * self.upsample)

    def spectrum(self, z: Tensor, state: list | None = None, start: int = 0) -> tuple[Tensor, list]:
        """Complex spectra of the synthesis frames; ``start`` is the index of the first one in the stream."""
        h, s_stack = self.stack(self.proj(z), state)
        logmag, phase = self._frames(self.head(h)).chunk(2, dim=1)
        if self.noise_bands:
            gate = torch.sigmoid(self._frames(self.noise(h)))  # (b, bands, frames)
            gate = F.interpolate(gate.transpose(1, 2), size=self.bins, mode="linear", align_corners=True)
            phase = phase + gate.transpose(1, 2) * phase_noise(start, phase.shape[-1], self.bins).to(phase)
        mag = torch.exp(logmag.clamp(max=8.0))
        return torch.polar(mag, phase), s_stack

    def forward(self, z: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        start = 0 if state is None else state[2]
        spec, s_stack = self.spectrum(z, None if state is None else state[0], start)
        y, s_ola = self.istft(spec, None if state is None else state[1])
        return y, [s_stack, s_ola, start + spec.shape[-1]]


def phase_noise(start: int, frames: int, bins: int) -> Tensor:
    """(bins, frames) phases in [-pi, pi) from an integer hash of (frame index, bin): the same on every
    machine and for any split of a stream into blocks. (NumPy's uint32 arithmetic wraps modulo 2**32 as the
    hash needs, and costs a seventh of torch's int64 with masks.)"""
    t = (np.arange(start, start + frames, dtype=np.uint64) * 73856093).astype(np.uint32)
    k = (np.arange(bins, dtype=np.uint64) * 19349663).astype(np.uint32) ^ np.uint32(0x5BD1E995)
    x = k[:, None] ^ t[None, :]
    for _ in range(2):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x45D9F3B)
    x ^= x >> np.uint32(16)
    return torch.from_numpy((x * (2 * math.pi / 2.0**32) - math.pi).astype(np.float32))


class VAE(nn.Module):
    """The model interface everything else uses: encode, decode, sample_rate, hop_length, latent_dim."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def latency(self) -> int:
        """Samples by which the decoder output lags (overlap-add tail)."""
        return self.decoder.istft.n_fft - self.decoder.istft.hop

    def padded_length(self, samples: int) -> int:
        """Samples to encode (the signal, then zeros) so that decoding the frames completes all ``samples``."""
        return -(-(samples + self.latency) // self.hop_length) * self.hop_length

    def encode(self, wave: Tensor) -> Posterior:
        """(batch, samples) -> posterior over (batch, latent_dim, samples // hop_length) frames."""
        mean, std, _ = self.encoder(wave)
        return Posterior(mean, std)

    def decode(self, z: Tensor) -> Tensor:
        """(batch, latent_dim, frames) -> (batch, frames * hop_length) samples; the last
        ``latency`` samples are incomplete (they need frames that come after ``z``)."""
        y, state = self.decoder(z)
        return torch.cat([y, state[1]], dim=-1)[:, self.latency :]

    def reconstruct(self, wave: Tensor) -> Tensor:
        """Posterior-mean reconstruction of (batch, samples), padded so every sample is complete."""
        n = wave.shape[-1]
        z = self.encode(F.pad(wave, (0, self.padded_length(n) - n))).mean
        return self.decode(z)[:, :n]

    def stream_encoder(self) -> StreamingEncoder:
        return StreamingEncoder(self)

    def stream_decoder(self) -> StreamingDecoder:
        return StreamingDecoder(self)


class StreamingEncoder:
    """Feeds arbitrary-sized blocks of samples, returns the posterior means of completed frames."""

    def __init__(self, vae: VAE):
        self.vae, self.state = vae, None

    @torch.no_grad()
    def __call__(self, block: Tensor) -> Tensor:
        return self.posterior(block).mean

    @torch.no_grad()
    def posterior(self, block: Tensor) -> Posterior:
        """The posterior (means and standard deviations) of the frames this block completes."""
        mean, std, self.state = self.vae.encoder(block, self.state)
        return Posterior(mean, std)


class StreamingDecoder:
    """Feeds latent frames, returns the samples completed so far; ``flush`` returns the tail."""

    def __init__(self, vae: VAE):
        self.vae, self.state, self.to_skip = vae, None, vae.latency

    @torch.no_grad()
    def __call__(self, z: Tensor) -> Tensor:
        if z.shape[-1] == 0:
            return z.new_zeros(z.shape[0], 0)
        y, self.state = self.vae.decoder(z, self.state)
        skip = min(self.to_skip, y.shape[-1])
        self.to_skip -= skip
        return y[:, skip:]

    def flush(self) -> Tensor:
        if self.state is None:
            return torch.zeros(0)
        return self.state[1][:, self.to_skip :]
