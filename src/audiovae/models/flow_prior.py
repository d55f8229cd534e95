"""The "flow" latent prior: a non-autoregressive flow-matching (rectified flow) network over whole sequences of
standardized latent frames.

Training draws noise x0 ~ N(0, I), a time t in (0, 1) (logit-normal) and regresses the velocity of the straight
path x_t = (1 - t) x0 + t x1 towards a crop x1 of real frames: ||v(x_t, t, label) - (x1 - x0)||^2. Sampling
integrates dx/dt = v from noise (scaled by ``temperature``) with ``steps`` Euler steps, the same for a seed.
The network sees no absolute position (dilated convolutions, then attention without position embeddings), so
it samples any number of frames. Time and label condition every block through adaptive layer norms (scale,
shift and gate, zero at init); the null label and classifier-free ``guidance`` work as for the "ar" prior.
Continuation is inpainting: at each step the prompt's frames are set to their point on the path from the
same noise, so the new frames are sampled jointly with, and consistent with, the prompt.

With ``style``, a labelled clip also conditions on its learned embedding (the VAE's embedding head applied to
its frames, computed by the trainer): a vector for the whole clip, which fixes what stays constant over it (an
instrument's timbre, a recording). Sampling draws it from a Gaussian fitted to the embeddings of the label's
training clips (``set_styles``), so that a label picks one style per clip instead of leaving every frame to
settle it; the null label has no style.

With ``guide_layers``, a small noise-aware classifier (``LabelGuide``) learns the label of frames x_t on the path
at any time t. Sampling with ``classifier_guidance`` w adds w (1 - t) n grad log p(label | x_t) to the velocity of
n frames (classifier guidance: the classifier's score, per frame, fading out towards the end of the path, where
what the clip is has been decided), on top of classifier-free guidance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import count, pairwise

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from audiovae.models.prior import LatentPrior, Prior, PriorConfig, Progress


def time_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features (batch, dim) of times t (batch,) in [0, 1]."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = 1000.0 * t[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], -1)


class Modulated(nn.Module):
    """Layer norm whose scale and shift come from the conditioning vector, with a residual gate."""

    def __init__(self, d: int, parts: int):
        super().__init__()
        self.ln, self.parts = nn.LayerNorm(d, elementwise_affine=False), parts
        self.mod = nn.Linear(d, 3 * parts * d)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, cond: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(scale, shift, gate) per part, each (batch, 1, d)."""
        chunks = self.mod(cond)[:, None].chunk(3 * self.parts, -1)
        return [tuple(chunks[i : i + 3]) for i in range(0, len(chunks), 3)]

    def norm(self, h: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        return self.ln(h) * (1 + scale) + shift


class ConvBlock(nn.Module):
    """Modulated norm, a dilated convolution (kernel 3) to 2 d channels, GELU, a 1x1 convolution, gated residual."""

    def __init__(self, d: int, dilation: int):
        super().__init__()
        self.mod = Modulated(d, 1)
        self.conv = nn.Conv1d(d, 2 * d, 3, padding=dilation, dilation=dilation)
        self.out = nn.Conv1d(2 * d, d, 1)

    def forward(self, h: Tensor, cond: Tensor, mask: Tensor | None) -> Tensor:
        ((scale, shift, gate),) = self.mod(cond)
        y = self.mod.norm(h, scale, shift)
        if mask is not None:  # padding reads as the zeros past the ends of a sequence
            y = y * mask[..., None]
        return h + gate * self.out(F.gelu(self.conv(y.transpose(1, 2)))).transpose(1, 2)


class AttentionBlock(nn.Module):
    """Non-causal self-attention and an MLP, each behind a modulated norm and a gated residual."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.heads
        self.mod = Modulated(d, 2)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.ff_mult * d), nn.GELU(), nn.Linear(cfg.ff_mult * d, d))

    def forward(self, h: Tensor, cond: Tensor, mask: Tensor | None) -> Tensor:
        (s1, b1, g1), (s2, b2, g2) = self.mod(cond)
        b, n, d = h.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(self.mod.norm(h, s1, b1)).chunk(3, -1))
        keys = None if mask is None else mask[:, None, None].bool()
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
        h = h + g1 * self.proj(a.transpose(1, 2).reshape(b, n, d))
        return h + g2 * self.mlp(self.mod.norm(h, s2, b2))


def frame_weights(h: Tensor, mask: Tensor | None) -> Tensor:
    """(batch, frames, 1) weights of ``h``'s frames: 1 on real frames (``mask`` true, or all without one), else 0."""
    return torch.ones_like(h[..., :1]) if mask is None else mask[..., None].to(h.dtype)


class LabelGuide(nn.Module):
    """A classifier of the label from standardized frames x_t (batch, frames, dim) at flow times t (batch,):
    time-modulated dilated convolution blocks, then the mean and standard deviation over (``mask``ed) frames."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        d = cfg.guide_width
        self.inp = nn.Linear(cfg.latent_dim, d)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(ConvBlock(d, 2 ** (i % cfg.dilation_cycle)) for i in range(cfg.guide_layers))
        self.out = nn.Linear(2 * d, cfg.num_labels)

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
        """Label logits (batch, num_labels)."""
        cond = F.silu(self.time(time_features(t, self.inp.out_features)))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, cond, mask)
        w = frame_weights(h, mask)
        n = w.sum(1).clamp_min(1)
        mean = (h * w).sum(1) / n
        std = (((h - mean[:, None]) ** 2 * w).sum(1) / n + 1e-5).sqrt()
        return self.out(torch.cat([mean, std], -1))


class FlowPrior(Prior):
    def __init__(self, cfg: PriorConfig):
        super().__init__(cfg)
        d = cfg.d_model
        self.label = nn.Embedding(cfg.num_labels + 1, d)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.inp = nn.Linear(cfg.latent_dim, d)
        blocks: list[nn.Module] = []
        for i in range(cfg.layers):
            blocks.append(ConvBlock(d, 2 ** (i % cfg.dilation_cycle)))
            if cfg.attn_every and (i + 1) % cfg.attn_every == 0:
                blocks.append(AttentionBlock(cfg))
        self.blocks = nn.ModuleList(blocks)
        self.final = Modulated(d, 1)
        self.head = nn.Linear(d, cfg.latent_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if cfg.style:  # zero at init: a prior trained without style starts out unchanged
            self.style = nn.Linear(cfg.style_dim, d)
            nn.init.zeros_(self.style.weight)
            nn.init.zeros_(self.style.bias)
            self.register_buffer("style_mean", torch.zeros(cfg.num_labels, cfg.style_dim))
            self.register_buffer("style_scale", torch.zeros(cfg.num_labels, cfg.style_dim, cfg.style_dim))
        self.guide = LabelGuide(cfg) if cfg.guide_layers else None

    def set_styles(self, styles: Tensor, labels: list[int]) -> None:
        """Fit each label's style Gaussian (shrunk covariance, Ledoit-Wolf) to the styles (clips, style_dim) of
        its training clips; ``labels``: their indices (the null label for unlabelled clips)."""
        from sklearn.covariance import LedoitWolf

        styles = styles.double().cpu().numpy()
        for k in range(self.config.num_labels):
            mine = styles[[i for i, lab in enumerate(labels) if lab == k]]
            if len(mine) < 2:
                raise ValueError(f"style: label {k} has {len(mine)} clips; fitting its style needs 2 or more")
            fit = LedoitWolf().fit(mine)
            self.style_mean[k] = torch.from_numpy(fit.location_)
            var, axes = torch.linalg.eigh(torch.from_numpy(fit.covariance_))
            self.style_scale[k] = axes * var.clamp_min(0).sqrt() @ axes.T  # its square root

    def draw_style(self, labels: Tensor, generator: torch.Generator | None) -> Tensor | None:
        """A style (batch, style_dim) per label from its Gaussian (zeros for the null label); None without style."""
        if not self.config.style:
            return None
        k = labels.clamp_max(self.config.num_labels - 1)
        eps = torch.randn(labels.shape[0], self.style_mean.shape[1], 1, generator=generator)
        drawn = self.style_mean[k] + (self.style_scale[k] @ eps)[..., 0]
        return drawn * (labels != self.null_label)[:, None]

    def forward(self, x: Tensor, t: Tensor, labels: Tensor, mask: Tensor | None = None,
                style: Tensor | None = None) -> Tensor:
        """Velocity (batch, frames, latent_dim) at standardized ``x`` on the path at times ``t`` (batch,);
        ``mask`` (batch, frames) marks real frames: the others change nothing at real frames. ``style``
        (batch, style_dim) conditions the items with a label (not the null label)."""
        cond = self.time(time_features(t, self.config.d_model)) + self.label(labels)
        if style is not None:
            cond = cond + self.style(style) * (labels != self.null_label)[:, None]
        cond = F.silu(cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, cond, mask)
        ((scale, shift, _),) = self.final(cond)
        return self.head(self.final.norm(h, scale, shift))

    def loss(self, x: Tensor, labels: Tensor, mask: Tensor | None = None, style: Tensor | None = None) -> Tensor:
        """Flow-matching loss (mean squared velocity error per dimension) on frames where ``mask`` is true;
        ``style``: the clips' styles, for a prior with style."""
        t = torch.sigmoid(torch.randn(x.shape[0], device=x.device))
        x0 = torch.randn_like(x)
        err = ((self(x0 + t[:, None, None] * (x - x0), t, labels, mask, style) - (x - x0)) ** 2).mean(-1)
        return err.mean() if mask is None else (err * mask).sum() / mask.sum().clamp_min(1)

    def guide_loss(self, x: Tensor, labels: Tensor, mask: Tensor | None = None, attack: float = 0.0
                   ) -> tuple[Tensor, Tensor] | None:
        """(cross-entropy, accuracy) of the guide on the labelled items of standardized frames ``x`` moved to
        uniform random times on the path; None when no item has a label. ``attack`` > 0: each item is first moved
        along the gradient that raises its loss, by RMS distance ``attack`` t (one-step adversarial training; the
        data's part of x_t is t x)."""
        keep = labels != self.null_label
        if not bool(keep.any()):
            return None
        x, labels = x[keep], labels[keep]
        mask = None if mask is None else mask[keep]
        t = torch.rand(x.shape[0], device=x.device)
        x0 = torch.randn_like(x)
        x = x0 + t[:, None, None] * (x - x0)
        if attack:
            x = x + self._attack(x, t, labels, mask, attack * t)
        logits = self.guide(x, t, mask)
        return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean()

    def _attack(self, x: Tensor, t: Tensor, labels: Tensor, mask: Tensor | None, radius: Tensor) -> Tensor:
        """The step of RMS ``radius`` (batch,) per item (over its real frames) along the gradient of the guide's loss.
        Classifiers trained on such steps have gradients that follow the data more than brittle features, which
        is what guidance needs (Kawar et al. 2022, robust classifier guidance)."""
        grad = -self._guide_grad(x, t, labels, mask)
        w = frame_weights(x, mask)
        rms = ((grad * w) ** 2).sum((1, 2), keepdim=True) / (w.sum((1, 2), keepdim=True) * x.shape[-1])
        return radius[:, None, None] * grad * w / rms.sqrt().clamp_min(1e-12)

    def _guide_velocity(self, x: Tensor, t: float, labels: Tensor, weight: float) -> Tensor:
        """weight (1 - t) frames grad_x log p(labels | x_t), zero for the null label. The guide pools over frames,
        so its gradient per frame shrinks as 1 / frames; the factor frames keeps the push per frame independent
        of the length."""
        return weight * (1 - t) * x.shape[1] * self._guide_grad(x, torch.full((x.shape[0],), t), labels)

    def _guide_grad(self, x: Tensor, t: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
        """grad_x of the sum over items of log p(label | x_t) under the guide, zero for the null label."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logp = torch.log_softmax(self.guide(x, t, mask), -1)
            picked = logp.gather(1, labels.clamp_max(self.config.num_labels - 1)[:, None])[:, 0]
            (grad,) = torch.autograd.grad((picked * (labels != self.null_label)).sum(), x)
        return grad

    @torch.no_grad()
    def sample(self, frames: int, labels: Tensor, prompt: Tensor | None = None, temperature: float = 1.0,
               guidance: float = 1.0, generator: torch.Generator | None = None,
               classifier_guidance: float = 0.0, progress: Progress | None = None) -> Tensor:
        """``frames`` (>= 1) new standardized frames (batch, frames, dim) following ``prompt`` (batch, n, dim), of
        which the last ``context`` frames condition them. ``guidance`` g mixes the velocities as
        ``uncond + g * (cond - uncond)``; ``temperature`` scales the initial noise. Up to 4 x ``context`` frames
        (prompt included) are sampled at once; longer clips window by window, each continuing the last
        ``context`` frames before it, so that the cost stays linear in the length. With ``style``, one style is
        drawn per clip (before the noise) and holds for all its windows. ``classifier_guidance``: the weight of
        the guide's gradient (see the module's docstring; a prior without a guide refuses a weight above 0).
        ``progress(done, total)`` is called after each Euler step (``steps`` per window)."""
        self.check_classifier_guidance(classifier_guidance)
        style = self.draw_style(labels, generator)
        window, context, out = 4 * self.config.context, self.config.context, []
        prompt = None if prompt is None or not prompt.shape[1] else prompt[:, -context:]
        sizes, left, known = [], frames, 0 if prompt is None else prompt.shape[1]
        while left > 0:  # the new frames of each window
            sizes.append(min(left, window - known))
            left, known = left - sizes[-1], min(context, known + sizes[-1])
        done, total = count(1), len(sizes) * self.config.steps
        step = None if progress is None else lambda: progress(next(done), total)
        for new in sizes:
            out.append(self._sample_window(new, labels, prompt, temperature, guidance, generator, style,
                                           classifier_guidance, step))
            prompt = torch.cat([p for p in (prompt, out[-1]) if p is not None], 1)[:, -context:]
        return torch.cat(out, 1)

    def _sample_window(self, frames: int, labels: Tensor, prompt: Tensor | None, temperature: float,
                       guidance: float, generator: torch.Generator | None, style: Tensor | None,
                       classifier_guidance: float, step: Callable[[], None] | None) -> Tensor:
        b, d = labels.shape[0], self.config.latent_dim
        n = 0 if prompt is None else prompt.shape[1]
        noise = temperature * torch.randn(b, n + frames, d, generator=generator)
        both = self.guided_labels(labels, guidance)
        x, times = noise, torch.linspace(0, 1, self.config.steps + 1)
        for t, t_next in pairwise(times.tolist()):
            if prompt is not None:
                x = torch.cat([noise[:, :n] + t * (prompt - noise[:, :n]), x[:, n:]], 1)
            if both is None:
                v = self(x, torch.full((b,), t), labels, style=style)
            else:
                cond, uncond = self(torch.cat([x, x]), torch.full((2 * b,), t), both,
                                    style=None if style is None else torch.cat([style, style])).chunk(2)
                v = uncond + guidance * (cond - uncond)
            if classifier_guidance:
                v = v + self._guide_velocity(x, t, labels, classifier_guidance)
            x = x + (t_next - t) * v
            if step is not None:
                step()
        return x[:, n:]


def make_prior(cfg: PriorConfig) -> Prior:
    """The prior of ``cfg.kind``: a ``FlowPrior`` or an autoregressive ``LatentPrior``."""
    return FlowPrior(cfg) if cfg.kind == "flow" else LatentPrior(cfg)
