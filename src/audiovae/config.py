"""Typed dataclass configs: read from YAML/JSON with unknown keys and wrong types as errors,
saved as JSON next to the weights."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from audiovae.errors import AudioVAEError
from audiovae.resources import resource


class ConfigError(AudioVAEError):
    """A config key that does not exist or has the wrong type."""


@dataclass
class ModelConfig:
    """Architecture of the VAE (see models/vae.py)."""

    sample_rate: int = 16000
    hop_length: int = 320  # samples per latent frame
    enc_n_fft: int = 640  # encoder analysis window
    n_fft: int = 640  # decoder synthesis window
    upsample: int = 2  # synthesis frames per latent frame (synthesis hop = hop_length / upsample)
    latent_dim: int = 32
    enc_channels: int = 192
    enc_blocks: int = 4
    dec_channels: int = 192
    dec_blocks: int = 8
    expansion: int = 3
    kernel: int = 7
    noise_bands: int = 0  # >0: a learned per-band gate of pseudo-random phase in the decoder (see models/vae.py)

    def validate(self) -> None:
        syn_hop = self.hop_length // self.upsample
        if self.hop_length % self.upsample or self.n_fft % syn_hop or self.enc_n_fft < self.hop_length:
            raise ConfigError(
                f"model: hop_length {self.hop_length}, upsample {self.upsample}, n_fft {self.n_fft} "
                f"and enc_n_fft {self.enc_n_fft} must give whole hops (n_fft a multiple of the synthesis hop)"
            )


@dataclass
class LossConfig:
    """Reconstruction, KL and adversarial terms (see losses.py)."""

    mel_scales: list[list[int]] = field(
        default_factory=lambda: [[1024, 80], [512, 64], [256, 32], [128, 16]]
    )  # [n_fft, n_mels] pairs
    mel_weight: float = 1.0
    complex_n_fft: int = 640
    complex_weight: float = 1.0
    wave_weight: float = 5.0
    logmag_n_ffts: list[int] = field(default_factory=list)  # linear-frequency log-magnitude L1 at these sizes
    logmag_weight: float = 1.0
    kl_weight: float = 2e-4  # on KL summed over latent channels, averaged over frames
    kl_start_weight: float = 1e-6
    kl_warmup_steps: int = 5000  # log-linear ramp from kl_start_weight to kl_weight
    free_bits: float = 0.0  # nats per latent channel and frame not penalized
    adv_weight: float = 1.0
    fm_weight: float = 5.0

    def __post_init__(self):
        if any(n < 16 for n in self.logmag_n_ffts):
            raise ConfigError(f"loss.logmag_n_ffts: need sizes >= 16, got {self.logmag_n_ffts}")


def _coerce(tp, value, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if tp is typing.Any:
        return value
    raise ConfigError(f"config key '{key}': expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls, data, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or cls.__name__}': expected a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(f"unknown config key '{prefix}{k}' (known: {', '.join(sorted(names))})")
    return cls(**{k: _coerce(hints[k], v, prefix + k) for k, v in data.items()})


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def load_yaml(cls, path: str | Path):
    """Read a YAML file into dataclass ``cls``; a missing recipes/... path is looked up among the shipped recipes."""
    p = Path(path)
    if not p.is_file() and p.parts[:1] == ("recipes",) and resource(*p.parts).is_file():
        p = resource(*p.parts)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
