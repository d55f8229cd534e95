"""What the trainers of models over cached latents (the prior, the embedder) share: run folders that
resume, a warmup + cosine learning rate, the Lightning trainer, and reading their checkpoints back."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from audiovae.config import from_dict
from audiovae.errors import AudioVAEError
from audiovae.registry import ModelLoadError, latents_mismatch, load


@dataclass
class LatentTrainConfig:
    """The optimization and checkpoint schedule of a trainer over cached latents (AdamW)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    max_steps: int = 6000  # the learning rate follows a cosine to 10% at max_steps
    grad_clip: float = 1.0
    val_every: int = 500  # steps between validations and checkpoints
    log_every: int = 50
    seed: int = 0


def start_run(run_dir: Path, resume: bool, seed: int, threads: int | None) -> Path:
    """Set threads and seeds and check ``run_dir`` against ``resume``; returns the path of its last checkpoint."""
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(seed, workers=True, verbose=False)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.exists():
        raise AudioVAEError(f"{last}: nothing to resume (no last checkpoint in {run_dir})")
    if not resume and last.exists():
        raise AudioVAEError(f"{run_dir}: already holds a run (use --resume, or another --run-dir)")
    return last


def warmup_cosine(opt: torch.optim.Optimizer, cfg: LatentTrainConfig) -> dict:
    """A per-step schedule: linear warmup, then a cosine down to 10% of the learning rate at ``max_steps``."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return 0.1 + 0.45 * (1 + math.cos(math.pi * t))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}


class TimeBudget(L.Callback):
    """Stop ``minutes`` after this (re)start and write ``last`` then. Lightning's ``max_time`` would also count
    the minutes of the runs a resume restores, and stop without a checkpoint."""

    def __init__(self, minutes: float, last: Path):
        self.seconds, self.last, self.start = minutes * 60, last, None

    def _spent(self, trainer) -> bool:
        return trainer.strategy.reduce_boolean_decision(time.monotonic() - self.start >= self.seconds, all=False)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.monotonic()

    def on_train_batch_end(self, trainer, *args) -> None:
        if self._spent(trainer):
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.should_stop:
            trainer.save_checkpoint(self.last)


def time_budget(minutes: float | None, last: Path) -> list[L.Callback]:
    """The callbacks for ``--max-minutes`` (none without one)."""
    return [TimeBudget(minutes, last)] if minutes else []


def train(cfg: LatentTrainConfig, run_dir: Path, prepare, monitor: str, *, resume: bool = False,
          max_minutes: float | None = None, accelerator: str = "cpu", devices: int | str = 1,
          threads: int | None = None, progress: bool = True) -> Path:
    """Train (or resume) into ``run_dir`` the module that ``prepare(cfg, run_dir, progress)`` returns with its
    train and valid loaders: CSV logs, validation and a checkpoint every ``cfg.val_every`` steps (the best by
    ``monitor``, and ``last.ckpt``), up to ``cfg.max_steps`` or ``max_minutes``; returns the last checkpoint."""
    last = start_run(run_dir, resume, cfg.seed, threads)
    module, train_dl, valid_dl = prepare(cfg, run_dir, progress)
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, max_steps=cfg.max_steps,
        val_check_interval=cfg.val_every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        gradient_clip_val=cfg.grad_clip, use_distributed_sampler=False,
        logger=CSVLogger(run_dir, name="logs"), log_every_n_steps=cfg.log_every,
        callbacks=[ModelCheckpoint(run_dir / "checkpoints", filename="step{step:07d}", auto_insert_metric_name=False,
                                   every_n_train_steps=cfg.val_every, save_last=True, save_top_k=1,
                                   monitor=monitor, enable_version_counter=False)]  # resume reads last.ckpt
        + time_budget(max_minutes, last)
        + ([TQDMProgressBar(refresh_rate=50 if os.isatty(2) else 500)] if progress else []),
        enable_progress_bar=progress, default_root_dir=run_dir,
    )
    trainer.fit(module, train_dl, valid_dl, ckpt_path=str(last) if resume else None)
    return last


def read_run_checkpoint(ckpt: str | os.PathLike, prefix: str, config_cls, model_name: str | os.PathLike):
    """(train config, hyperparameters, state of the submodule ``prefix``, steps, the VAE ``model_name``) of a
    checkpoint written by ``train``; refuses one trained on the latents of another encoder."""
    p = Path(ckpt)
    if not p.is_file():
        raise AudioVAEError(f"{p}: no such checkpoint")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
        hp = ck["hyper_parameters"]
        cfg = from_dict(config_cls, hp["config"])
        state = {k[len(prefix) + 1 :]: v for k, v in ck["state_dict"].items() if k.startswith(prefix + ".")}
    except (KeyError, TypeError, RuntimeError, EOFError) as e:
        raise AudioVAEError(f"{p}: not an audiovae {prefix} checkpoint ({str(e).splitlines()[0]})") from None
    model = load(model_name)
    bad = latents_mismatch(model, hp)
    if bad:
        raise ModelLoadError(f"{p}: not a {prefix} for model '{model.name}', trained on the latents of {bad}; "
                             f"retrain the {prefix} for these weights")
    return cfg, hp, state, int(ck["global_step"]), model
