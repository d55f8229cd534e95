"""Latent caches for training the prior and the embedder: a corpus split encoded once to posterior means,
and batches of it.

A cache is one safetensors file: ``frames`` (all clips' frames, (N, latent_dim) float32), ``lengths``
(frames per clip) and ``labels`` (per clip, an index into the metadata's ``values``, -1 when missing);
its metadata (JSON strings) names the model's encoder_sha256 (and its whole weights' sha256), manifest,
split, label key and clip limit, so a cache made with another encoder or other settings is rebuilt rather
than reused; a model whose decoder alone changed reuses it. A cache written before the encoder hash is
reused when its model_sha256 equals the model's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import safe_open, save_file
from torch.utils.data import Sampler
from tqdm import tqdm

from audiovae import audio
from audiovae.data.manifest import read_manifest, spread
from audiovae.errors import AudioVAEError
from audiovae.files import replaced
from audiovae.inference import encode_means
from audiovae.registry import latents_mismatch


@dataclass
class LatentCache:
    frames: torch.Tensor  # (N, latent_dim)
    lengths: torch.Tensor  # (clips,)
    labels: list[str | None]  # per clip

    def clips(self) -> list[torch.Tensor]:
        return list(self.frames.split(self.lengths.tolist()))

    def subset(self, keep: list[int]) -> LatentCache:
        """The clips at indices ``keep``, in that order."""
        clips = self.clips()
        return LatentCache(torch.cat([clips[i] for i in keep]) if keep else self.frames[:0],
                           self.lengths[keep], [self.labels[i] for i in keep])

    @staticmethod
    def concat(caches: list[LatentCache]) -> LatentCache:
        if len(caches) == 1:
            return caches[0]
        return LatentCache(torch.cat([c.frames for c in caches]), torch.cat([c.lengths for c in caches]),
                           [lab for c in caches for lab in c.labels])


def cache_key(model, manifest: str | os.PathLike, split: str, speed: float = 1.0) -> dict[str, str]:
    """The metadata that makes a cache usable for ``model``'s latents of a manifest split (played ``speed``
    times faster), whatever its label key and clip limit."""
    return {"encoder_sha256": model.card.get("encoder_sha256", ""), "model_sha256": model.card.get("sha256", ""),
            "manifest": str(Path(manifest).resolve()), "split": split, "speed": repr(float(speed))}


def cache_meta(model, manifest: Path, split: str, label: str | None, max_clips: int,
               speed: float = 1.0) -> dict[str, str]:
    """The metadata of a cache of ``model``'s latents of a manifest split with this label key, clip limit and
    speed."""
    return cache_key(model, manifest, split, speed) | {"label": label or "", "max_clips": str(max_clips)}


def read_cache(path: str | os.PathLike, model, expect: dict[str, str]) -> LatentCache | None:
    """The cache at ``path`` when it exists, holds ``model``'s latents (same encoder) and its metadata holds the
    other values of ``expect``, else None."""
    path = Path(path)
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        stored = f.metadata() or {}
    stored = {"speed": "1.0"} | stored  # caches written before speeds were played at 1.0
    if any(stored.get(k) != v for k, v in expect.items() if not k.endswith("sha256")) or \
            latents_mismatch(model, stored, legacy_key="model_sha256") is not None:
        return None
    return load_cache(path)


def load_cache(path: str | os.PathLike) -> LatentCache:
    """The cache stored at ``path``, whatever its metadata."""
    with safe_open(str(path), "pt") as f:
        values = json.loads((f.metadata() or {})["values"])
        frames, lengths, index = (f.get_tensor(k) for k in ("frames", "lengths", "labels"))
    return LatentCache(frames, lengths, [values[i] if i >= 0 else None for i in index.tolist()])


def write_cache(path: str | os.PathLike, cache: LatentCache, meta: dict[str, str]) -> None:
    """Store ``cache`` at ``path`` (replaced at once, never half written) with the metadata ``meta``."""
    path = Path(path)
    values = sorted({v for v in cache.labels if v is not None})
    index = torch.tensor([values.index(v) if v is not None else -1 for v in cache.labels])
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as tmp:
        save_file({"frames": cache.frames.contiguous(), "lengths": cache.lengths, "labels": index}, tmp,
                  metadata=meta | {"values": json.dumps(values)})


def encode_split(model, manifest: str | os.PathLike, split: str, label: str | None, path: str | os.PathLike,
                 max_clips: int = 0, progress: bool = True, speed: float = 1.0) -> LatentCache:
    """Posterior means of a manifest split (at most ``max_clips`` spread over it; 0: all), cached at ``path``
    and reused while the model, manifest, split, label, limit and speed are the same. ``speed`` != 1 plays
    each clip that much faster (resampled: tempo and pitch together), as speed perturbation does."""
    manifest, path = Path(manifest), Path(path)
    meta = cache_meta(model, manifest, split, label, max_clips, speed)
    cached = read_cache(path, model, meta)
    if cached is not None:
        return cached
    entries, _ = read_manifest(manifest, split=split)
    if not entries:
        raise AudioVAEError(f"{manifest}: no entries in split '{split}'")
    if max_clips:
        entries = spread(entries, max_clips)
    clips, labels = [], []
    desc = f"encoding {split} latents" + (f" at speed {speed:g}" if speed != 1 else "")
    for e in tqdm(entries, desc=desc, disable=not progress, mininterval=2):
        x, _ = audio.load(e.audio_path(manifest.parent), sample_rate=round(model.sample_rate / speed), mono=True,
                          offset=e.offset, duration=e.duration)
        if x.shape[-1] * speed < model.hop_length:  # too short at speed 1: skipped at every speed
            continue
        x = np.pad(x, ((0, 0), (0, max(0, model.hop_length - x.shape[-1]))))
        clips.append(encode_means(model, torch.from_numpy(x))[0].T.float())
        labels.append(None if label is None or e.labels.get(label) is None else str(e.labels[label]))
    cache = LatentCache(torch.cat(clips), torch.tensor([len(c) for c in clips]), labels)
    write_cache(path, cache, meta)
    return cache


class LengthBatchSampler(Sampler[list[int]]):
    """Batches of clips of similar length (little padding), about ``batch_frames`` frames each: ``batches``
    drawn at random per epoch, reproducible from (seed, epoch), or with ``shuffle`` False every clip once."""

    def __init__(self, lengths: list[int], crop: int, batch_frames: int, batches: int, seed: int = 0,
                 shuffle: bool = True):
        self.order = np.argsort(lengths, kind="stable")
        self.crops = np.minimum(np.asarray(lengths)[self.order], crop)
        self.batch_frames, self.batches, self.seed, self.shuffle, self.epoch = batch_frames, batches, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches if self.shuffle else len(self._in_order())

    def _in_order(self) -> list[list[int]]:
        batches, start = [], 0
        while start < len(self.order):
            batches.append(self._batch(start))
            start += len(batches[-1])
        return batches

    def _batch(self, start: int) -> list[int]:
        size = max(1, self.batch_frames // int(self.crops[min(start, len(self.order) - 1)]))
        return self.order[start : start + size].tolist()

    def __iter__(self):
        if not self.shuffle:
            yield from self._in_order()
            return
        rng = np.random.default_rng((self.seed, self.epoch))
        for _ in range(self.batches):
            yield self._batch(int(rng.integers(0, len(self.order))))


class CropDataset(torch.utils.data.Dataset):
    """Item i: a crop of at most ``crop`` frames of clip i (random when ``train``, else its start) and its
    label index. Clips are standardized frames (frames, dim)."""

    def __init__(self, clips: list[torch.Tensor], labels: list[int], crop: int, train: bool, seed: int = 0):
        self.clips, self.labels, self.crop, self.train = clips, labels, crop, train
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        c = self.clips[i]
        start = int(self.rng.integers(0, len(c) - self.crop + 1)) if self.train and len(c) > self.crop else 0
        return c[start : start + self.crop], self.labels[i]


def collate(items: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    """Pad crops to the longest: ``x`` (batch, frames, dim), ``mask`` (batch, frames), ``label`` (batch,)."""
    n = max(len(x) for x, _ in items)
    x = torch.zeros(len(items), n, items[0][0].shape[-1])
    mask = torch.zeros(len(items), n)
    for i, (c, _) in enumerate(items):
        x[i, : len(c)], mask[i, : len(c)] = c, 1.0
    return {"x": x, "mask": mask, "label": torch.tensor([lab for _, lab in items])}
