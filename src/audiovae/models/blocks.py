"""Causal building blocks with explicit streaming state.

Every temporal module takes ``(x, state)`` and returns ``(y, new_state)``. ``state=None`` means
the start of a stream (zeros on the left), so whole-file processing is just one call, and chunked
processing that threads the state through gives the same result.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only; the state is the last ``(kernel - 1) * dilation`` inputs."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, dilation=dilation, groups=groups)
        self.context = (kernel - 1) * dilation

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if state is None:
            state = x.new_zeros(x.shape[0], x.shape[1], self.context)
        x = torch.cat([state, x], dim=-1)
        return super().forward(x), x[..., x.shape[-1] - self.context :]


class ConvNeXtBlock(nn.Module):
    """Causal ConvNeXt-1d block (Vocos): depthwise conv, LayerNorm, pointwise MLP, layer scale."""

    def __init__(self, channels: int, expansion: int, kernel: int, layer_scale: float):
        super().__init__()
        self.dw = CausalConv1d(channels, channels, kernel, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pw1 = nn.Linear(channels, channels * expansion)
        self.pw2 = nn.Linear(channels * expansion, channels)
        self.scale = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h, state = self.dw(x, state)
        h = self.pw2(F.gelu(self.pw1(self.norm(h.transpose(1, 2)))))
        return x + (self.scale * h).transpose(1, 2), state


class ConvNeXtStack(nn.Module):
    """Blocks applied in sequence; the state is one tensor per block."""

    def __init__(self, channels: int, blocks: int, expansion: int = 3, kernel: int = 7):
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(channels, expansion, kernel, 1.0 / max(blocks, 1)) for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor, states: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        new = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, None if states is None else states[i])
            new.append(s)
        return self.norm(x.transpose(1, 2)).transpose(1, 2), new


def hann(n: int, device=None) -> Tensor:
    return torch.hann_window(n, periodic=True, device=device)


class CausalSTFT(nn.Module):
    """Frames ending at every hop: frame t covers samples [(t + 1) * hop - n_fft, (t + 1) * hop).

    The state holds the ``n_fft - hop`` samples of left context plus any leftover samples that do
    not fill a hop yet.
    """

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", hann(n_fft), persistent=False)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (batch, samples) -> complex spectra (batch, n_fft // 2 + 1, frames), state."""
        if state is None:
            state = x.new_zeros(x.shape[0], self.n_fft - self.hop)
        x = torch.cat([state, x], dim=-1)
        frames = (x.shape[-1] - (self.n_fft - self.hop)) // self.hop
        used = frames * self.hop
        new_state = x[..., used:]
        if frames == 0:
            return x.new_zeros(x.shape[0], self.n_fft // 2 + 1, 0, dtype=torch.complex64), new_state
        seg = x[..., : used + self.n_fft - self.hop].unfold(-1, self.n_fft, self.hop)
        return torch.fft.rfft(seg * self.window, dim=-1).transpose(1, 2), new_state


class CausalISTFT(nn.Module):
    """Overlap-add synthesis matching ``CausalSTFT``; the state is the pending overlap tail.

    Output for frames t emits samples [t * hop, (t + 1) * hop) once all frames overlapping them are
    added, i.e. with a latency of ``n_fft - hop`` samples; ``flush`` returns the incomplete tail.
    """

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", hann(n_fft), persistent=False)
        self.norm = float((hann(n_fft) ** 2).reshape(-1, hop).sum(0).mean())

    def forward(self, spec: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """spec: complex (batch, n_fft // 2 + 1, frames) -> samples (batch, frames * hop), state."""
        b, _, t = spec.shape
        tail = self.n_fft - self.hop
        if state is None:
            state = spec.real.new_zeros(b, tail)
        frames = torch.fft.irfft(spec.transpose(1, 2), n=self.n_fft, dim=-1) * self.window / self.norm
        total = (t - 1) * self.hop + self.n_fft if t else tail
        out = F.fold(frames.transpose(1, 2), (1, total), (1, self.n_fft), stride=(1, self.hop))
        out = out.reshape(b, total) if t else spec.real.new_zeros(b, total)
        out = torch.cat([out[:, :tail] + state, out[:, tail:]], dim=-1)
        emitted = t * self.hop
        return out[:, :emitted], out[:, emitted:]


def log_magnitude(spec: Tensor, eps: float = 1e-5) -> Tensor:
    return torch.log(spec.abs().clamp_min(eps))


def compressed(spec: Tensor, power: float = 0.3) -> Tensor:
    """Power-compressed complex spectrum as (real, imag) channels: |X|^p * e^{i angle X}."""
    mag = spec.abs().clamp_min(1e-8)
    c = spec * (mag ** (power - 1))
    return torch.cat([c.real, c.imag], dim=1)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0) -> Tensor:
    """Slaney-style triangular mel filters, (n_mels, n_fft // 2 + 1)."""

    def hz_to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    mels = torch.linspace(hz_to_mel(fmin), hz_to_mel(sample_rate / 2), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    return fb * (2.0 / (hi - lo))
