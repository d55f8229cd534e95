"""``audiovae train-prior``: fit the latent prior on a corpus's cached posterior means with Lightning.

The train and valid splits are encoded once (``train/latents.py``) into ``RUN/latents/``; labels with
fewer than ``min_label_clips`` train clips are folded into the null label. Checkpoints, CSV logs and
resume work as for the VAE; ``export_prior`` stores the result next to the VAE's weights.
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from audiovae.config import from_dict, load_yaml, to_dict
from audiovae.errors import AudioVAEError
from audiovae.models.prior import LatentPrior, PriorConfig
from audiovae.train.latents import CropDataset, LengthBatchSampler, collate, encode_split


@dataclass
class PriorTrainConfig:
    name: str = "prior"
    model: str = "speech16k"  # the VAE: a shipped name or an exported folder
    manifest: str = "corpora/speech16k/manifest.jsonl"
    label: str | None = None  # manifest label key to condition on
    min_label_clips: int = 50  # rarer label values train as the null label
    max_clips: int = 0  # clips encoded per split (0: all)
    prior: PriorConfig = field(default_factory=PriorConfig)
    batch_frames: int = 2048  # frames per batch (batches group clips of similar length)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    max_steps: int = 6000  # the learning rate follows a cosine to 10% at max_steps
    grad_clip: float = 1.0
    val_every: int = 500
    log_every: int = 50
    seed: int = 0


def load_prior_config(path) -> PriorTrainConfig:
    return load_yaml(PriorTrainConfig, path)


class PriorModule(L.LightningModule):
    def __init__(self, cfg: PriorTrainConfig, labels: list[str], vae_sha256: str, encoder_sha256: str = ""):
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"config": to_dict(cfg), "labels": labels, "vae_sha256": vae_sha256,
                                   "encoder_sha256": encoder_sha256})
        self.prior = LatentPrior(cfg.prior)

    def training_step(self, batch, batch_idx):
        labels = batch["label"]
        drop = torch.rand(labels.shape, device=labels.device) < self.cfg.prior.label_dropout
        loss = self.prior.nll(batch["x"], torch.where(drop, self.prior.null_label, labels), batch["mask"])
        self.log("train/nll", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx):
        n = batch["mask"].sum()
        self.log("val/nll", self.prior.nll(batch["x"], batch["label"], batch["mask"]), batch_size=int(n))

    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.AdamW(self.prior.parameters(), lr=c.lr, betas=(0.9, 0.98), weight_decay=c.weight_decay)

        def factor(step: int) -> float:
            if step < c.warmup_steps:
                return (step + 1) / c.warmup_steps
            t = min(1.0, (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps))
            return 0.1 + 0.45 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return [opt], [{"scheduler": sched, "interval": "step"}]


def _data(cfg: PriorTrainConfig, run_dir: Path, progress: bool):
    """(config with latent_dim / num_labels set, label vocabulary, the VAE's sha256 and encoder_sha256, train
    and valid loaders, raw train frames for the statistics)."""
    from audiovae.registry import load

    model = load(cfg.model)
    caches = {s: encode_split(model, cfg.manifest, s, cfg.label, run_dir / "latents" / f"{s}.safetensors",
                              cfg.max_clips, progress) for s in ("train", "valid")}
    counts: dict[str, int] = {}
    for v in caches["train"].labels:
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    vocab = sorted(v for v, n in counts.items() if n >= cfg.min_label_clips) if cfg.label else []
    cfg = replace(cfg, prior=replace(cfg.prior, latent_dim=model.latent_dim, num_labels=len(vocab)))
    prior = LatentPrior(cfg.prior)
    prior.set_stats(caches["train"].frames)
    loaders = []
    for split, cache in caches.items():
        train = split == "train"
        clips = [prior.normalize(c) for c in cache.clips()]
        labels = [vocab.index(v) if v in vocab else len(vocab) for v in cache.labels]
        sampler = LengthBatchSampler(cache.lengths.tolist(), cfg.prior.context, cfg.batch_frames,
                                     batches=cfg.val_every if train else 0, seed=cfg.seed, shuffle=train)
        loaders.append(DataLoader(CropDataset(clips, labels, cfg.prior.context, train, cfg.seed),
                                  batch_sampler=sampler, collate_fn=collate))
    return cfg, vocab, (model.card.get("sha256", ""), model.card.get("encoder_sha256", "")), loaders, prior


def train_prior(cfg: PriorTrainConfig, run_dir: Path, *, resume: bool = False, max_minutes: float | None = None,
                accelerator: str = "cpu", devices: int | str = 1, threads: int | None = None,
                progress: bool = True) -> Path:
    """Train (or resume) a latent prior into ``run_dir``; returns the path of the last checkpoint."""
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.exists():
        raise AudioVAEError(f"{last}: nothing to resume (no last checkpoint in {run_dir})")
    if not resume and last.exists():
        raise AudioVAEError(f"{run_dir}: already holds a run (use --resume, or another --run-dir)")
    cfg, vocab, (sha, encoder), (train_dl, valid_dl), prior = _data(cfg, run_dir, progress)
    module = PriorModule(cfg, vocab, sha, encoder)
    module.prior.load_state_dict(prior.state_dict())
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, max_steps=cfg.max_steps,
        max_time=datetime.timedelta(minutes=max_minutes) if max_minutes else None,
        val_check_interval=cfg.val_every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        gradient_clip_val=cfg.grad_clip, use_distributed_sampler=False,
        logger=CSVLogger(run_dir, name="logs"), log_every_n_steps=cfg.log_every,
        callbacks=[ModelCheckpoint(run_dir / "checkpoints", filename="step{step:07d}", auto_insert_metric_name=False,
                                   every_n_train_steps=cfg.val_every, save_last=True, save_top_k=1,
                                   monitor="val/nll", enable_version_counter=False)]  # resume reads last.ckpt
        + ([TQDMProgressBar(refresh_rate=50 if os.isatty(2) else 500)] if progress else []),
        enable_progress_bar=progress, default_root_dir=run_dir,
    )
    trainer.fit(module, train_dl, valid_dl, ckpt_path=str(last) if resume else None)
    return last


def export_prior(ckpt: str | os.PathLike, model_name: str | os.PathLike) -> Path:
    """Store a prior checkpoint's weights with the VAE it was trained for (or one with the same encoder);
    returns the weights path. A checkpoint from before the encoder hash needs the very weights it was
    trained with."""
    from audiovae.registry import ModelLoadError, latents_mismatch, load, save_prior

    p = Path(ckpt)
    if not p.is_file():
        raise AudioVAEError(f"{p}: no such checkpoint")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
        hp = ck["hyper_parameters"]
        cfg = from_dict(PriorTrainConfig, hp["config"])
        state = {k[len("prior."):]: v for k, v in ck["state_dict"].items() if k.startswith("prior.")}
    except (KeyError, TypeError, RuntimeError, EOFError) as e:
        raise AudioVAEError(f"{p}: not an audiovae prior checkpoint ({str(e).splitlines()[0]})") from None
    model = load(model_name)
    bad = latents_mismatch(model, hp)
    if bad:
        raise ModelLoadError(f"{p}: not a prior for model '{model.name}', trained on the latents of {bad}; "
                             "retrain the prior for these weights")
    prior = LatentPrior(cfg.prior)
    prior.load_state_dict(state)
    return save_prior(model, prior, {"labels": hp["labels"], "label_key": cfg.label, "steps": int(ck["global_step"]),
                                     "corpus": cfg.manifest})
