"""Training losses: multi-resolution log-mel L1, linear-frequency log-magnitude L1, compressed complex STFT L1,
waveform L1, KL with free bits, and the adversarial terms (hinge + feature matching)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from audiovae.config import LossConfig
from audiovae.models.blocks import compressed, hann, log_magnitude, mel_filterbank
from audiovae.models.vae import Posterior


def stft(x: Tensor, n_fft: int, hop: int | None = None) -> Tensor:
    return torch.stft(x, n_fft, hop or n_fft // 4, window=hann(n_fft, x.device), return_complex=True)


class MelDistance(nn.Module):
    """Mean over scales of L1 between log-mel spectrograms."""

    def __init__(self, sample_rate: int, scales: list[list[int]]):
        super().__init__()
        self.scales = [tuple(s) for s in scales]
        for n_fft, n_mels in self.scales:
            self.register_buffer(f"fb_{n_fft}", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        total = y.new_zeros(())
        for n_fft, _ in self.scales:
            fb = getattr(self, f"fb_{n_fft}")
            my = torch.log(torch.matmul(fb, stft(y, n_fft).abs()).clamp_min(1e-5))
            mx = torch.log(torch.matmul(fb, stft(x, n_fft).abs()).clamp_min(1e-5))
            total = total + (my - mx).abs().mean()
        return total / len(self.scales)


class ReconstructionLoss(nn.Module):
    """Weighted sum of the spectral and waveform terms; returns (total, parts for logging)."""

    def __init__(self, cfg: LossConfig, sample_rate: int):
        super().__init__()
        self.cfg = cfg
        self.mel = MelDistance(sample_rate, cfg.mel_scales)

    def forward(self, y: Tensor, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.cfg
        parts = {"mel": self.mel(y, x), "wave": (y - x).abs().mean()}
        total = c.mel_weight * parts["mel"] + c.wave_weight * parts["wave"]
        if c.complex_weight:
            n = c.complex_n_fft
            parts["complex"] = (compressed(stft(y, n)) - compressed(stft(x, n))).abs().mean()
            total = total + c.complex_weight * parts["complex"]
        if c.logmag_n_ffts:
            # resolves the fine harmonic structure that mel bands average away (e.g. a comb at the frame rate)
            parts["logmag"] = sum((log_magnitude(stft(y, n)) - log_magnitude(stft(x, n))).abs().mean()
                                  for n in c.logmag_n_ffts) / len(c.logmag_n_ffts)
            total = total + c.logmag_weight * parts["logmag"]
        return total, parts


def kl_loss(post: Posterior, free_bits: float = 0.0) -> Tensor:
    """KL summed over latent channels, averaged over batch and frames; each channel's average
    below ``free_bits`` nats is not penalized."""
    per_channel = post.kl().mean(dim=(0, 2))
    return per_channel.clamp_min(free_bits).sum()


def kl_weight(step: int, cfg: LossConfig) -> float:
    """Log-linear warm-up from ``kl_start_weight`` to ``kl_weight`` over ``kl_warmup_steps``."""
    if step >= cfg.kl_warmup_steps or cfg.kl_start_weight <= 0:
        return cfg.kl_weight
    a, b = math.log(cfg.kl_start_weight), math.log(cfg.kl_weight)
    return math.exp(a + (b - a) * step / cfg.kl_warmup_steps)


def hinge_d(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    return sum(torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for r, f in zip(real, fake, strict=True))


def hinge_g(fake: list[Tensor]) -> Tensor:
    return sum(torch.relu(1 - f).mean() for f in fake)


def feature_matching(real_feats: list[list[Tensor]], fake_feats: list[list[Tensor]]) -> Tensor:
    """Relative L1 between discriminator features of real and decoded audio (RAVE v2)."""
    total, n = 0.0, 0
    for rs, fs in zip(real_feats, fake_feats, strict=True):
        for r, f in zip(rs, fs, strict=True):
            total = total + (r.detach() - f).abs().mean() / (r.detach().abs().mean() + 1e-5)
            n += 1
    return total / max(n, 1)
