"""Rate-distortion training of per-channel quantization steps, jointly with the decoder (encoder frozen).

A quality level's step ``s`` becomes ``s * m_c(s)`` for channel ``c``, with ``log m_c(s) = a_c + b_c log s``
(2 C parameters, centered: the multipliers' geometric mean is 1 at every step; zeros give the single
step of every channel). The rate of the noisy symbols
``mean / steps + U(-1/2, 1/2)`` is estimated by a differentiable proxy of the integer context model
(codec/entropy.py): per channel a logistic density whose mean is a linear prediction from the previous
noisy frame and whose scale depends on the channel's step, integrated over each unit bin (Ballé et al.
2018). The loss adds ``lambda_k * rate / rate_of_uniform_steps`` for a batch item whose log step falls in
bin ``k``; each ``lambda_k`` follows dual ascent so that the rate at every level stays that of uniform
steps: the steps move bits between channels, the decoder learns their noise, the bitrate stays put.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiovae.registry import step_scales

LOGISTIC = math.sqrt(3.0) / math.pi  # logistic scale per unit standard deviation


class RateDistortion(nn.Module):
    """Step multipliers (``scales``), the rate proxy and the per-level dual variables (a buffer, so that a
    resumed run continues them)."""

    def __init__(self, latent_dim: int, bins: int, min_step: float, max_step: float, dual_lr: float):
        super().__init__()
        self.range, self.dual_lr = (math.log(min_step), math.log(max_step)), dual_lr
        self.a, self.b = nn.Parameter(torch.zeros(latent_dim)), nn.Parameter(torch.zeros(latent_dim))
        # rate proxy (latent units): prediction weights @ previous frame + bias, log std = std0 + std1 * log step
        self.weights = nn.Parameter(torch.zeros(latent_dim, latent_dim))
        self.bias, self.std0, self.std1 = (nn.Parameter(torch.zeros(latent_dim)) for _ in range(3))
        self.register_buffer("dual", torch.zeros(bins))

    def scales(self, step: Tensor) -> Tensor:
        """Multipliers (batch, C) of the quality steps ``step`` (batch,)."""
        a, b = step_scales(self.a, self.b)
        return torch.exp(a + b * step.log()[:, None])

    def bits(self, mean: Tensor, u: Tensor, steps: Tensor, proxy: tuple[Tensor, ...]) -> Tensor:
        """Proxy code length (bits per value, (batch,)) of ``mean`` (batch, C, T) quantized with ``steps``
        (batch, C, 1), ``u`` the unit uniform noise, ``proxy`` (weights, bias, std0, std1)."""
        weights, bias, std0, std1 = proxy
        prev = F.pad(mean + u * steps, (1, 0))[..., :-1]  # the noisy previous frame; zeros before frame 0
        center = (torch.einsum("dc,bct->bdt", weights, prev) + bias[:, None]) / steps
        scale = torch.exp(std0[:, None] + std1[:, None] * steps.log()) / steps * LOGISTIC
        v = (mean / steps + u - center).abs()
        p = torch.sigmoid((0.5 - v) / scale) - torch.sigmoid((-0.5 - v) / scale)
        return -torch.log2(p.clamp_min(1e-9)).mean(dim=(1, 2))

    def loss(self, mean: Tensor, u: Tensor, step: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Rate terms of a batch quantized with quality steps ``step`` (batch,) and noise ``u``; in training,
        one dual ascent step on each level's rate ratio."""
        steps = (step[:, None] * self.scales(step))[..., None]
        proxy = (self.weights, self.bias, self.std0, self.std1)
        rate = self.bits(mean, u, steps, tuple(p.detach() for p in proxy))  # trains the steps
        fit = self.bits(mean, u, steps.detach(), proxy)  # trains the proxy
        with torch.no_grad():
            base = self.bits(mean, u, step[:, None, None].expand_as(steps), proxy)
        ratio = rate / base
        low, high = self.range
        k = ((step.log() - low) / (high - low) * len(self.dual)).long().clamp(0, len(self.dual) - 1)
        if self.training:
            with torch.no_grad():
                excess = torch.zeros_like(self.dual).index_add_(0, k, ratio.detach() - 1)
                self.dual += self.dual_lr * excess / torch.bincount(k, minlength=len(self.dual)).clamp_min(1)
        logs = {"rate_bits": fit.detach().mean(), "rate_ratio": ratio.detach().mean(),
                "dual": self.dual.mean(), "step_scale_spread": self.a.detach().std()}
        return (self.dual[k] * ratio).mean() + fit.mean(), logs
