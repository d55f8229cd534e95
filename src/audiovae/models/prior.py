"""A latent prior p(z | label) over VAE latent frames, of one of two kinds (``PriorConfig.kind``): "ar", a
small causal transformer (here), or "flow", a non-autoregressive flow-matching network (``flow_prior.py``);
``flow_prior.make_prior`` builds either. Both share the interface of ``Prior``: ``loss`` for training, ``sample``.

Frames are the VAE's posterior means, standardized per dimension with statistics stored in the prior
(``latent_mean``, ``latent_std``; ``latent_cov`` is kept for mapping between latent spaces). For "ar", token 0
is a label embedding (index ``num_labels`` is the null label, used for unconditional sampling and
classifier-free guidance); token t + 1 is frame t. The output at token t parametrizes frame t as a
mixture of ``mixtures`` diagonal Gaussians. Sampling runs one token at a time with a key/value
cache; past ``context`` tokens the cache is rebuilt from the last ``context // 2`` frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audiovae.config import ConfigError

Params = tuple[Tensor, Tensor, Tensor]  # mixture logits (..., K), means and log-scales (..., K, D)
Cache = list[tuple[Tensor, Tensor]]  # per layer: keys and values (batch, heads, tokens, head_dim)
Progress = Callable[[int, int], None]  # sampling's progress(done, total): frames (ar) or integration steps (flow)


@dataclass
class PriorConfig:
    """Architecture of the latent prior; ``latent_dim`` and ``num_labels`` are set from the data. A config
    without ``kind`` (written before the flow prior) is "ar"."""

    latent_dim: int = 32
    num_labels: int = 0
    kind: str = "ar"  # "ar": causal transformer with a Gaussian mixture per frame; "flow": flow matching
    d_model: int = 192
    layers: int = 4  # ar: transformer blocks; flow: dilated convolution blocks
    heads: int = 4
    ff_mult: int = 4
    context: int = 256  # ar: tokens (label + frames) attended to; flow: training crop and prompt frames
    mixtures: int = 4  # ar
    label_dropout: float = 0.1  # training: probability of replacing the label by the null label
    dropout: float = 0.0  # ar: attention and MLP dropout
    dilation_cycle: int = 4  # flow: block i dilates its convolution by 2 ** (i % dilation_cycle)
    attn_every: int = 2  # flow: a non-causal attention block after every attn_every convolution blocks (0: none)
    steps: int = 24  # flow: Euler steps of the sampler
    guidance: float = 3.0  # the classifier-free guidance that sampling uses unless told (set at export)
    style: str = ""  # flow: "embed": labelled clips also condition on their learned embedding (flow_prior.py)
    style_dim: int = 0  # set from the embedding head
    guide_layers: int = 0  # flow: convolution blocks of a label classifier on noisy frames (0: none; flow_prior.py)
    guide_width: int = 128
    classifier_guidance: float = 0.0  # the weight of that classifier's gradient in sampling unless told (set at export)

    def validate(self) -> None:
        if self.kind not in ("ar", "flow"):
            raise ConfigError(f"prior: kind must be 'ar' or 'flow', got '{self.kind}'")
        if self.d_model % self.heads or self.context < 4 or self.mixtures < 1 or not 0 <= self.label_dropout <= 1 \
                or self.dilation_cycle < 1 or self.attn_every < 0 or self.steps < 1:
            raise ConfigError("prior: d_model must divide by heads, context >= 4, mixtures >= 1, "
                              "0 <= label_dropout <= 1, dilation_cycle >= 1, attn_every >= 0, steps >= 1")
        if self.style not in ("", "embed"):
            raise ConfigError(f"prior: style must be 'embed' or empty, got '{self.style}'")
        if self.style and self.kind != "flow":
            raise ConfigError("prior: style works with kind 'flow' only")
        if self.guide_layers < 0 or self.guide_width < 1 or self.classifier_guidance < 0:
            raise ConfigError("prior: guide_layers >= 0, guide_width >= 1 and classifier_guidance >= 0 are needed")
        if (self.guide_layers or self.classifier_guidance) and self.kind != "flow":
            raise ConfigError("prior: a guide (guide_layers, classifier_guidance) works with kind 'flow' only")
        if self.classifier_guidance and not self.guide_layers:
            raise ConfigError("prior: classifier_guidance needs a guide (guide_layers > 0)")


class Prior(nn.Module):
    """What both kinds share: the latent standardization, the null label, and the interface
    ``loss(x, labels, mask)`` (training objective on standardized frames) and ``sample`` (see
    ``LatentPrior.sample``)."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        d = cfg.latent_dim
        self.register_buffer("latent_mean", torch.zeros(d))
        self.register_buffer("latent_std", torch.ones(d))
        self.register_buffer("latent_cov", torch.eye(d))
        self.guide: nn.Module | None = None  # a flow prior's label guide (flow_prior.py)

    @property
    def null_label(self) -> int:
        return self.config.num_labels

    def set_stats(self, frames: Tensor) -> None:
        """Set the standardization from raw latent frames (N, latent_dim)."""
        x = frames.double()
        self.latent_mean.copy_(x.mean(0))
        self.latent_std.copy_(x.std(0).clamp_min(1e-4))
        self.latent_cov.copy_(torch.cov(x.T).reshape(self.latent_cov.shape))

    def normalize(self, z: Tensor) -> Tensor:
        """Raw latents (..., latent_dim) -> standardized."""
        return (z - self.latent_mean) / self.latent_std

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.latent_std + self.latent_mean

    def check_classifier_guidance(self, weight: float) -> None:
        """Refuse a classifier-guidance weight above 0 for a prior without a guide."""
        if weight and self.guide is None:
            raise ValueError("classifier_guidance needs a prior with a guide (guide_layers > 0)")

    def guided_labels(self, labels: Tensor, guidance: float) -> Tensor | None:
        """``labels`` followed by as many null labels when ``guidance`` applies (not 1, some label set), else
        None."""
        if guidance == 1.0 or not bool((labels != self.null_label).any()):
            return None
        return torch.cat([labels, torch.full_like(labels, self.null_label)])


class Block(nn.Module):
    """Pre-norm transformer block whose attention can extend a key/value cache."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model), nn.GELU(),
                                 nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))

    def forward(self, h: Tensor, cache: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        b, n, d = h.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.qkv(self.ln1(h)).chunk(3, -1))
        past = 0 if cache is None else cache[0].shape[2]
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        mask = None
        if n > 1 and past:  # queries at positions past..past+n-1 see keys up to their own position
            keys, queries = torch.arange(past + n, device=h.device), torch.arange(past, past + n, device=h.device)
            mask = keys[None] <= queries[:, None]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=n > 1 and not past,
                                           dropout_p=self.dropout if self.training else 0.0)
        h = h + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.ln2(h)), (k, v)


class LatentPrior(Prior):
    """The "ar" prior: a causal transformer, one Gaussian mixture per frame."""

    def __init__(self, cfg: PriorConfig):
        super().__init__(cfg)
        d, k = cfg.latent_dim, cfg.mixtures
        self.label = nn.Embedding(cfg.num_labels + 1, cfg.d_model)
        self.inp = nn.Linear(d, cfg.d_model)
        self.pos = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, k + 2 * k * d)
        nn.init.normal_(self.pos.weight, std=0.02)

    def _run(self, tokens: Tensor, start: int, cache: Cache | None) -> tuple[Tensor, Cache]:
        h = tokens + self.pos(torch.arange(start, start + tokens.shape[1], device=tokens.device))
        new = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, None if cache is None else cache[i])
            new.append(kv)
        return self.ln(h), new

    def _params(self, h: Tensor) -> Params:
        k, d = self.config.mixtures, self.config.latent_dim
        out = self.head(h)
        shape = (*out.shape[:-1], k, d)
        return out[..., :k], out[..., k : k + k * d].reshape(shape), out[..., k + k * d :].reshape(shape).clamp(-7, 5)

    def forward(self, x: Tensor, labels: Tensor) -> Params:
        """Mixture parameters for each frame of standardized ``x`` (batch, frames, latent_dim) given the
        frames before it; ``labels`` (batch,) holds label indices (``null_label`` for none)."""
        tokens = torch.cat([self.label(labels)[:, None], self.inp(x[:, :-1])], 1)
        return self._params(self._run(tokens, 0, None)[0])

    def nll(self, x: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean negative log-likelihood in nats per dimension over frames where ``mask`` is true."""
        logits, mu, log_s = self(x, labels)
        z = (x[:, :, None] - mu) * torch.exp(-log_s)
        comp = -(0.5 * z**2 + log_s).sum(-1) - 0.5 * math.log(2 * math.pi) * x.shape[-1]
        frame = -torch.logsumexp(F.log_softmax(logits, -1) + comp, -1) / x.shape[-1]
        return frame.mean() if mask is None else (frame * mask).sum() / mask.sum().clamp_min(1)

    loss = nll

    def prefill(self, labels: Tensor, frames: Tensor) -> tuple[Tensor, Cache]:
        """Last hidden state and cache after the label token and standardized ``frames`` (batch, n, dim)."""
        tokens = torch.cat([self.label(labels)[:, None], self.inp(frames)], 1)
        h, cache = self._run(tokens, 0, None)
        return h[:, -1], cache

    def step(self, frame: Tensor, position: int, cache: Cache) -> tuple[Tensor, Cache]:
        """Hidden state after appending one standardized frame (batch, dim) as token ``position``."""
        h, cache = self._run(self.inp(frame)[:, None], position, cache)
        return h[:, 0], cache

    @torch.no_grad()
    def sample(self, frames: int, labels: Tensor, prompt: Tensor | None = None, temperature: float = 1.0,
               guidance: float = 1.0, generator: torch.Generator | None = None,
               classifier_guidance: float = 0.0, progress: Progress | None = None) -> Tensor:
        """``frames`` (>= 1) new standardized frames (batch, frames, dim) following ``prompt`` (batch, n, dim).

        ``guidance`` g mixes the conditional and unconditional mixture parameters as
        ``uncond + g * (cond - uncond)`` (1: conditional only). ``temperature`` T divides the mixture
        logits and multiplies the scales by sqrt(T). This kind has no guide: ``classifier_guidance`` must be 0.
        ``progress(done, frames)`` is called after each frame."""
        self.check_classifier_guidance(classifier_guidance)
        b, ctx = labels.shape[0], self.config.context
        both = self.guided_labels(labels, guidance)
        guided = both is not None
        if guided:
            labels = both
        seq = [] if prompt is None else list(prompt.unbind(1))
        if guided:
            seq = [torch.cat([f, f]) for f in seq]
        start = max(0, len(seq) - (ctx - 1))

        def prefill(start: int) -> tuple[Tensor, Cache]:
            empty = torch.zeros(labels.shape[0], 0, self.config.latent_dim)
            return self.prefill(labels, torch.stack(seq[start:], 1) if len(seq) > start else empty)

        h, cache = prefill(start)
        for i in range(frames):
            logits, mu, log_s = self._params(h)
            if guided:
                logits, mu, log_s = (u + guidance * (c - u) for c, u in (t.chunk(2) for t in (logits, mu, log_s)))
            x = _sample_mixture(logits, mu, log_s, temperature, generator)
            if guided:
                x = torch.cat([x, x])
            seq.append(x)
            if progress is not None:
                progress(i + 1, frames)
            if i == frames - 1:
                break
            if 1 + len(seq) - start > ctx:  # the next token would not fit: keep the last half
                start = len(seq) - ctx // 2
                h, cache = prefill(start)
            else:
                h, cache = self.step(x, len(seq) - start, cache)
        return torch.stack(seq[len(seq) - frames :], 1)[:b]


def _sample_mixture(logits: Tensor, mu: Tensor, log_s: Tensor, temperature: float,
                    generator: torch.Generator | None) -> Tensor:
    """One draw per row from a diagonal Gaussian mixture: (batch, K), (batch, K, D) -> (batch, D)."""
    probs = F.softmax(logits / temperature, -1)
    k = torch.multinomial(probs, 1, generator=generator)[:, 0]
    rows = torch.arange(len(k))
    noise = torch.randn(mu[rows, k].shape, generator=generator)
    return mu[rows, k] + math.sqrt(temperature) * torch.exp(log_s[rows, k]) * noise
