"""Training-time augmentation of crops: speed, pitch, EQ, band-limiting, telephone channel, reverb, noise.

Each effect is applied with its own probability and parameters drawn from the crop's generator, so a crop
is the same for a given seed whatever the worker count. The filters, pitch shifter and reverb are
pedalboard's; speed and the telephone channel are soxr resampling. The result is never clipped: a chain
that pushes the peak over ``max_peak`` is scaled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pedalboard
import soxr

from audiovae.config import ConfigError


@dataclass
class AugmentConfig:
    """Probabilities (0 = off) and ranges of each effect; all off by default."""

    speed: float = 0.0  # resample so the crop plays faster or slower (tempo and pitch together)
    speed_range: list[float] = field(default_factory=lambda: [0.9, 1.1])
    pitch: float = 0.0  # shift pitch (tempo kept)
    pitch_semitones: float = 2.0  # uniform in [-x, x]
    eq: float = 0.0  # 1-3 peaking filters
    eq_db: float = 6.0  # gain of each, uniform in [-x, x]
    bandlimit: float = 0.0  # a low-pass and a high-pass at random corners
    lowpass_hz: list[float] = field(default_factory=lambda: [3400.0, 7500.0])
    highpass_hz: list[float] = field(default_factory=lambda: [40.0, 300.0])
    telephone: float = 0.0  # down to 8 kHz and back (a band-limited, resampled telephone channel)
    reverb: float = 0.0  # a small, mostly dry room
    reverb_room: list[float] = field(default_factory=lambda: [0.05, 0.4])
    reverb_wet: list[float] = field(default_factory=lambda: [0.05, 0.25])
    noise: float = 0.0  # white or pink noise at a high SNR
    noise_snr_db: list[float] = field(default_factory=lambda: [25.0, 50.0])
    max_peak: float = 0.99

    def validate(self) -> None:
        probs = ("speed", "pitch", "eq", "bandlimit", "telephone", "reverb", "noise")
        for name in probs:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.augment.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("speed_range", "lowpass_hz", "highpass_hz", "reverb_room", "reverb_wet", "noise_snr_db"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
                raise ConfigError(f"data.augment.{name} must be [low, high] with 0 < low <= high, got {lo_hi}")
        if not 0 < self.max_peak <= 1:
            raise ConfigError(f"data.augment.max_peak must be in (0, 1], got {self.max_peak}")

    @property
    def active(self) -> bool:
        return any((self.speed, self.pitch, self.eq, self.bandlimit, self.telephone, self.reverb, self.noise))


def draw_speed(cfg: AugmentConfig, rng: np.random.Generator) -> float:
    """The speed factor of one crop (1.0 when the effect is not drawn); read ``speed`` times the crop."""
    return float(rng.uniform(*cfg.speed_range)) if rng.random() < cfg.speed else 1.0


def augment(x: np.ndarray, sr: int, cfg: AugmentConfig, rng: np.random.Generator, speed: float = 1.0) -> np.ndarray:
    """(channels, samples) float32 -> (channels, round(samples / speed)), augmented. ``speed`` (from
    ``draw_speed``) resamples first; the caller reads that many times more samples to keep its crop length."""
    n = int(round(x.shape[-1] / speed))
    y = np.ascontiguousarray(x, dtype=np.float32)
    if speed != 1.0:
        y = soxr.resample(y.T, sr * speed, sr).T
    board = pedalboard.Pedalboard()
    if rng.random() < cfg.pitch:
        board.append(pedalboard.PitchShift(semitones=float(rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones))))
    if rng.random() < cfg.eq:
        for _ in range(int(rng.integers(1, 4))):
            hz = float(np.exp(rng.uniform(np.log(100.0), np.log(0.45 * sr))))
            gain = float(rng.uniform(-cfg.eq_db, cfg.eq_db))
            board.append(pedalboard.PeakFilter(cutoff_frequency_hz=hz, gain_db=gain, q=float(rng.uniform(0.5, 2.0))))
    if rng.random() < cfg.bandlimit:
        board.append(pedalboard.HighpassFilter(cutoff_frequency_hz=float(rng.uniform(*cfg.highpass_hz))))
        board.append(pedalboard.LowpassFilter(cutoff_frequency_hz=min(float(rng.uniform(*cfg.lowpass_hz)), 0.45 * sr)))
    if rng.random() < cfg.reverb:
        board.append(pedalboard.Reverb(room_size=float(rng.uniform(*cfg.reverb_room)), damping=0.5,
                                       wet_level=float(rng.uniform(*cfg.reverb_wet)), dry_level=1.0, width=0.0))
    if len(board):
        y = board(y, sr)
    if rng.random() < cfg.telephone and sr > 8000:
        y = soxr.resample(soxr.resample(y.T, sr, 8000), 8000, sr).T
    y = _fit(np.asarray(y, dtype=np.float32), n)
    if rng.random() < cfg.noise:
        y = y + _noise(y, rng, float(rng.uniform(*cfg.noise_snr_db)), pink=bool(rng.random() < 0.5))
    peak = float(np.abs(y).max(initial=0.0))
    if peak > cfg.max_peak:
        y = y * np.float32(cfg.max_peak / peak)
    return y.astype(np.float32)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad the last axis to ``n`` samples."""
    return y[..., :n] if y.shape[-1] >= n else np.pad(y, ((0, 0), (0, n - y.shape[-1])))


def _noise(y: np.ndarray, rng: np.random.Generator, snr_db: float, pink: bool) -> np.ndarray:
    """White or pink (1/f power) noise at ``snr_db`` below the signal's power."""
    w = rng.standard_normal(y.shape).astype(np.float32)
    if pink:
        spec = np.fft.rfft(w, axis=-1)
        spec /= np.sqrt(np.maximum(np.arange(spec.shape[-1]), 1.0))
        w = np.fft.irfft(spec, n=y.shape[-1], axis=-1).astype(np.float32)
    power = float(np.mean(y**2))
    scale = np.sqrt(power / (10 ** (snr_db / 10)) / max(float(np.mean(w**2)), 1e-12))
    return (w * scale).astype(np.float32)
