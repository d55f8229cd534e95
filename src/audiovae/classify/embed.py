"""Embeddings of audio on VAE posteriors (and an MFCC baseline), and the labelled clips they are taken of.

An embedding is a set of statistics over time of the posterior (``POOLINGS``: mean and std of the means,
optionally of log sigma, quantiles, a short-window max / min), or the output of the model's learned embedding
head (pooling ``learned``: ``models/embedder.py``, stored with the model by ``audiovae train-embedder``),
averaged over channels. Silence is embedded like any other signal (it has a well-defined, nearly constant
latent) and gets a label like any other clip. A file shorter than one latent frame is refused with an error
naming it. Intermediate encoder layers are not used: callers see the VAE only through ``encode`` (DESIGN.md),
and their statistics did no better than the posterior's (experiments/encoder-layers/probe.py). A probe can
also sit on a copy of the learned head fine-tuned with its labels (``train/head.py``).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.fft import dct
from torch.nn import functional as F

from audiovae import audio
from audiovae.data.manifest import read_manifest
from audiovae.errors import AudioVAEError
from audiovae.inference import BLOCK_SECONDS, to_model_rate
from audiovae.models.blocks import mel_filterbank
from audiovae.registry import load_embedder

FEATURE_KINDS = ("vae", "mfcc")
PARENT_DIR = "parent-dir"
# Poolings over time of the posterior, per latent dim: mean / std of the means (mu), mean / std of log sigma,
# quantiles of mu, max / min of a MAX_WINDOW_S moving average of mu. A model's default is ``best_pooling``:
# the learned head where it has one, else DEFAULT_POOLING, the best hand-made pooling on the valid split of
# `audiovae bench classify` (docs/bench/classify_pooling_valid.md).
POOLINGS = {
    "mean-std": ("mean", "std"),
    "mean-std-sigma": ("mean", "std", "sigma", "sigma_std"),
    "quantiles": ("mean", "std", "q10", "q50", "q90"),
    "mean-std-max": ("mean", "std", "max", "min"),
    "all": ("mean", "std", "sigma", "sigma_std", "q10", "q50", "q90", "max", "min"),
}
DEFAULT_POOLING = "all"
LEARNED = "learned"  # the model's learned embedding head, when it has one
_EMBEDDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loaded heads, per model object
MAX_WINDOW_S = 0.2
MFCC_RATE, MFCC_FFT, MFCC_HOP, MFCC_MELS, MFCC_COEFFS = 16000, 512, 160, 40, 20


class ClassifyError(AudioVAEError):
    """Bad input to embedding or classification: short file, empty data, too few examples, wrong dimension."""


@torch.inference_mode()
def posterior_frames(model, x) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log standard deviations, each (channels, latent_dim, frames) float64, of
    (channels, samples) at the model's rate: streamed in blocks (bounded memory) and padded like
    ``inference.encode_means``, so the means are the codec's frames."""
    n = x.shape[-1]
    total = model.padded_length(n)
    x = F.pad(x, (0, total - n))
    enc, block = model.stream_encoder(), int(BLOCK_SECONDS * model.sample_rate)
    posts = [enc.posterior(x[:, i : i + block]) for i in range(0, total, block)]
    mu = np.concatenate([p.mean.double().numpy() for p in posts], axis=-1)
    return mu, np.concatenate([p.std.clamp_min(1e-8).log().double().numpy() for p in posts], axis=-1)


def _smoothed_max(mu: np.ndarray, width: int) -> np.ndarray:
    """Max over time of a ``width``-frame moving average, (channels, dims, frames) -> (channels, dims)."""
    width = max(1, min(width, mu.shape[-1]))
    c = np.cumsum(np.pad(mu, ((0, 0), (0, 0), (1, 0))), axis=-1)
    return ((c[..., width:] - c[..., :-width]) / width).max(-1)


def _pool(mu: np.ndarray, logsig: np.ndarray, pooling: str, frame_rate: float) -> np.ndarray:
    parts = {
        "mean": lambda: mu.mean(-1), "std": lambda: mu.std(-1),
        "sigma": lambda: logsig.mean(-1), "sigma_std": lambda: logsig.std(-1),
        "q10": lambda: np.quantile(mu, 0.1, axis=-1), "q50": lambda: np.quantile(mu, 0.5, axis=-1),
        "q90": lambda: np.quantile(mu, 0.9, axis=-1),
        "max": lambda: _smoothed_max(mu, round(MAX_WINDOW_S * frame_rate)),
        "min": lambda: -_smoothed_max(-mu, round(MAX_WINDOW_S * frame_rate)),
    }
    return np.concatenate([parts[p]() for p in POOLINGS[pooling]], axis=-1).mean(0).astype(np.float32)


def learned_embedder(model):
    """``model``'s learned embedding head, loaded once per model object; an error naming how to train one
    when it has none."""
    if model not in _EMBEDDERS:
        _EMBEDDERS[model] = load_embedder(model)[0]
    return _EMBEDDERS[model]


def model_poolings(model) -> tuple[str, ...]:
    """The poolings ``model`` offers: every hand-made one, and ``learned`` when it has an embedding head."""
    return (*POOLINGS, LEARNED) if model.card.get("embed") else tuple(POOLINGS)


def best_pooling(model) -> str:
    """The model's best embedding, its default: its learned head when it has one (on the valid split of the
    classification bench it beats every hand-made pooling on every task, e.g. instrument family 0.881 against
    0.722 for ``all`` with all labels), else ``DEFAULT_POOLING``."""
    return LEARNED if LEARNED in model_poolings(model) else DEFAULT_POOLING


def embedding_dim(model, pooling: str | None = None) -> int:
    """Dimension of ``model``'s embeddings under ``pooling`` (None: its ``best_pooling``)."""
    pooling = pooling or best_pooling(model)
    check_pooling(pooling, model)
    return learned_embedder(model).config.dim if pooling == LEARNED else len(POOLINGS[pooling]) * model.latent_dim


def check_pooling(pooling: str, model=None) -> None:
    """Refuse an unknown pooling, and ``learned`` for a ``model`` without an embedding head."""
    if pooling not in (*POOLINGS, LEARNED):
        raise ClassifyError(f"unknown pooling '{pooling}' (use one of {', '.join((*POOLINGS, LEARNED))})")
    if pooling == LEARNED and model is not None:
        learned_embedder(model)


def model_meta(model, ref: str, pooling: str) -> dict:
    """What a classifier records about the model ``ref`` (as the user named it) and its pooling: the model's name
    and hashes, ``model`` the shipped name it loads by itself (None for a folder: no paths in a classifier),
    the pooling and, for ``learned``, the head's sha256."""
    from audiovae.registry import list_models

    return {"model": ref if ref in list_models() else None, "model_name": model.name,
            "model_sha256": model.card.get("sha256"), "encoder_sha256": model.card.get("encoder_sha256"),
            "pooling": pooling} | ({"embed_sha256": model.card["embed"]["sha256"]} if pooling == LEARNED else {})


def head_embedding(embedder, mu: np.ndarray) -> np.ndarray:
    """The embedding by ``embedder`` (a learned head) of posterior means (channels, latent_dim, frames), averaged
    over channels."""
    with torch.inference_mode():
        return embedder(torch.from_numpy(mu).float()).mean(0).numpy()


def posterior(model, wave: np.ndarray, sample_rate: int, name: str = "audio") -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log sigmas (channels, latent_dim, frames) of a signal at any rate; an error naming
    ``name`` when it is shorter than one latent frame."""
    x = to_model_rate(model, wave, sample_rate)
    if x.shape[-1] < model.hop_length:
        raise ClassifyError(f"{name}: shorter than one latent frame ({x.shape[-1]} samples at {model.sample_rate} Hz, "
                            f"need {model.hop_length})")
    return posterior_frames(model, x)


def embed_many(model, wave: np.ndarray, sample_rate: int, poolings, name: str = "audio",
               embedder=None) -> dict[str, np.ndarray]:
    """Embeddings of one signal under several poolings, from one pass of the encoder; ``embedder`` replaces the
    model's learned head for ``learned`` (a fine-tuned classifier's own head)."""
    for p in poolings:
        check_pooling(p, model if embedder is None else None)
    return _pooled(model, *posterior(model, wave, sample_rate, name), poolings, embedder)


def _pooled(model, mu: np.ndarray, logsig: np.ndarray, poolings, embedder=None) -> dict[str, np.ndarray]:
    rate = model.sample_rate / model.hop_length
    head = (learned_embedder(model) if embedder is None else embedder) if LEARNED in poolings else None
    return {p: head_embedding(head, mu) if p == LEARNED else _pool(mu, logsig, p, rate) for p in poolings}


def embed(model, wave: np.ndarray, sample_rate: int, name: str = "audio", pooling: str | None = None) -> np.ndarray:
    """(channels, samples) float32 -> (``embedding_dim``,) float32: statistics over frames of the posterior (see
    ``POOLINGS``) or the learned head's embedding, averaged over channels; ``pooling`` None: the model's
    ``best_pooling``."""
    pooling = pooling or best_pooling(model)
    return embed_many(model, wave, sample_rate, (pooling,), name)[pooling]

def mfcc_features(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """The MFCC baseline: 20 MFCCs and their deltas at 16 kHz (mono mix), mean and std over time -> (80,)."""
    audio.validate(wave)
    x = audio.resample(wave.mean(0, keepdims=True).astype(np.float32), sample_rate, MFCC_RATE)[0]
    x = np.pad(x, (0, max(0, MFCC_FFT - len(x))))
    n = 1 + (len(x) - MFCC_FFT) // MFCC_HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, MFCC_FFT)[:: MFCC_HOP][:n] * np.hanning(MFCC_FFT)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    mel = power @ mel_filterbank(MFCC_RATE, MFCC_FFT, MFCC_MELS).numpy().T
    c = dct(np.log(mel + 1e-10), type=2, norm="ortho", axis=-1)[:, :MFCC_COEFFS]
    d = np.gradient(c, axis=0) if len(c) > 1 else np.zeros_like(c)
    f = np.concatenate([c, d], axis=1)
    return np.concatenate([f.mean(0), f.std(0)]).astype(np.float32)


def features(kind: str, model, wave: np.ndarray, sample_rate: int, name: str = "audio",
             pooling: str | None = None) -> np.ndarray:
    """Embedding of one signal: ``vae`` (needs ``model``; ``pooling`` as in ``embed``) or ``mfcc``."""
    if kind == "vae":
        return embed(model, wave, sample_rate, name, pooling)
    if kind == "mfcc":
        return mfcc_features(wave, sample_rate)
    raise ClassifyError(f"unknown feature kind '{kind}' (use {' or '.join(FEATURE_KINDS)})")


@dataclass
class Item:
    """One clip to embed: a file, optionally a segment of it, and its label (None when unknown).

    ``rate``: resample to this rate before any feature (a benchmark uses it to remove a sample-rate cue)."""

    path: Path
    offset: float = 0.0
    duration: float | None = None
    label: str | None = None
    rate: int | None = None

    def load(self) -> tuple[np.ndarray, int]:
        """(channels, samples) float32 and its rate (``rate`` when set)."""
        x, sr = audio.load(self.path, offset=self.offset, duration=self.duration)
        if self.rate is not None and self.rate != sr:
            x, sr = audio.resample(x, sr, self.rate), self.rate
        return x, sr


def manifest_items(manifest: str | os.PathLike, label: str, split: str, source: str | None = None,
                   fixed: str | None = None) -> list[Item]:
    """A manifest's ``split`` clips having the label key ``label`` (all clips when ``fixed`` is given: they are
    all labelled ``fixed``), optionally only those whose source starts with ``source``."""
    p = Path(manifest)
    entries, _ = read_manifest(p, split=split)
    return [Item(e.audio_path(p.parent), e.offset, e.duration, fixed if fixed is not None else str(e.labels[label]))
            for e in entries if (fixed is not None or e.labels.get(label) is not None)
            and (source is None or e.source.startswith(source))]


def labelled_items(data: str | os.PathLike, label: str, split: str = "train") -> list[Item]:
    """Clips with labels: a manifest's ``split`` entries having ``label``, or a folder's audio files
    labelled by their parent folder's name (``label`` must then be ``parent-dir``)."""
    p = Path(data)
    if p.is_dir():
        if label != PARENT_DIR:
            raise ClassifyError(f"{p}: a folder gives labels from folder names: use --label {PARENT_DIR}")
        items = [Item(f, label=f.parent.name) for f in audio.find_audio_files(p)]
    else:
        items = manifest_items(p, label, split)
    if not items:
        raise ClassifyError(f"{p}: no labelled audio (label '{label}', split '{split}')")
    return items


MEANS = "means"  # embed_items_multi's key for each clip's posterior means (a list: their lengths differ)


def embed_items_multi(items: list[Item], model, poolings=(), mfcc: bool = False,
                      progress: Callable[[int, int], None] | None = None, skip_errors: bool = True,
                      embedder=None, means: bool = False) -> tuple[dict, list[int], list[str]]:
    """Features of many clips in one pass: {"vae:POOLING": (N, D), "mfcc": (N, 80)} for each pooling asked
    (needs ``model``; ``embedder``: see ``embed_many``) and MFCC when ``mfcc``, and with ``means`` each clip's
    posterior means under ``MEANS``; the indices of the embedded items; messages of the skipped ones.

    With ``skip_errors`` False the first unreadable or too-short file raises its error."""
    for p in poolings:
        check_pooling(p, model if embedder is None else None)
    rows: dict[str, list[np.ndarray]] = {f"vae:{p}": [] for p in poolings} | ({"mfcc": []} if mfcc else {}) \
        | ({MEANS: []} if means else {})
    kept, failed = [], []
    for i, it in enumerate(items):
        try:
            x, sr = it.load()
            got = {}
            if poolings or means:
                mu, logsig = posterior(model, x, sr, str(it.path))
                got = {f"vae:{p}": v for p, v in _pooled(model, mu, logsig, poolings, embedder).items()}
                got |= {MEANS: mu.astype(np.float32)} if means else {}
            if mfcc:
                got["mfcc"] = mfcc_features(x, sr)
        except AudioVAEError as e:
            if not skip_errors:
                raise
            failed.append(str(e))
        else:
            for key, v in got.items():
                rows[key].append(v)
            kept.append(i)
        if progress is not None:
            progress(i + 1, len(items))
    return {k: v if k == MEANS else np.stack(v) if v else np.zeros((0, 0), np.float32) for k, v in rows.items()}, \
        kept, failed


def embed_items(items: list[Item], kind: str, model=None, progress: Callable[[int, int], None] | None = None,
                skip_errors: bool = True, pooling: str | None = None, embedder=None
                ) -> tuple[np.ndarray, list[int], list[str]]:
    """(features (N, D) float32, indices of the embedded items, one-line messages of the skipped ones)
    for ``kind`` vae (with ``pooling``, None: the model's ``best_pooling``; ``embedder``: see ``embed_many``) or
    mfcc; for ``MEANS`` a list of posterior means instead of features. With ``skip_errors`` False the first bad
    file raises."""
    if kind not in (*FEATURE_KINDS, MEANS):
        raise ClassifyError(f"unknown feature kind '{kind}' (use {' or '.join(FEATURE_KINDS)})")
    vae = kind == "vae"
    pooling = pooling or (best_pooling(model) if vae else None)
    out, kept, failed = embed_items_multi(items, model, (pooling,) if vae else (), mfcc=kind == "mfcc",
                                          progress=progress, skip_errors=skip_errors, embedder=embedder,
                                          means=kind == MEANS)
    return out[f"vae:{pooling}" if vae else kind], kept, failed

def balanced_subset(items: list[Item], per_class: int, seed: int = 0) -> list[Item]:
    """Up to ``per_class`` random items of each label, in a stable order."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by.setdefault(it.label, []).append(i)
    keep = sorted(j for idx in by.values() for j in rng.permutation(idx)[:per_class].tolist())
    return [items[j] for j in keep]


