"""A look-ahead peak limiter: the output stage of generated audio, so that no sample exceeds a ceiling.

The gain is one for all channels (the stereo image stays) and is computed in dB of attenuation: the attenuation
each sample needs to stay under the ceiling (its peak estimated on a 4x oversampled copy, so that peaks between
samples count too: a "true-ish" peak), held over the next ``LOOKAHEAD_S`` seconds, released at
``RELEASE_DB_PER_S``, then averaged over ``LOOKAHEAD_S``. Averaging a look-ahead maximum over the same window keeps
every sample under the ceiling while the gain ramps smoothly into each peak; audio whose peaks are all under the
ceiling comes back unchanged. Deterministic, numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import resample_poly

CEILING_DB = -1.0
LOOKAHEAD_S = 0.005
RELEASE_DB_PER_S = 30.0
OVERSAMPLE = 4
_MARGIN_DB = 1e-5  # the ceiling aimed at is this much lower, so that float rounding never crosses the real one


def peak_envelope(wave: np.ndarray) -> np.ndarray:
    """(channels, samples) -> (samples,) float64: the largest magnitude over channels at each sample and between it
    and its neighbours (OVERSAMPLE x polyphase interpolation)."""
    x = wave.astype(np.float64)
    n = x.shape[-1]
    fine = np.abs(resample_poly(x, OVERSAMPLE, 1, axis=-1)).reshape(x.shape[0], n, OVERSAMPLE).max((0, 2))
    between = np.maximum(fine, np.concatenate([fine[:1], fine[:-1]]))  # [n - 1, n + 1): both sides of sample n
    return np.maximum(np.abs(x).max(0), between)


def limit(wave: np.ndarray, sample_rate: int, ceiling_db: float = CEILING_DB) -> np.ndarray:
    """``wave`` (channels, samples) with its peaks brought under ``ceiling_db`` dBFS; float32, same shape. Unchanged
    (the same array) when no peak reaches the ceiling."""
    if wave.shape[-1] == 0:
        return wave
    ceiling = 10 ** ((ceiling_db - _MARGIN_DB) / 20)
    need = 20 * np.log10(np.maximum(peak_envelope(wave) / ceiling, 1.0))  # dB of attenuation each sample needs
    if not need.any():
        return wave
    width = max(1, round(LOOKAHEAD_S * sample_rate))
    held = maximum_filter1d(need, width, origin=-(width // 2), mode="nearest")  # max over [n, n + width)
    ramp = RELEASE_DB_PER_S / sample_rate * np.arange(len(need))
    released = np.maximum.accumulate(held + ramp) - ramp  # max over m <= n of held[m] - rate * (n - m)
    c = np.cumsum(np.concatenate([[0.0], np.full(width - 1, released[0]), released]))
    att = (c[width:] - c[:-width]) / width  # mean over (n - width, n]: every term >= what sample n needs
    att[att < _MARGIN_DB / 2] = 0.0  # rounding residue of the release: exactly unity gain there
    return (wave * 10 ** (-att / 20)).astype(np.float32)
