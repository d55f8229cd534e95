"""Quality metrics on numpy signals: SI-SDR, log-mel distance, wideband PESQ, STOI, ViSQOL, LTAS ripple."""

from __future__ import annotations

import importlib.util

import numpy as np
import soxr
import torch
from scipy.ndimage import median_filter

from audiovae.losses import MelDistance

_MEL_SCALES = [[2048, 128], [1024, 80], [512, 64], [256, 32]]


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant SDR in dB of mono signals."""
    ref = ref - ref.mean()
    est = est - est.mean()
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    target = alpha * ref
    return float(10 * np.log10((np.dot(target, target) + 1e-12) / (np.sum((est - target) ** 2) + 1e-12)))


def mel_distance(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """Mean L1 between natural-log mel spectrograms over four resolutions (lower is better)."""
    m = MelDistance(sample_rate, _MEL_SCALES)
    with torch.no_grad():
        return float(m(torch.from_numpy(est[None]).float(), torch.from_numpy(ref[None]).float()))


def _at_16k(x: np.ndarray, sample_rate: int) -> np.ndarray:
    return x if sample_rate == 16000 else soxr.resample(x, sample_rate, 16000).astype(np.float32)


def has_pesq() -> bool:
    """Whether the optional ``pesq`` package (extra ``[bench]``) is installed."""
    return importlib.util.find_spec("pesq") is not None


def pesq_wb(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """Wideband PESQ (MOS-LQO, 1.0-4.64) at 16 kHz; NaN when the clip has no detectable speech."""
    from pesq import PesqError, pesq

    try:
        return float(pesq(16000, _at_16k(ref, sample_rate), _at_16k(est, sample_rate), "wb"))
    except PesqError:
        return float("nan")


def stoi(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    from pystoi import stoi as _stoi

    return float(_stoi(ref, est, sample_rate, extended=False))


_VISQOL: dict[str, object] = {}


def visqol(ref: np.ndarray, est: np.ndarray, sample_rate: int, mode: str) -> float:
    """ViSQOL MOS-LQO: mode "speech" (at 16 kHz) or "audio" (at 48 kHz); visqol-python's port."""
    from visqol import VisqolApi

    if mode not in _VISQOL:
        api = VisqolApi()
        api.create(mode=mode, use_lattice_model=True) if mode == "speech" else api.create(mode=mode)
        _VISQOL[mode] = api
    rate = 16000 if mode == "speech" else 48000
    ref = soxr.resample(ref, sample_rate, rate) if sample_rate != rate else ref
    est = soxr.resample(est, sample_rate, rate) if sample_rate != rate else est
    return float(_VISQOL[mode].measure_from_arrays(ref.astype(np.float64), est.astype(np.float64), rate).moslqo)


def ltas_db(x: np.ndarray, sample_rate: int, n_fft: int = 2048, hop: int = 512,
            floor_db: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """Long-term average spectrum in dB (Hann frames; frames more than ``floor_db`` below the loudest are
    skipped as silence) and its bin frequencies."""
    x = np.pad(np.asarray(x, dtype=np.float64), (0, max(0, n_fft - len(x))))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=-1)) ** 2
    energy = 10 * np.log10(power.sum(axis=-1) + 1e-20)
    loud = power[energy >= energy.max() - floor_db]
    return 10 * np.log10(loud.mean(axis=0) + 1e-20), np.fft.rfftfreq(n_fft, 1 / sample_rate)


def top_band(sample_rate: int) -> tuple[float, float]:
    """The band the comb metric looks at: the top half-band below 15/16 of Nyquist (4-7.5 kHz at 16 kHz)."""
    return sample_rate / 4, sample_rate * 15 / 32


def ltas_ripple(x: np.ndarray, sample_rate: int, band: tuple[float, float] | None = None) -> float:
    """Ripple of the LTAS in dB: the standard deviation of the LTAS minus its 400 Hz running median over
    ``band`` (default ``top_band``). A comb (a line spectrum, deep periodic notches) raises it."""
    db, freqs = ltas_db(x, sample_rate)
    width = int(round(400 / (freqs[1] - freqs[0]))) | 1
    lo, hi = band or top_band(sample_rate)
    sel = (freqs >= lo) & (freqs <= hi)
    return float(np.std((db - median_filter(db, size=width, mode="nearest"))[sel]))


def ripple_ratio(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """``ltas_ripple`` of the decoded signal over the original's (1 = as smooth as the original)."""
    return ltas_ripple(est, sample_rate) / max(ltas_ripple(ref, sample_rate), 1e-6)
