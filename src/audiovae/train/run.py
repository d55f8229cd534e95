"""``audiovae train``: build the Lightning trainer from a TrainConfig and fit, resumably."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from audiovae.config import ModelConfig, from_dict
from audiovae.errors import AudioVAEError
from audiovae.registry import load, read_checkpoint, read_model_checkpoint
from audiovae.train.common import start_run, time_budget
from audiovae.train.config import TrainConfig
from audiovae.train.data import AudioDataModule
from audiovae.train.module import VAEModule


def initial_weights(init: str, steps_from: str | None = None) -> tuple[ModelConfig, dict, dict | None]:
    """Model config, VAE weights and per-channel step parameters {a, b} (None without) to start from: a
    training checkpoint (.ckpt) or a pretrained model; the steps from the model ``steps_from`` when given (an
    encoder fine-tuned without them starts its rate-distortion fine-tuning from the shipped ones)."""
    if init.endswith(".ckpt"):
        config, state, scales, _ = read_model_checkpoint(init)
        model_cfg = from_dict(ModelConfig, config["model"])
    else:
        model = load(init)
        model_cfg, state, scales = model.config, model.state_dict(), model.card.get("step_scales")
    if steps_from is not None:
        donor = load(steps_from)
        scales = donor.card.get("step_scales")
        if scales is None:
            raise AudioVAEError(f"--steps-from {steps_from}: the model has no per-channel steps (step_scales)")
        if donor.latent_dim != model_cfg.latent_dim:
            raise AudioVAEError(f"--steps-from {steps_from}: {donor.latent_dim} latent channels, --init has "
                                f"{model_cfg.latent_dim}")
    return model_cfg, state, scales


def load_grown(vae, state: dict, blocks: int) -> None:
    """Load ``state`` into ``vae``, whose decoder may have more blocks than the ``blocks`` of ``state`` (they
    start with a zero layer scale, computing what ``state``'s did) or a phase-noise gate that ``state`` lacks
    (it starts half open)."""
    missing, unexpected = vae.load_state_dict(state, strict=False)
    grown = [f"decoder.stack.blocks.{i}." for i in range(blocks, len(vae.decoder.stack.blocks))] + ["decoder.noise."]
    wrong = unexpected + [k for k in missing if not k.startswith(tuple(grown))]
    if wrong:
        raise AudioVAEError(f"--init: the weights do not fit the model ({', '.join(wrong[:3])})")
    with torch.no_grad():
        for block in vae.decoder.stack.blocks[blocks:]:
            block.scale.zero_()


def train(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    init: str | None = None,
    steps_from: str | None = None,
    max_minutes: float | None = None,
    accelerator: str = "cpu",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) into ``run_dir``; returns the path of the last checkpoint."""
    if steps_from is not None and (resume or not init):
        raise AudioVAEError("--steps-from sets the per-channel steps that --init starts from: give it with --init, "
                            "not with --resume")
    if accelerator != "cpu":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on GPUs that have them
    last = start_run(run_dir, resume, cfg.seed, threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = last.parent
    if cfg.freeze_encoder and not (init or resume):
        raise AudioVAEError("freeze_encoder trains the decoder alone: give --init, the model whose encoder to keep")
    if cfg.grow_decoder and not (init or resume):
        raise AudioVAEError("grow_decoder adds blocks to a trained decoder: give --init, the model to grow")
    if resume:  # the run's own architecture: --init is not needed, and a grown decoder is not grown twice
        cfg = replace(cfg, model=from_dict(ModelConfig, read_checkpoint(last)[0]["model"]))
    elif init:
        model_cfg, state, scales = initial_weights(init, steps_from)
        cfg = replace(cfg, model=replace(model_cfg, dec_blocks=model_cfg.dec_blocks + cfg.grow_decoder,
                                         noise_bands=cfg.model.noise_bands or model_cfg.noise_bands))
    module = VAEModule(cfg, str(run_dir))
    if init and not resume:
        load_grown(module.vae, state, model_cfg.dec_blocks)
        if module.rd is not None and scales is not None:
            with torch.no_grad():
                module.rd.a.copy_(torch.as_tensor(scales["a"])), module.rd.b.copy_(torch.as_tensor(scales["b"]))
        elif module.rd is not None and not cfg.rd.train:
            raise AudioVAEError(f"rd.train: false keeps the per-channel steps of --init, but {init} has none "
                                "(train them with rd.train: true, or drop rd for uniform steps)")
    if cfg.data.sample_rate != cfg.model.sample_rate:
        raise AudioVAEError(f"data.sample_rate {cfg.data.sample_rate} does not match the model's "
                            f"{cfg.model.sample_rate} (for stage 2, pass --init with the stage-1 model)")
    if strategy == "ddp" and (cfg.adversarial_after >= 0 or devices not in (1, "1")):
        strategy = "ddp_find_unused_parameters_true" if cfg.adversarial_after >= 0 else "ddp"
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        max_steps=cfg.max_steps,
        val_check_interval=cfg.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=[CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tb")],  # version_N per (re)start
        callbacks=[
            ModelCheckpoint(ckpt_dir, filename="step{step:07d}", auto_insert_metric_name=False,
                            every_n_train_steps=cfg.val_every, save_last=True, save_top_k=-1,
                            enable_version_counter=False),  # never last-v1.ckpt: --resume reads last.ckpt
        ] + time_budget(max_minutes, last)
        + ([TQDMProgressBar(refresh_rate=50 if os.isatty(2) else 500)] if progress else []),
        enable_progress_bar=progress,
        log_every_n_steps=cfg.log_every,
        limit_val_batches=max(1, cfg.val_clips // max(cfg.data.batch_size, 1)),
        default_root_dir=run_dir,
    )
    data = AudioDataModule(cfg.data)
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
    return last
