"""Multi-scale complex-STFT discriminator (EnCodec's MS-STFTD, narrowed for CPU training)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from audiovae.models.blocks import hann


class STFTDiscriminator(nn.Module):
    """2-D conv stack over the (real, imag) STFT at one resolution. Unlike EnCodec's, the first layer
    already strides over frequency: on a CPU that halves the cost of the whole stack."""

    def __init__(self, n_fft: int, channels: int = 16):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", hann(n_fft), persistent=False)
        layers = [nn.Conv2d(2, channels, (3, 9), stride=(1, 2), padding=(1, 4))]
        for d in (1, 2, 4):
            layers.append(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
        layers.append(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))
        self.layers = nn.ModuleList(weight_norm(layer) for layer in layers)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(x, self.n_fft, self.n_fft // 4, window=self.window, return_complex=True)
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (batch, 2, frames, bins)
        feats = []
        for layer in self.layers:
            h = nn.functional.leaky_relu(layer(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, n_ffts: list[int], channels: int = 16):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        outs = [d(x) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]
