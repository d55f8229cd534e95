"""``audiovae train-prior``: fit the latent prior on a corpus's cached posterior means with Lightning.

The train and valid splits are encoded once (``train/latents.py``) into ``RUN/latents/``; labels with
fewer than ``min_label_clips`` train clips are folded into the null label. Checkpoints, CSV logs and
resume work as for the VAE; ``export_prior`` stores the result next to the VAE's weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from audiovae.config import load_yaml, to_dict
from audiovae.errors import AudioVAEError
from audiovae.models.flow_prior import make_prior
from audiovae.models.prior import Prior, PriorConfig
from audiovae.registry import load, load_embedder, load_prior, save_prior
from audiovae.train.common import LatentTrainConfig, read_run_checkpoint, train, warmup_cosine
from audiovae.train.latents import CropDataset, LengthBatchSampler, collate, encode_split


@dataclass
class PriorTrainConfig(LatentTrainConfig):
    name: str = "prior"
    model: str = "speech16k"  # the VAE: a shipped name or an exported folder
    manifest: str = "corpora/speech16k/manifest.jsonl"
    label: str | None = None  # manifest label key to condition on
    min_label_clips: int = 50  # rarer label values train as the null label
    max_clips: int = 0  # clips encoded per split (0: all)
    init: str | None = None  # start from the prior stored with this model (name or folder), e.g. to fine-tune it
    prior: PriorConfig = field(default_factory=PriorConfig)
    batch_frames: int = 2048  # frames per batch (batches group clips of similar length)
    train_flow: bool = True  # false: only the guide trains (prior.guide_layers), e.g. added to a shipped prior
    guide_attack: float = 0.0  # > 0: the guide trains on inputs moved against it by RMS distance guide_attack * t


def load_prior_config(path) -> PriorTrainConfig:
    return load_yaml(PriorTrainConfig, path)


def metric(cfg: PriorTrainConfig) -> str:
    """What the prior's loss is: "nll" (nats per dimension) for "ar", "fm" (flow-matching error) for "flow"."""
    return "nll" if cfg.prior.kind == "ar" else "fm"


def monitor(cfg: PriorTrainConfig) -> str:
    """The validation value that picks the best checkpoint: the prior's loss, or the guide's when only it trains."""
    return f"val/{metric(cfg) if cfg.train_flow else 'guide'}"


class ClipStyle(nn.Module):
    """The style of clips for a prior with ``style``: the VAE's learned embedding of their standardized frames
    (batch, frames, dim) where ``mask`` is true; frozen."""

    def __init__(self, prior: Prior, embedder: nn.Module):
        super().__init__()
        self.embedder = embedder.eval().requires_grad_(False)
        self.register_buffer("latent_mean", prior.latent_mean.clone())
        self.register_buffer("latent_std", prior.latent_std.clone())

    def train(self, mode: bool = True) -> ClipStyle:
        return super().train(False)  # stays in eval mode inside a training module

    @torch.no_grad()
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.embedder((x * self.latent_std + self.latent_mean).transpose(1, 2), mask)


class PriorModule(L.LightningModule):
    def __init__(self, cfg: PriorTrainConfig, labels: list[str], vae_sha256: str, encoder_sha256: str = "",
                 style: ClipStyle | None = None):
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"config": to_dict(cfg), "labels": labels, "vae_sha256": vae_sha256,
                                   "encoder_sha256": encoder_sha256})
        self.prior = make_prior(cfg.prior)
        self.style = style

    def _loss(self, batch, labels: Tensor) -> Tensor:
        x, mask = batch["x"], batch["mask"]
        styled = {} if self.style is None else {"style": self.style(x, mask)}
        return self.prior.loss(x, labels, mask, **styled)

    def _guide(self, batch, split: str) -> Tensor | None:
        """The guide's loss (logged with its accuracy); None without a guide or a labelled clip in the batch."""
        if self.prior.guide is None:
            return None
        attack = self.cfg.guide_attack if split == "train" else 0.0
        out = self.prior.guide_loss(batch["x"], batch["label"], batch["mask"], attack)
        if out is None:
            return None
        n = int((batch["label"] != self.prior.null_label).sum())
        self.log(f"{split}/guide", out[0], prog_bar=split == "train", batch_size=n)
        self.log(f"{split}/guide_acc", out[1], batch_size=n)
        return out[0]

    def training_step(self, batch, batch_idx):
        """The flow's loss plus the guide's; None (the batch is skipped) when only the guide trains and no clip
        of the batch has a label."""
        losses = [self._guide(batch, "train")]
        if self.cfg.train_flow:
            labels = batch["label"]
            drop = torch.rand(labels.shape, device=labels.device) < self.cfg.prior.label_dropout
            losses.append(self._loss(batch, torch.where(drop, self.prior.null_label, labels)))
            self.log(f"train/{metric(self.cfg)}", losses[-1], prog_bar=True, batch_size=len(labels))
        losses = [v for v in losses if v is not None]
        return sum(losses) if losses else None

    def validation_step(self, batch, batch_idx):
        n = batch["mask"].sum()
        with torch.random.fork_rng(devices=[]):  # the same noise and times at every validation
            torch.manual_seed(batch_idx)
            self._guide(batch, "val")
            if self.cfg.train_flow:
                self.log(f"val/{metric(self.cfg)}", self._loss(batch, batch["label"]), batch_size=int(n))

    def configure_optimizers(self):
        c = self.cfg
        params = self.prior.parameters() if c.train_flow else self.prior.guide.parameters()
        opt = torch.optim.AdamW(params, lr=c.lr, betas=(0.9, 0.98), weight_decay=c.weight_decay)
        return [opt], [warmup_cosine(opt, c)]


def _prepare(cfg: PriorTrainConfig, run_dir: Path, progress: bool):
    """(module holding the latent statistics, train and valid loaders); latent_dim and num_labels come from the
    data."""
    if not cfg.train_flow and not (cfg.prior.guide_layers and cfg.init):
        raise AudioVAEError("train_flow: false trains only a guide (prior.guide_layers) added to the prior of `init`")
    if cfg.guide_attack < 0 or (cfg.guide_attack and not cfg.prior.guide_layers):
        raise AudioVAEError(f"guide_attack: a radius >= 0 for a guide (prior.guide_layers), got {cfg.guide_attack:g}")
    if cfg.prior.guide_layers and not cfg.label:
        raise AudioVAEError("prior.guide_layers: a guide learns labels; set `label` (the manifest key)")
    model = load(cfg.model)
    caches = {s: encode_split(model, cfg.manifest, s, cfg.label, run_dir / "latents" / f"{s}.safetensors",
                              cfg.max_clips, progress) for s in ("train", "valid")}
    counts: dict[str, int] = {}
    for v in caches["train"].labels:
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    vocab = sorted(v for v, n in counts.items() if n >= cfg.min_label_clips) if cfg.label else []
    embedder = load_embedder(model)[0] if cfg.prior.style else None
    cfg = replace(cfg, prior=replace(cfg.prior, latent_dim=model.latent_dim, num_labels=len(vocab),
                                     style_dim=embedder.config.dim if embedder is not None else 0))
    prior = make_prior(cfg.prior)
    if cfg.init:
        _start_from(prior, cfg.init, vocab)
    if cfg.train_flow:  # this run's own latents: an init prior of another encoder was standardized for other ones
        prior.set_stats(caches["train"].frames)
    labels = {s: [vocab.index(v) if v in vocab else len(vocab) for v in cache.labels] for s, cache in caches.items()}
    if not cfg.train_flow:  # the guide learns from labelled clips only
        caches = {s: cache.subset([i for i, v in enumerate(labels[s]) if v < len(vocab)])
                  for s, cache in caches.items()}
        labels = {s: [v for v in labels[s] if v < len(vocab)] for s in caches}
    clips = {s: [prior.normalize(c) for c in cache.clips()] for s, cache in caches.items()}
    style = None if embedder is None or not cfg.train_flow else ClipStyle(prior, embedder)
    if style is not None:  # a guide-only run keeps the style Gaussians of `init`
        prior.set_styles(torch.cat([style(c[None]) for c in clips["train"]]), labels["train"])
    loaders = []
    for split, cache in caches.items():
        train = split == "train"
        sampler = LengthBatchSampler(cache.lengths.tolist(), cfg.prior.context, cfg.batch_frames,
                                     batches=cfg.val_every if train else 0, seed=cfg.seed, shuffle=train)
        loaders.append(DataLoader(CropDataset(clips[split], labels[split], cfg.prior.context, train, cfg.seed),
                                  batch_sampler=sampler, collate_fn=collate))
    module = PriorModule(cfg, vocab, model.card.get("sha256", ""), model.card.get("encoder_sha256", ""), style)
    module.prior.load_state_dict(prior.state_dict())
    return module, *loaders


def _start_from(prior, name: str, vocab: list[str]) -> None:
    """Load the weights and latent statistics of the prior stored with model ``name`` into ``prior``: the same
    architecture and label vocabulary (``prior`` may add a style, which starts at zero, or a guide), else an error
    naming what differs."""
    start, meta = load_prior(load(name))
    if list(meta.get("labels") or []) != vocab:
        raise AudioVAEError(f"init: the prior of '{name}' has labels {meta.get('labels')}, this run {vocab}")
    mine, theirs = prior.state_dict(), start.state_dict()
    added = {k for k in set(mine) - set(theirs) if k.startswith(("style", "guide."))}
    wrong = sorted((set(mine) ^ set(theirs)) - added)
    wrong += [k for k, v in theirs.items() if k in mine and v.shape != mine[k].shape]
    if wrong:
        raise AudioVAEError(f"init: the prior of '{name}' has another architecture ({', '.join(wrong[:3])} differ)")
    prior.load_state_dict(theirs, strict=not added)


def train_prior(cfg: PriorTrainConfig, run_dir: Path, **run) -> Path:
    """Train (or resume) a latent prior into ``run_dir``; returns the path of the last checkpoint. ``run``: the
    options of ``common.train`` (resume, max_minutes, accelerator, devices, threads, progress)."""
    return train(cfg, run_dir, _prepare, monitor(cfg), **run)


def export_prior(ckpt: str | os.PathLike, model_name: str | os.PathLike, guidance: float | None = None,
                 classifier_guidance: float | None = None) -> Path:
    """Store a prior checkpoint's weights with the VAE it was trained for, with ``guidance`` and
    ``classifier_guidance`` (when given) as its defaults for sampling; returns the weights path."""
    cfg, hp, state, steps, model = read_run_checkpoint(ckpt, "prior", PriorTrainConfig, model_name)
    given = {"guidance": guidance, "classifier_guidance": classifier_guidance}
    prior = make_prior(replace(cfg.prior, **{k: v for k, v in given.items() if v is not None}))
    prior.load_state_dict(state)
    return save_prior(model, prior, {"labels": hp["labels"], "label_key": cfg.label, "steps": steps,
                                     "corpus": cfg.manifest})
