"""Figures people look at: spectrograms (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def log_spectrogram(x: np.ndarray, sample_rate: int, n_fft: int = 1024) -> tuple[np.ndarray, float]:
    """dB magnitude spectrogram of a mono signal (freq, frames) and the hop in seconds."""
    hop = n_fft // 4
    x = np.pad(x, (n_fft // 2, n_fft // 2))
    n = 1 + max(0, (len(x) - n_fft) // hop)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(n_fft)[None, :]
    mag = np.abs(np.fft.rfft(frames, axis=1)).T
    return 20 * np.log10(mag + 1e-6), hop / sample_rate


def save_spectrogram(path: str | os.PathLike, x: np.ndarray, sample_rate: int, title: str = "") -> Path:
    """Write a PNG with one spectrogram panel per channel of ``x`` (channels, samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ch = x.shape[0]
    fig, axes = plt.subplots(ch, 1, figsize=(10, 3 * ch), squeeze=False)
    for c in range(ch):
        db, hop_s = log_spectrogram(x[c], sample_rate)
        ax = axes[c, 0]
        extent = (0.0, db.shape[1] * hop_s, 0.0, sample_rate / 2000)
        im = ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma",
                       vmin=db.max() - 90, vmax=db.max())
        ax.set_ylabel("kHz")
        ax.set_title(f"{title} (channel {c})" if ch > 1 else title)
        fig.colorbar(im, ax=ax, label="dB")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, p)
    return p
