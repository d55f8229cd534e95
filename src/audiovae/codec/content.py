"""Whether an input sounds like music rather than speech: a cheap check that lets ``compress`` warn before the
speech model codes music (speech16k keeps 8 kHz of band and was trained on voices only).

Three features of the first ``SECONDS`` at 16 kHz, under a logistic regression fitted on 800 train clips of each
shipped corpus by experiments/model-choice/measure.py (which also measures it on the unseen split):
speech pauses between words, varies in level, and changes its spectrum every syllable; music sustains.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from audiovae.audio import resample

RATE = 16000
SECONDS = 20.0  # of the input analysed: the start of a long file
MUSIC_FROM = 0.5  # the probability from which an input is called music
_FRAME, _HOP, _LAG = 512, 256, 8  # 32 ms frames every 16 ms; spectra compared 128 ms apart
_BAND = slice(4, 224)  # 125 Hz .. 7 kHz
_EPS = 1e-10
_WINDOW = np.hanning(_FRAME).astype(np.float32)
# features: the share of frames 25 dB below the loud ones, the level spread of the sounding frames (dB), the
# cosine similarity of magnitude spectra 128 ms apart; standardized, then weighted
_MEAN = np.array([0.1457, 6.5461, 0.6895])
_SCALE = np.array([0.1677, 2.3385, 0.1563])
_WEIGHTS = np.array([0.1944, -1.9728, 2.0533])
_BIAS = 0.0252


def features(x: np.ndarray) -> np.ndarray:
    """The detector's three features of a mono 16 kHz signal (samples,)."""
    x = np.pad(np.asarray(x, np.float32), (0, max(0, _FRAME - len(x))))
    spectra = scipy.fft.rfft(np.lib.stride_tricks.sliding_window_view(x, _FRAME)[::_HOP] * _WINDOW, axis=1)
    power = (spectra.real**2 + spectra.imag**2).astype(np.float64)
    level = 10 * np.log10(power.sum(axis=1) + _EPS)
    loud = np.percentile(level, 95)
    sounding = level > loud - 30
    mag = np.sqrt(power[:, _BAND])
    mag /= np.linalg.norm(mag, axis=1, keepdims=True) + _EPS
    both = sounding[_LAG:] & sounding[:-_LAG]
    similarity = np.sum(mag[_LAG:] * mag[:-_LAG], axis=1)[both].mean() if both.any() else 0.0
    return np.array([np.mean(level < loud - 25), np.std(level[sounding]), similarity])


def music_probability(x: np.ndarray, sample_rate: int) -> float:
    """How likely (channels, samples) audio is music rather than speech, from its first ``SECONDS``."""
    mono = x[:, : round(SECONDS * sample_rate)].mean(axis=0, keepdims=True)
    if sample_rate != RATE:
        mono = resample(mono, sample_rate, RATE)
    score = float((features(mono[0]) - _MEAN) / _SCALE @ _WEIGHTS + _BIAS)
    return float(1 / (1 + np.exp(-np.clip(score, -50, 50))))
