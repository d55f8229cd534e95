"""``audiovae train-embedder``: train the embedding head (``models/embedder.py``) on cached posterior means
of a corpus's train split, without labels.

SimCLR: two random crops of ``min_crop``..``max_crop`` seconds of one clip, each lightly augmented in the
standardized latent space (a random scale and offset per dimension, noise per frame, one masked span), are
pulled together through a projection head, the other clips of the batch pushed apart (NT-Xent). The valid
split gives the same loss on fixed crops. Latents come from ``RUN/latents/`` (encoded once) or from a
``latents`` folder of caches made for the same weights and manifest (e.g. a prior run's; read only);
``extra_manifests`` mix other corpora in (e.g. speech into music24k's head, so that it separates them).
``speeds`` add speed-perturbed versions of the train clips (resampled: tempo and pitch together, each encoded
once): each view is a crop of one version drawn at random, so that a clip played faster or slower is still the
same clip to the head.
``export_embedder`` stores the head, without its projection, next to the VAE's weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler

from audiovae.config import load_yaml, to_dict
from audiovae.errors import AudioVAEError
from audiovae.models.embedder import Embedder, EmbedderConfig, nt_xent
from audiovae.registry import load, save_embedder
from audiovae.train.common import LatentTrainConfig, read_run_checkpoint, train, warmup_cosine
from audiovae.train.latents import LatentCache, cache_key, collate, encode_split, read_cache


@dataclass
class AugmentConfig:
    """Augmentations of each view, in standardized latent units."""

    scale: float = 0.1  # per clip and dimension: multiply by 1 + N(0, scale^2)
    shift: float = 0.1  # per clip and dimension: add N(0, shift^2)
    noise: float = 0.2  # per frame: add N(0, noise^2)
    time_mask: float = 0.2  # one span of up to this fraction of the crop set to the mean


@dataclass
class EmbedTrainConfig(LatentTrainConfig):
    name: str = "embedder"
    model: str = "speech16k"  # the VAE: a shipped name or an exported folder
    manifest: str = "corpora/speech16k/manifest.jsonl"
    latents: str | None = None  # folder of train / valid caches to reuse (default: encode into RUN/latents)
    max_clips: int = 0  # clips encoded per split when encoding (0: all)
    extra_manifests: list[str] = field(default_factory=list)  # other corpora mixed in (encoded into RUN/latents)
    extra_max_clips: int = 0  # clips per split of each extra corpus (0: all)
    speeds: list[float] = field(default_factory=list)  # speed-perturbed versions of the train clips (besides 1.0)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    min_crop: float = 1.0  # seconds
    max_crop: float = 3.0
    batch_size: int = 128  # clips per batch, two views each
    temperature: float = 0.1
    projection: int = 128  # output size of the projection head (training only)


def load_embed_config(path) -> EmbedTrainConfig:
    return load_yaml(EmbedTrainConfig, path)


def augment(x: Tensor, mask: Tensor, cfg: AugmentConfig) -> Tensor:
    """Standardized crops (batch, dim, frames) with their mask (batch, frames), augmented."""
    (b, d, n), dev = x.shape, x.device
    x = x * (1 + cfg.scale * torch.randn(b, d, 1, device=dev)) + cfg.shift * torch.randn(b, d, 1, device=dev)
    x = x + cfg.noise * torch.randn_like(x)
    lengths = mask.sum(1)
    span = (torch.rand(b, device=dev) * cfg.time_mask * lengths).long()
    start = (torch.rand(b, device=dev) * (lengths - span + 1)).long()
    t = torch.arange(n, device=dev)
    cut = (t >= start[:, None]) & (t < (start + span)[:, None])
    return x.masked_fill(cut[:, None], 0.0)


class PairDataset(torch.utils.data.Dataset):
    """Item i: two crops (frames, dim) of clip i, each of a random length in [min_crop, max_crop] frames (at
    most the clip) at a random start; random when ``train``, else fixed by (seed, i). With ``versions`` (other
    versions of every clip, e.g. speed-perturbed, one list each), each crop is of a version drawn at random."""

    def __init__(self, clips: list[Tensor], min_crop: int, max_crop: int, train: bool, seed: int = 0,
                 versions: list[list[Tensor]] = ()):
        self.versions = [clips, *versions]
        if any(len(v) != len(clips) for v in versions):
            raise AudioVAEError(f"every version needs {len(clips)} clips, got {[len(v) for v in versions]}")
        self.min_crop, self.max_crop, self.train, self.seed = min_crop, max_crop, train, seed
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.versions[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        rng = self.rng if self.train else np.random.default_rng((self.seed, i))

        def crop() -> Tensor:
            c = self.versions[int(rng.integers(len(self.versions)))][i]
            n = min(len(c), int(rng.integers(self.min_crop, self.max_crop + 1)))
            start = int(rng.integers(0, len(c) - n + 1))
            return c[start : start + n]

        return crop(), crop()


def collate_pairs(items: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Each view padded to its longest crop: ``a`` / ``b`` (batch, dim, frames), ``mask_a`` / ``mask_b``."""
    out = {}
    for view, key in ((0, "a"), (1, "b")):
        batch = collate([(pair[view], 0) for pair in items])
        out[key], out[f"mask_{key}"] = batch["x"].transpose(1, 2), batch["mask"].bool()
    return out


class EmbedModule(L.LightningModule):
    def __init__(self, cfg: EmbedTrainConfig, vae_sha256: str, encoder_sha256: str):
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"config": to_dict(cfg), "vae_sha256": vae_sha256,
                                   "encoder_sha256": encoder_sha256})
        self.embedder = Embedder(cfg.embedder)
        d = cfg.embedder.dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, cfg.projection))

    def loss(self, batch: dict[str, Tensor], train: bool) -> Tensor:
        e = self.embedder
        views = []
        for key in ("a", "b"):
            x, mask = e.standardize(batch[key]), batch[f"mask_{key}"]
            views.append(self.head(e.pool(augment(x, mask, self.cfg.augment) if train else x, mask)))
        return nt_xent(*views, self.cfg.temperature)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch, True)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["a"]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch, False), batch_size=len(batch["a"]))

    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.AdamW(self.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        return [opt], [warmup_cosine(opt, c)]


def _split(cfg: EmbedTrainConfig, model, run_dir: Path, split: str, speed: float, progress: bool) -> LatentCache:
    """A split's latents (the corpus's, then each extra corpus's) played at ``speed``: encoded into
    RUN/latents, or at speed 1 read from ``cfg.latents`` when given."""
    tag = split if speed == 1 else f"{split}@{speed:g}"
    if cfg.latents is None or speed != 1:
        cache = encode_split(model, cfg.manifest, split, None, run_dir / "latents" / f"{tag}.safetensors",
                             cfg.max_clips, progress, speed)
    else:
        path = Path(cfg.latents) / f"{split}.safetensors"
        cache = read_cache(path, model, cache_key(model, cfg.manifest, split))
        if cache is None:
            raise AudioVAEError(f"{path}: no latent cache of the {split} split of {cfg.manifest} for model "
                                f"'{model.name}' (leave out --latents to encode one)")
    extra = [encode_split(model, m, split, None, run_dir / "latents" / f"extra{i}-{tag}.safetensors",
                          cfg.extra_max_clips, progress, speed) for i, m in enumerate(cfg.extra_manifests)]
    return LatentCache.concat([cache, *extra])


def _caches(cfg: EmbedTrainConfig, model, run_dir: Path, progress: bool) -> dict[str, LatentCache]:
    """The train and valid caches, and the train split at each of ``cfg.speeds`` (under ``train@SPEED``)."""
    caches = {s: _split(cfg, model, run_dir, s, 1.0, progress) for s in ("train", "valid")}
    for speed in cfg.speeds:
        sped = caches[f"train@{speed:g}"] = _split(cfg, model, run_dir, "train", speed, progress)
        if len(sped.lengths) != len(caches["train"].lengths):
            raise AudioVAEError(f"{cfg.manifest}: {len(sped.lengths)} train clips at speed {speed:g}, "
                                f"{len(caches['train'].lengths)} in the train cache (--latents made with another "
                                f"max_clips?)")
    return caches


def _prepare(cfg: EmbedTrainConfig, run_dir: Path, progress: bool):
    """(module holding the latent statistics, train and valid loaders); latent_dim comes from the data."""
    model = load(cfg.model)
    caches = _caches(cfg, model, run_dir, progress)
    cfg = replace(cfg, embedder=replace(cfg.embedder, latent_dim=model.latent_dim))
    embedder = Embedder(cfg.embedder)
    embedder.set_stats(caches["train"].frames)
    rate = model.sample_rate / model.hop_length
    crops = max(1, round(cfg.min_crop * rate)), max(1, round(cfg.max_crop * rate))
    if crops[0] > crops[1]:
        raise AudioVAEError(f"min_crop {cfg.min_crop} s is longer than max_crop {cfg.max_crop} s")
    train = PairDataset(caches["train"].clips(), *crops, train=True, seed=cfg.seed,
                        versions=[caches[f"train@{speed:g}"].clips() for speed in cfg.speeds])
    valid = PairDataset(caches["valid"].clips(), *crops, train=False, seed=cfg.seed)
    sampler = RandomSampler(train, replacement=True, num_samples=cfg.batch_size * cfg.val_every,
                            generator=torch.Generator().manual_seed(cfg.seed))
    loaders = (DataLoader(train, cfg.batch_size, sampler=sampler, collate_fn=collate_pairs, drop_last=True),
               DataLoader(valid, cfg.batch_size, collate_fn=collate_pairs))
    module = EmbedModule(cfg, model.card.get("sha256", ""), model.card.get("encoder_sha256", ""))
    module.embedder.load_state_dict(embedder.state_dict())
    return module, *loaders


def train_embedder(cfg: EmbedTrainConfig, run_dir: Path, **run) -> Path:
    """Train (or resume) an embedding head into ``run_dir``; returns the path of the last checkpoint. ``run``:
    the options of ``common.train`` (resume, max_minutes, accelerator, devices, threads, progress)."""
    return train(cfg, run_dir, _prepare, "val/loss", **run)


def export_embedder(ckpt: str | os.PathLike, model_name: str | os.PathLike) -> Path:
    """Store an embedder checkpoint's head with the VAE it was trained for; returns the weights path."""
    cfg, _, state, steps, model = read_run_checkpoint(ckpt, "embedder", EmbedTrainConfig, model_name)
    embedder = Embedder(cfg.embedder)
    embedder.load_state_dict(state)
    return save_embedder(model, embedder, {"steps": steps, "corpus": " + ".join([cfg.manifest, *cfg.extra_manifests])})
