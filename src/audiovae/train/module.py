"""The Lightning module: stage 1 spectral + beta-KL, stage 2 adds the STFT discriminator."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch

from audiovae import metrics
from audiovae.audio import save
from audiovae.config import to_dict
from audiovae.errors import AudioVAEError
from audiovae.losses import (
    ReconstructionLoss,
    feature_matching,
    hinge_d,
    hinge_g,
    kl_loss,
    kl_weight,
)
from audiovae.models.discriminators import MultiScaleSTFTDiscriminator
from audiovae.models.vae import VAE, Posterior
from audiovae.plots import save_spectrogram
from audiovae.train.config import QuantNoiseConfig, TrainConfig
from audiovae.train.rd import RateDistortion

MAX_BAD_STEPS = 20


def decoder_input(post: Posterior, cfg: QuantNoiseConfig, generator: torch.Generator,
                  scales: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """A posterior sample per batch item, or with probability ``cfg.prob`` the mean plus uniform noise as wide
    as a quantization step drawn log-uniformly in [min_step, max_step] (see QuantNoiseConfig), times
    ``scales(step)`` (batch, C) per channel when given. Returns (input, step (batch,), unit noise); the
    last two are None without quantization noise."""
    z = post.sample(generator)
    if cfg.prob == 0:
        return z, None, None
    batch = z.shape[0]
    noisy = (torch.rand(batch, generator=generator) < cfg.prob).to(z.device)[:, None, None]
    step = torch.empty(batch).uniform_(math.log(cfg.min_step), math.log(cfg.max_step), generator=generator).exp()
    u = (torch.rand(z.shape, generator=generator) - 0.5).to(z.device, z.dtype)
    step = step.to(z.device)
    steps = step.to(z.dtype)[:, None, None]
    if scales is not None:
        steps = steps * scales(step)[..., None]
    return torch.where(noisy, post.mean + u * steps, z), step, u


class VAEModule(L.LightningModule):
    def __init__(self, cfg: TrainConfig, run_dir: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir else None
        self.save_hyperparameters({"config": to_dict(cfg)})
        self.automatic_optimization = False
        self.vae = VAE(cfg.model)
        self.vae.encoder.requires_grad_(not cfg.freeze_encoder)
        self.recon = ReconstructionLoss(cfg.loss, cfg.model.sample_rate)
        self.disc = (
            MultiScaleSTFTDiscriminator(cfg.disc_n_ffts, cfg.disc_channels) if cfg.adversarial_after >= 0 else None
        )
        q = cfg.quant_noise
        self.rd = RateDistortion(cfg.model.latent_dim, cfg.rd.bins, q.min_step, q.max_step, cfg.rd.dual_lr) \
            if cfg.rd.enabled else None
        self.trains_steps = self.rd is not None and cfg.rd.train  # else the steps stay those of --init
        if self.rd is not None:
            self.rd.requires_grad_(self.trains_steps)
        self.bad_steps = 0
        self._val: list[dict] = []
        self.train_seconds, self._tick = 0.0, None  # wall-clock training time, kept across resumes

    def on_save_checkpoint(self, checkpoint):
        checkpoint["train_seconds"] = self.train_seconds

    def on_load_checkpoint(self, checkpoint):
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))

    def on_train_batch_start(self, batch, batch_idx):
        self._tick = time.monotonic()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.train_seconds += time.monotonic() - self._tick

    @property
    def updates(self) -> int:
        """Generator updates so far (discriminator steps are not counted)."""
        return self.global_step

    def in_gan_stage(self) -> bool:
        return self.disc is not None and self.updates >= self.cfg.adversarial_after

    def configure_optimizers(self):
        o = self.cfg.optim
        trained = [p for p in self.vae.parameters() if p.requires_grad]  # a frozen encoder gets no weight decay
        groups = [{"params": trained}] + ([{"params": self.rd.parameters(), "lr": self.cfg.rd.lr, "weight_decay": 0.0}]
                                          if self.trains_steps else [])
        opt_g = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt_g, gamma=o.lr_gamma)
        if self.disc is None:
            return [opt_g], [sched]
        opt_d = torch.optim.AdamW(self.disc.parameters(), lr=o.d_lr, betas=tuple(o.betas))
        return [opt_g, opt_d], [sched]

    def _forward(self, x: torch.Tensor, freeze_encoder: bool):
        if freeze_encoder:
            with torch.no_grad():
                post = self.vae.encode(x)
        else:
            post = self.vae.encode(x)
        # Noise seeded by the update count: reproducible across resumes and equal on every DDP rank.
        noise = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.updates)
        z, step, u = decoder_input(post, self.cfg.quant_noise, noise, self.rd.scales if self.rd else None)
        y = self.vae.decode(z)
        valid = x.shape[-1] - self.vae.latency  # the tail needs frames after the crop
        return post, y[..., :valid], x[..., :valid], step, u

    def training_step(self, batch, batch_idx):
        opts = self.optimizers()
        opt_g = opts[0] if isinstance(opts, list) else opts
        x = batch["audio"][:, 0]
        gan = self.in_gan_stage()
        post, y, x, step, u = self._forward(x, self.cfg.freeze_encoder or (gan and self.cfg.freeze_encoder_in_gan))
        rec, parts = self.recon(y, x)
        kl = kl_loss(post, self.cfg.loss.free_bits)
        beta = kl_weight(self.updates, self.cfg.loss)
        loss = rec + beta * kl
        logs = {f"train/{k}": v.detach() for k, v in parts.items()}
        if self.trains_steps:
            rate, rd_logs = self.rd.loss(post.mean, u, step)
            loss = loss + rate
            logs.update({f"train/{k}": v for k, v in rd_logs.items()})
        if gan:
            fake_logits, fake_feats = self.disc(y)
            with torch.no_grad():
                _, real_feats = self.disc(x)
            adv, fm = hinge_g(fake_logits), feature_matching(real_feats, fake_feats)
            loss = loss + self.cfg.loss.adv_weight * adv + self.cfg.loss.fm_weight * fm
            logs.update({"train/adv_g": adv.detach(), "train/fm": fm.detach()})
        if not torch.isfinite(loss):
            self._bad_step()
            return None
        self.bad_steps = 0
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        self.clip_gradients(opt_g, self.cfg.optim.grad_clip, "norm")
        opt_g.step()
        self.lr_schedulers().step()
        if gan and self.updates % self.cfg.optim.d_every == 0:
            logs["train/adv_d"] = self._discriminator_step(opts[1], x, y.detach())
        logs.update({"train/loss": loss.detach(), "train/kl": kl.detach(), "train/beta": beta,
                     "train/active_dims": (post.kl().mean(dim=(0, 2)) > 0.01).sum().float()})
        self.log_dict(logs, prog_bar=False, on_step=True, batch_size=x.shape[0])
        self.log("mel", parts["mel"].detach(), prog_bar=True, logger=False, batch_size=x.shape[0])
        return loss

    def _discriminator_step(self, opt_d, x, y):
        real, _ = self.disc(x)
        fake, _ = self.disc(y)
        d_loss = hinge_d(real, fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        self.clip_gradients(opt_d, 10.0, "norm")
        opt_d.optimizer.step()  # the raw optimizer: discriminator steps do not count as global steps
        return d_loss.detach()

    def _bad_step(self):
        self.bad_steps += 1
        if self.bad_steps >= MAX_BAD_STEPS:
            raise AudioVAEError(
                f"training diverged: non-finite loss for {MAX_BAD_STEPS} steps in a row at step {self.updates}; "
                "the last good checkpoint is kept (resume from it with a lower learning rate)"
            )

    def validation_step(self, batch, batch_idx):
        x = batch["audio"][:, 0]
        with torch.no_grad():
            y = self.vae.reconstruct(x)
        sr = self.cfg.model.sample_rate
        for ref, est in zip(x.cpu().numpy(), y.cpu().numpy(), strict=True):
            if np.abs(ref).max() < 1e-4:
                continue
            row = {"mel": metrics.mel_distance(ref, est, sr), "si_sdr": metrics.si_sdr(ref, est)}
            if sr >= 16000 and metrics.has_pesq():
                row["pesq"] = metrics.pesq_wb(ref, est, sr)
            self._val.append({**row, "ref": ref, "est": est})

    def on_validation_epoch_end(self):
        rows, self._val = self._val, []
        if not rows:
            return
        self.log("val/minutes", self.train_seconds / 60, sync_dist=True)
        for key in ("mel", "si_sdr", "pesq"):
            vals = [r[key] for r in rows if key in r and not math.isnan(r[key])]
            if vals:
                self.log(f"val/{key}", float(np.mean(vals)), prog_bar=key == "pesq", sync_dist=True)
        if self.run_dir is not None and self.global_rank == 0 and not self.trainer.sanity_checking:
            self._write_samples(rows[: self.cfg.samples_to_write])

    def _write_samples(self, rows):
        out = self.run_dir / "samples" / f"step{self.updates:07d}"
        out.mkdir(parents=True, exist_ok=True)
        sr = self.cfg.model.sample_rate
        for i, r in enumerate(rows):
            pair = np.stack([r["ref"], r["est"]])
            save(out / f"{i}_original.wav", pair[:1], sr)
            save(out / f"{i}_decoded.wav", pair[1:], sr)
            save_spectrogram(out / f"{i}.png", pair, sr, title=f"step {self.updates}: original / decoded")
