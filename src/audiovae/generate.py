"""Generation with a VAE and its latent prior: sampling (optionally per label), continuation of a prompt,
interpolation between two clips, latent arithmetic, and timbre transfer between two models.

All outputs are float32 (channels, samples) at the model's sample rate, peak-limited to ``limiter.CEILING_DB``
(a decoder can render a sampled latent louder than full scale). Prompts at any rate are resampled; multichannel
prompts are mixed to mono (the prior models one latent sequence). The VAE encodes and decodes under
``torch.inference_mode()`` (``inference.py``); the prior samples under ``no_grad``, since classifier guidance
differentiates its guide. ``progress(done, total)`` callbacks count the prior's sampling steps (frames
for "ar", integration steps for "flow") or, for ``interpolate``, the clips.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from audiovae.errors import AudioVAEError
from audiovae.inference import decode_frames, encode_means, to_model_rate
from audiovae.limiter import limit
from audiovae.models.prior import Progress
from audiovae.registry import load, load_prior

MAX_SECONDS = 120.0


class GenerateError(AudioVAEError):
    """Bad generation request: unknown label, length out of range, too short a prompt."""


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between two tensors seen as flat vectors (linear when nearly parallel)."""
    cos = torch.dot(a.flatten(), b.flatten()) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-4:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def render(model, z: torch.Tensor, length: int) -> np.ndarray:
    """The output stage of every generation path: latent frames (channels, dim, frames) decoded to ``length``
    samples, peak-limited (``limiter.limit``), float32."""
    return limit(decode_frames(model, z, length).numpy().astype(np.float32), model.sample_rate)


class Generator:
    """A VAE and the latent prior stored with it (``audiovae train-prior --export``)."""

    def __init__(self, model: str | os.PathLike = "speech16k"):
        self.model = load(model)
        self.prior, meta = load_prior(self.model)
        self.labels: list[str] = list(meta.get("labels") or [])
        self.label_key: str | None = meta.get("label_key")

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def frames(self, seconds: float) -> int:
        """Latent frames for ``seconds`` of audio, refusing lengths out of (0, MAX_SECONDS]."""
        if not 0 < seconds <= MAX_SECONDS:
            raise GenerateError(f"seconds must be > 0 and <= {MAX_SECONDS:g}, got {seconds:g}")
        return max(1, round(seconds * self.sample_rate / self.model.hop_length))

    def label_index(self, label: str | None) -> int:
        """Index of ``label`` in the prior's vocabulary; None is the null label (unconditional)."""
        if label is None:
            return self.prior.null_label
        if label not in self.labels:
            known = ", ".join(self.labels) or "none: this prior is unconditional"
            raise GenerateError(f"unknown label '{label}' for model '{self.model.name}' (known: {known})")
        return self.labels.index(label)

    def encode(self, wave: np.ndarray, sample_rate: int) -> torch.Tensor:
        """Standardized latent frames (1, samples // hop, dim) of a signal's mono mix at the model's rate."""
        x = to_model_rate(self.model, wave.mean(0, keepdims=True), sample_rate)
        if x.shape[-1] < self.model.hop_length:
            raise GenerateError(f"prompt shorter than one latent frame ({self.model.hop_length} samples at "
                                f"{self.sample_rate} Hz)")
        frames = x.shape[-1] // self.model.hop_length  # frames inside the signal, not its zero padding
        return self.prior.normalize(encode_means(self.model, x)[..., :frames].transpose(1, 2))

    def decode(self, x: torch.Tensor) -> np.ndarray:
        """Standardized frames (1, frames, dim) -> audio (1, frames * hop) float32, peak-limited."""
        z = self.prior.denormalize(x).transpose(1, 2)
        return render(self.model, z, z.shape[-1] * self.model.hop_length)

    def _sample(self, frames: int, label: str | None, prompt: torch.Tensor | None, temperature: float,
                guidance: float | None, seed: int, classifier_guidance: float | None = None,
                progress: Progress | None = None) -> torch.Tensor:
        """``guidance`` and ``classifier_guidance`` None: the prior's own (its config's)."""
        if temperature <= 0:
            raise GenerateError(f"temperature must be > 0, got {temperature:g}")
        cfg = self.prior.config
        weight = cfg.classifier_guidance if classifier_guidance is None else classifier_guidance
        if weight < 0:
            raise GenerateError(f"classifier guidance must be >= 0, got {weight:g}")
        if weight and self.prior.guide is None:
            raise GenerateError(f"classifier guidance needs a prior with a guide; model '{self.model.name}' has none "
                                "(train one: prior.guide_layers in a train-prior config)")
        labels = torch.tensor([self.label_index(label)])
        gen = torch.Generator().manual_seed(seed)
        guidance = cfg.guidance if guidance is None else guidance
        return self.prior.sample(frames, labels, prompt, temperature, guidance, gen, weight, progress)

    def sample(self, seconds: float = 4.0, label: str | None = None, temperature: float = 1.0,
               guidance: float | None = None, seed: int = 0, classifier_guidance: float | None = None,
               progress: Progress | None = None) -> np.ndarray:
        """A new clip (1, samples); the same arguments give the same audio. ``guidance`` and
        ``classifier_guidance`` None: the prior's."""
        return self.decode(self._sample(self.frames(seconds), label, None, temperature, guidance, seed,
                                        classifier_guidance, progress))

    def continue_audio(self, wave: np.ndarray, sample_rate: int, seconds: float, label: str | None = None,
                       temperature: float = 1.0, guidance: float | None = None, seed: int = 0,
                       classifier_guidance: float | None = None, progress: Progress | None = None) -> np.ndarray:
        """The prompt's reconstruction followed by ``seconds`` of continuation (1, samples) at the model's rate."""
        prompt = self.encode(wave, sample_rate)
        new = self._sample(self.frames(seconds), label, prompt, temperature, guidance, seed, classifier_guidance,
                           progress)
        return self.decode(torch.cat([prompt, new], 1))

    def interpolate(self, wave_a: np.ndarray, sr_a: int, wave_b: np.ndarray, sr_b: int, steps: int = 8,
                    progress: Progress | None = None) -> list[np.ndarray]:
        """``steps`` clips morphing from A to B (first and last: their reconstructions), by spherical
        interpolation of their standardized latent sequences, cut to the shorter one."""
        if steps < 2:
            raise GenerateError(f"steps must be at least 2, got {steps}")
        a, b = self.encode(wave_a, sr_a), self.encode(wave_b, sr_b)
        n = min(a.shape[1], b.shape[1])
        a, b = a[:, :n], b[:, :n]
        clips = []
        for i in range(steps):
            clips.append(self.decode(slerp(a, b, i / (steps - 1))))
            if progress is not None:
                progress(i + 1, steps)
        return clips

    def arithmetic(self, wave: np.ndarray, sample_rate: int, minus: tuple[np.ndarray, int],
                   plus: tuple[np.ndarray, int], scale: float = 1.0) -> np.ndarray:
        """Latent arithmetic: ``wave`` - ``minus`` + ``plus`` (each a (wave, rate) pair), where the two take part
        through their time-averaged latents, times ``scale``. The clip's frame-by-frame content stays and its
        average character (voice, recording, timbre: what a time average holds) moves from ``minus``'s to
        ``plus``'s, e.g. minus a clip of A's speaker, plus one of another. (1, samples) like ``wave``."""
        a = self.encode(wave, sample_rate)
        b, c = (self.encode(*clip).mean(1, keepdim=True) for clip in (minus, plus))
        return self.decode(a + scale * (c - b))


def _principal_axes(prior) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, standard deviations, axes as columns) of a prior's latent statistics, by decreasing variance;
    each axis is signed so that its largest coordinate is positive."""
    var, axes = torch.linalg.eigh(prior.latent_cov.double())
    var, axes = var.flip(0).clamp_min(0), axes.flip(1)
    sign = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    return prior.latent_mean.double(), var.sqrt(), axes * sign


def transfer(wave: np.ndarray, sample_rate: int, source: str | os.PathLike | Generator = "speech16k",
             target: str | os.PathLike | Generator = "music24k") -> np.ndarray:
    """Timbre transfer, RAVE-style: encode with ``source``, decode with ``target`` (model names, folders or
    Generators); returns (channels, samples) at the target's rate.

    The two latent spaces share no coordinates, so the source latents are whitened along their principal
    axes (from the source prior's latent statistics) and recoloured along the target's, axis k to axis k by
    decreasing variance (extra target axes stay at their mean). What carries over is how the content moves
    along the source's main axes of variation (its timing and dynamics), rendered along the target's; the
    pairing of axes is a heuristic, not a learned correspondence. With one model for both it is the
    identity (a reconstruction). Both models need a prior (for those statistics)."""
    src, dst = (g if isinstance(g, Generator) else Generator(g) for g in (source, target))
    x = to_model_rate(src.model, wave, sample_rate)
    if x.shape[-1] < src.model.hop_length:
        raise GenerateError(f"input shorter than one latent frame of model '{src.model.name}'")
    z = encode_means(src.model, x).transpose(1, 2).double()  # (channels, frames, source dim)
    (m_s, s_s, v_s), (m_t, s_t, v_t) = _principal_axes(src.prior), _principal_axes(dst.prior)
    k = min(len(s_s), len(s_t))
    w = ((z - m_s) @ v_s[:, :k]) / s_s[:k].clamp_min(1e-8)
    z_t = (m_t + (w * s_t[:k]) @ v_t[:, :k].T).float().transpose(1, 2)
    n = round(x.shape[-1] * dst.sample_rate / src.sample_rate)
    rate_ratio = (dst.sample_rate / dst.model.hop_length) / (src.sample_rate / src.model.hop_length)
    if rate_ratio != 1:  # other latent frame rates: resample the sequence in time
        frames = max(dst.model.padded_length(n) // dst.model.hop_length, round(z_t.shape[-1] * rate_ratio))
        z_t = torch.nn.functional.interpolate(z_t, size=frames, mode="linear", align_corners=False)
    return render(dst.model, z_t, n)
