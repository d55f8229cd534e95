"""Figures people look at: spectrograms and per-label recognition bars (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from audiovae.errors import AudioVAEError
from audiovae.files import replaced

MAX_COLUMNS = 2000  # a figure is ~1000 pixels wide: more STFT frames only cost memory


def log_spectrogram(
    x: np.ndarray, sample_rate: int, n_fft: int = 1024, max_frames: int = MAX_COLUMNS
) -> tuple[np.ndarray, float]:
    """dB magnitude spectrogram of a mono signal (freq, frames) and the hop in seconds.

    The hop is n_fft/4, widened for long signals so there are at most ``max_frames`` frames
    (memory stays bounded for hour-long files).
    """
    hop = max(n_fft // 4, -(-len(x) // max_frames))
    x = np.pad(np.asarray(x, dtype=np.float32), (n_fft // 2, n_fft // 2))
    n = 1 + max(0, (len(x) - n_fft) // hop)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(n_fft).astype(np.float32)[None, :]
    mag = np.abs(np.fft.rfft(frames, axis=1)).T
    return 20 * np.log10(mag + 1e-6), hop / sample_rate


def save_spectrogram(path: str | os.PathLike, x: np.ndarray, sample_rate: int, title: str = "",
                     width: float = 10.0) -> Path:
    """Write an image (PNG, or JPEG for a .jpg path) ``width`` inches wide at 100 dpi with one spectrogram
    panel per channel of ``x`` (channels, samples), atomically."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    ch = x.shape[0]
    fig = Figure(figsize=(width, 0.3 * width * ch))
    axes = fig.subplots(ch, 1, squeeze=False)
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
    return save_figure(fig, Path(path))


def save_recognition(path: str | os.PathLike, rows: list[dict], title: str = "") -> Path:
    """Bar chart (PNG) of ``bench generate``'s accuracy rows: per label, the share of generated clips, of real test
    clips and of their reconstructions that each probe (our embedding; MFCC statistics) names correctly."""
    from matplotlib.figure import Figure

    bars = [("generated_accuracy", "generated, embedding probe"), ("real_test_accuracy", "real test, embedding probe"),
            ("decoded_test_accuracy", "real test decoded, embedding probe"),
            ("generated_accuracy_mfcc", "generated, MFCC probe"), ("real_test_accuracy_mfcc", "real test, MFCC probe"),
            ("decoded_test_accuracy_mfcc", "real test decoded, MFCC probe")]
    y = np.arange(len(rows))
    fig = Figure(figsize=(8.0, 2.5 + 0.5 * len(rows)))
    ax = fig.subplots()
    for i, (key, name) in enumerate(bars):
        ax.barh(y + (i - 2.5) * 0.13, [float(r[key]) for r in rows], height=0.13, label=name)
    ax.set_yticks(y, [str(r["label"]) for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("recognized as the requested label")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / len(rows) ** 0.5), ncol=2, fontsize="small")
    return save_figure(fig, Path(path))


def save_figure(fig, p: Path) -> Path:
    """Write ``fig`` (a matplotlib Figure) to ``p`` atomically (PNG, or JPEG for a .jpg path)."""
    if not p.parent.is_dir():
        raise AudioVAEError(f"{p}: folder {p.parent} does not exist")
    fig.tight_layout()
    try:
        with replaced(p) as tmp:
            fig.savefig(tmp, dpi=100, format="jpeg" if p.suffix.lower() in (".jpg", ".jpeg") else "png")
    except OSError as e:
        raise AudioVAEError(f"{p}: cannot write ({e.strerror or e})") from None
    return p
