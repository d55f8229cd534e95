"""A learned embedding head on the frozen VAE posterior: ConvNeXt blocks over the latent frames, then
attentive statistics pooling into one vector per clip.

Input frames are the posterior means, standardized per dimension with statistics stored in the module
(``latent_mean``, ``latent_std``). A patchifying stem merges ``stride`` frames, causal ConvNeXt blocks
follow (``blocks.py``), and attention weights per frame and channel give a weighted mean and standard
deviation over time, projected to ``dim`` values. Causal blocks make padding on the right harmless: with a
``mask``, a batch of clips of several lengths embeds each clip as it would alone. It is trained without labels
(``train/embedder.py``: NT-Xent over two crops of a clip); the projection head of that loss is not part
of this module. With labels (``train/head.py``) it is fine-tuned, or trained from scratch as a small sequence
head (the spoken-language probe, ``bench/language.py``), where ``cmvn`` first subtracts each clip's mean frame
(``meanvar``: and divides by its standard deviation): a recording chain's constant offset in latent space is
gone before any layer sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audiovae.config import ConfigError
from audiovae.models.blocks import ConvNeXtStack

CMVN = ("none", "mean", "meanvar")


@dataclass
class EmbedderConfig:
    """Architecture of the embedding head; ``latent_dim`` is set from the data."""

    latent_dim: int = 32
    channels: int = 128
    blocks: int = 4
    kernel: int = 5
    stride: int = 2  # latent frames merged by the stem
    attention: int = 64  # hidden units of the attention
    dim: int = 192  # embedding size
    expansion: int = 3  # of the ConvNeXt blocks' hidden layer
    cmvn: str = "none"  # per-clip normalization over time: none, mean or meanvar

    def validate(self) -> None:
        if min(self.latent_dim, self.channels, self.blocks, self.kernel, self.stride, self.attention, self.dim,
               self.expansion) < 1:
            raise ConfigError("embedder: every size must be >= 1")
        if self.cmvn not in CMVN:
            raise ConfigError(f"embedder: cmvn must be one of {', '.join(CMVN)}, got '{self.cmvn}'")


class Embedder(nn.Module):
    def __init__(self, cfg: EmbedderConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("latent_std", torch.ones(cfg.latent_dim))
        self.stem = nn.Conv1d(cfg.latent_dim, cfg.channels, cfg.stride, stride=cfg.stride)
        self.stack = ConvNeXtStack(cfg.channels, cfg.blocks, expansion=cfg.expansion, kernel=cfg.kernel)
        self.attend = nn.Sequential(nn.Conv1d(cfg.channels, cfg.attention, 1), nn.Tanh(),
                                    nn.Conv1d(cfg.attention, cfg.channels, 1))
        self.out = nn.Linear(2 * cfg.channels, cfg.dim)

    def set_stats(self, frames: Tensor) -> None:
        """Set the standardization from raw latent frames (N, latent_dim)."""
        x = frames.double()
        self.latent_mean.copy_(x.mean(0))
        self.latent_std.copy_(x.std(0).clamp_min(1e-4))

    def standardize(self, z: Tensor) -> Tensor:
        """Raw posterior means (batch, latent_dim, frames) -> standardized."""
        return (z - self.latent_mean[:, None]) / self.latent_std[:, None]

    def pool(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Embeddings (batch, dim) of standardized frames (batch, latent_dim, frames >= 1); ``mask``
        (batch, frames) is true on each row's real frames, a prefix of at least one."""
        s = self.config.stride
        if mask is not None:  # padding repeats the last real frame, as the stem's own padding does
            last = (mask.long().cumsum(-1) - 1).clamp_min(0)
            x = x.gather(-1, last[:, None].expand_as(x))
        if self.config.cmvn != "none":
            x = self._cmvn(x, mask)
        h, _ = self.stack(self.stem(F.pad(x, (0, -x.shape[-1] % s), mode="replicate")))
        logits = self.attend(h)
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, ::s].bool(), float("-inf"))
        w = torch.softmax(logits, -1)
        mean = (w * h).sum(-1)
        std = ((w * h * h).sum(-1) - mean**2).clamp_min(1e-6).sqrt()
        return self.out(torch.cat([mean, std], -1))

    def _cmvn(self, x: Tensor, mask: Tensor | None) -> Tensor:
        m = torch.ones_like(x[:, :1]) if mask is None else mask[:, None].float()
        n = m.sum(-1, keepdim=True)
        x = x - (x * m).sum(-1, keepdim=True) / n
        if self.config.cmvn == "meanvar":
            x = x / ((x * x * m).sum(-1, keepdim=True) / n + 1e-4).sqrt()
        return x

    def forward(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """Embeddings (batch, dim) of raw posterior means (batch, latent_dim, frames)."""
        return self.pool(self.standardize(z), mask)


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """NT-Xent (SimCLR): row i of ``a`` and of ``b`` are two views of one clip, every other row is a negative."""
    z = F.normalize(torch.cat([a, b]), dim=-1)
    n = len(a)
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)
