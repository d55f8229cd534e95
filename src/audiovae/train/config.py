"""The training config: one YAML per shipped model under recipes/NAME/train.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field

from audiovae.codec.entropy import DEFAULT_STEPS
from audiovae.config import ConfigError, LossConfig, ModelConfig, load_yaml
from audiovae.train.data import DataConfig


@dataclass
class OptimConfig:
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    lr_gamma: float = 0.99999  # exponential decay per generator update
    d_lr: float = 2e-4
    d_every: int = 2  # discriminator update every N generator updates in stage 2


@dataclass
class QuantNoiseConfig:
    """Quantization-aware decoder training: with probability ``prob`` a batch item's decoder input is the
    posterior mean plus U(-step/2, step/2) noise, ``step`` drawn log-uniformly in [min_step, max_step]
    (the codec's quality steps), instead of a posterior sample."""

    prob: float = 0.0
    min_step: float = DEFAULT_STEPS[-1]
    max_step: float = DEFAULT_STEPS[0]

    def __post_init__(self):
        if not (0.0 <= self.prob <= 1.0 and 0.0 < self.min_step <= self.max_step):
            raise ConfigError(f"quant_noise: need 0 <= prob <= 1 and 0 < min_step <= max_step, got {self}")


@dataclass
class RDConfig:
    """Rate-distortion fine-tuning (train/rd.py): per-channel steps over quant_noise's step range, trained with
    the decoder at lr ``lr`` (with the rate proxy); ``bins`` levels of log step each keep the rate of uniform
    steps by dual ascent at ``dual_lr``. Needs ``quant_noise.prob`` > 0 and ``freeze_encoder``. With ``train:
    false`` the steps are those of the --init model, kept fixed (no rate term): a later fine-tuning, such as the
    adversarial stage, trains the decoder on the codec's noise and exports the same steps."""

    enabled: bool = False
    train: bool = True
    bins: int = 8
    lr: float = 3e-3
    dual_lr: float = 0.05


@dataclass
class TrainConfig:
    name: str = "model"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    max_steps: int = 1_000_000
    adversarial_after: int = -1  # generator update at which stage 2 (GAN) starts; -1 = never
    freeze_encoder_in_gan: bool = True
    freeze_encoder: bool = False  # train the decoder alone (needs --init): latents stay bit-identical
    grow_decoder: int = 0  # with --init: decoder blocks appended to the init model's, starting as the identity
    quant_noise: QuantNoiseConfig = field(default_factory=QuantNoiseConfig)
    rd: RDConfig = field(default_factory=RDConfig)
    disc_n_ffts: list[int] = field(default_factory=lambda: [1024, 512, 256])
    disc_channels: int = 16
    val_every: int = 1000
    log_every: int = 50
    val_clips: int = 16
    val_seconds: float = 4.0
    samples_to_write: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.rd.enabled and not (self.quant_noise.prob > 0 and self.freeze_encoder and self.rd.bins >= 1):
            raise ConfigError("rd: needs quant_noise.prob > 0, freeze_encoder and bins >= 1")
        if self.grow_decoder < 0:
            raise ConfigError(f"grow_decoder must be >= 0, got {self.grow_decoder}")


def load_train_config(path) -> TrainConfig:
    return load_yaml(TrainConfig, path)
