"""``audiovae bench codec``: our codec against the unquantized model and classic codecs (Opus, Codec2, MP3) on the
same clips, rate against quality, and the issue's targets."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from audiovae import audio, metrics
from audiovae.codec import baselines
from audiovae.data.manifest import read_manifest, spread
from audiovae.errors import AudioVAEError
from audiovae.inference import reconstruct
from audiovae.models.vae import VAE
from audiovae.plots import save_figure

OURS_KBPS = (1.5, 3.0, 3.2, 4.5, 6.0, 9.0, 12.0)  # our codec's default targets in ``bench codec``
# The targets: our codec at a measured rate of at most KBPS scores above CODEC at its nominal
# rate on every metric listed.
CODEC_TARGETS = {
    "speech": [(3.2, "codec2", 3.2, ("pesq_wb", "visqol")), (6.0, "opus", 6.0, ("pesq_wb", "visqol")),
               (12.0, "opus", 12.0, ("pesq_wb", "visqol"))],
    "music": [(12.0, "opus", 12.0, ("visqol",))],
}


def codec_conditions(model: VAE, ours_kbps=OURS_KBPS, classics: bool = True) -> list[tuple[str, float]]:
    """(codec, nominal kbps) pairs compared on the same clips: the unquantized model, ours at each target
    and (with ``classics``) Opus, Codec2 and MP3."""
    ours = [("audiovae", float(k)) for k in ours_kbps]
    if model.sample_rate == 16000:
        others = [("opus", k) for k in (6, 8, 12, 16, 24)] + [("codec2", 1.6), ("codec2", 3.2)] + \
            [("mp3", k) for k in (8, 16, 24)]
    else:
        others = [("opus", k) for k in (6, 12, 24)] + [("mp3", k) for k in (16, 24)]
    return [("posterior-mean", 0.0)] + ours + (others if classics else [])


def codec_benchmark(codec, manifest: str | Path, split: str = "test", max_clips: int = 16,
                    progress=None, conditions: list[tuple[str, float]] | None = None) -> list[dict]:
    """Per clip and condition (default ``codec_conditions``): measured kbps (from the file size),
    PESQ/STOI (speech), ViSQOL, SI-SDR, log-mel distance, encode and decode x-realtime (one thread)."""
    torch.set_num_threads(1)
    model = codec.model
    speech = model.sample_rate == 16000
    missing = baselines.missing_tools()
    conditions = [c for c in conditions or codec_conditions(model) if c[0] not in ("opus", "codec2", "mp3")
                  or baselines.TOOLS[c[0]][1] not in missing]
    entries, _ = read_manifest(manifest, split=split)
    entries = [e for e in entries if e.duration >= 2.0]
    if not entries:
        raise AudioVAEError(f"{manifest}: no clips of 2 s or more in split '{split}'")
    chosen = spread(entries, max_clips)
    root = Path(manifest).parent
    rows, total, done = [], len(chosen) * len(conditions), 0
    for e in chosen:
        x, sr = audio.load(e.audio_path(root), mono=True, offset=e.offset, duration=e.duration)
        ref = x[0]
        for name, kbps in conditions:
            y, rate, enc_s, dec_s = _run_condition(codec, baselines, name, kbps, ref, sr)
            row = {"clip": e.id, "codec": name, "nominal_kbps": kbps, "kbps": rate,
                   "encode_x_rt": e.duration / enc_s if enc_s else math.nan,
                   "decode_x_rt": e.duration / dec_s if dec_s else math.nan,
                   "si_sdr": metrics.si_sdr(ref, y), "mel_distance": metrics.mel_distance(ref, y, sr),
                   "ripple_ratio": metrics.ripple_ratio(ref, y, sr),
                   "visqol": metrics.visqol(ref, y, sr, "speech" if speech else "audio")}
            if speech:
                row["pesq_wb"], row["stoi"] = metrics.pesq_wb(ref, y, sr), metrics.stoi(ref, y, sr)
            rows.append(row)
            done += 1
            if progress:
                progress(done, total)
    return rows


def _run_condition(codec, baselines, name: str, kbps: float, ref: np.ndarray, sr: int):
    if name == "posterior-mean":
        t0 = time.perf_counter()
        y = reconstruct(codec.model, ref[None], sr)[0]
        return y, math.nan, 0.0, time.perf_counter() - t0
    if name == "audiovae":
        t0 = time.perf_counter()
        data = codec.compress(ref, sr, kbps=kbps)
        t1 = time.perf_counter()
        y, _ = codec.decompress(data)
        t2 = time.perf_counter()
        return y[0], len(data) * 8 / (len(ref) / sr) / 1000, t1 - t0, t2 - t1
    coded = baselines.roundtrip(name, ref, sr, kbps)
    return coded.audio, coded.kbps, coded.encode_s, coded.decode_s


def summarize_codec(rows: list[dict]) -> list[dict]:
    """Mean of every metric per (codec, nominal kbps), in the order the conditions ran."""
    keys = [k for k in ("kbps", "pesq_wb", "stoi", "visqol", "si_sdr", "mel_distance", "ripple_ratio",
                        "encode_x_rt", "decode_x_rt") if k in rows[0]]
    out = []
    for cond in dict.fromkeys((r["codec"], r["nominal_kbps"]) for r in rows):
        rs = [r for r in rows if (r["codec"], r["nominal_kbps"]) == cond]
        s = {"codec": cond[0], "target_kbps": cond[1] or "-", "clips": len(rs)}
        for k in keys:
            vals = [r[k] for r in rs if not math.isnan(r[k])]
            s[k] = float(np.mean(vals)) if vals else math.nan
        out.append(s)
    return out


def codec_targets(summary: list[dict], sample_rate: int) -> list[str]:
    """``CODEC_TARGETS`` (speech for 16 kHz models, music otherwise) checked on a ``summarize_codec`` table,
    one line per target: ours is the audiovae condition with the highest measured rate within the target."""
    lines = []
    for kbps, name, nominal, keys in CODEC_TARGETS["speech" if sample_rate == 16000 else "music"]:
        ours = [s for s in summary if s["codec"] == "audiovae" and s["kbps"] <= kbps]
        base = [s for s in summary if s["codec"] == name and s["target_kbps"] == nominal]
        what = f"audiovae at <= {kbps:g} kbps above {name} {nominal:g} kbps on {' and '.join(keys)}"
        if not ours or not base:
            lines.append(f"not measured: {what}")
            continue
        o, b = max(ours, key=lambda s: s["kbps"]), base[0]
        scores = ", ".join(f"{k} {o[k]:.3g} vs {b[k]:.3g}" for k in keys)
        met = "met" if all(o[k] > b[k] for k in keys) else "NOT met"
        lines.append(f"{met}: {what} ({o['kbps']:.2f} vs {b['kbps']:.2f} kbps measured: {scores})")
    return lines


def plot_rate_quality(summary: list[dict], out: Path, title: str) -> Path:
    """Rate-quality curves (measured kbps vs each quality metric), one line per codec."""
    import matplotlib.ticker
    from matplotlib.figure import Figure

    metrics_ = [k for k in ("pesq_wb", "visqol", "stoi", "mel_distance") if k in summary[0]]
    fig = Figure(figsize=(4.5 * len(metrics_), 4))
    axes = fig.subplots(1, len(metrics_))
    for ax, key in zip(np.atleast_1d(axes), metrics_, strict=True):
        for name in dict.fromkeys(s["codec"] for s in summary):
            pts = sorted((s["kbps"], s[key]) for s in summary if s["codec"] == name and not math.isnan(s["kbps"]))
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=name)
        ref = [s[key] for s in summary if s["codec"] == "posterior-mean"]
        if ref:
            ax.axhline(ref[0], color="gray", linestyle="--", label="unquantized")
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 3, 6, 12, 24, 48])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("measured kbps")
        ax.set_title(key + (" (lower is better)" if key == "mel_distance" else ""))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(title)
    out.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out / f"{title.split()[0]}_rate_quality.png")
