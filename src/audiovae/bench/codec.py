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
# The targets (and, for music at 6 kbps, the aim beyond them): our codec at a measured rate of at most
# KBPS scores above CODEC at its nominal rate on every metric listed.
CODEC_TARGETS = {
    "speech": [(3.2, "codec2", 3.2, ("pesq_wb", "visqol")), (6.0, "opus", 6.0, ("pesq_wb", "visqol")),
               (6.0, "opus", 8.0, ("pesq_wb", "visqol")), (12.0, "opus", 12.0, ("pesq_wb", "visqol"))],
    "music": [(6.0, "opus", 12.0, ("visqol",)), (12.0, "opus", 12.0, ("visqol",))],
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


MIN_SECONDS = 2.0  # shorter clips: too few frames for ViSQOL's patches


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
    entries = [e for e in entries if e.duration >= MIN_SECONDS]
    if not entries:
        raise AudioVAEError(f"{manifest}: no clips of {MIN_SECONDS:g} s or more in split '{split}'")
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


FULLBAND_CONDITIONS = [("opus", 12.0), ("opus", 16.0), ("opus", 24.0), ("mp3", 16.0), ("mp3", 24.0)]
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")


def fullband_benchmark(codec, folder: str | Path, max_clips: int = 16, seconds: float = 10.0,
                       ours_kbps=(12.0,), classics: bool = True, progress=None,
                       figure: Path | None = None) -> list[dict]:
    """Full-band files (each at its own rate, downmixed to mono; one clip of ``seconds`` from the middle of each
    of the first ``max_clips`` files of ``MIN_SECONDS`` or more in ``folder``): ours with and without the
    bandwidth extension at each ``ours_kbps``, and Opus and MP3 (``FULLBAND_CONDITIONS``). Per clip and
    condition: measured kbps (and the extension's share), ViSQOL audio mode, the band-energy error and the LTAS
    ripple ratio over the band from the model's Nyquist to the original's real bandwidth (NaN where under 1 kHz),
    encode and decode x-realtime (one thread). ``figure``: spectrograms of the first clip (original, ours with and
    without, Opus 16)."""
    torch.set_num_threads(1)
    files = [p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES
             and audio.info(p).duration >= MIN_SECONDS][:max_clips]
    if not files:
        raise AudioVAEError(f"{folder}: no audio files of {MIN_SECONDS:g} s or more ({', '.join(AUDIO_SUFFIXES)})")
    missing = baselines.missing_tools()
    conditions = [(f"audiovae{s}", float(k)) for k in ours_kbps for s in ("", "-no-extend")]
    conditions += [c for c in FULLBAND_CONDITIONS if classics and baselines.TOOLS[c[0]][1] not in missing]
    rows, total, done = [], len(files) * len(conditions), 0
    for i, path in enumerate(files):
        x, sr = audio.load(path, mono=True, offset=max(0.0, (audio.info(path).duration - seconds) / 2),
                           duration=seconds)
        ref = x[0]
        lo, top = codec.model.sample_rate / 2, min(bandwidth(ref, sr), 20000.0)
        band = top - lo >= 1000
        shown = {"original": ref}
        for name, kbps in conditions:
            y, rate, ext, enc_s, dec_s = _run_fullband(codec, name, kbps, ref, sr)
            dur = len(ref) / sr
            rows.append({"clip": path.stem, "sample_rate": sr, "codec": name, "nominal_kbps": kbps, "kbps": rate,
                         "ext_kbps": ext, "visqol": metrics.visqol(ref, y, sr, "audio"),
                         "band_error_db": band_error_db(ref, y, sr, lo, top) if band else math.nan,
                         "ripple_ratio": metrics.ltas_ripple(y, sr, band=(lo, top))
                         / max(metrics.ltas_ripple(ref, sr, band=(lo, top)), 1e-6) if band else math.nan,
                         "encode_x_rt": dur / enc_s, "decode_x_rt": dur / dec_s})
            if (name, kbps) in ((c, ours_kbps[0]) for c in ("audiovae", "audiovae-no-extend")) or \
                    (name, kbps) == ("opus", 16.0):
                shown[f"{name} {kbps:g} kbps"] = y
            done += 1
            if progress:
                progress(done, total)
        if figure is not None and i == 0:
            save_spectrograms(figure, shown, sr, path.stem)
    return rows


def _run_fullband(codec, name: str, kbps: float, ref: np.ndarray, sr: int):
    """(decoded, measured kbps, the extension's kbps, encode s, decode s) of one condition."""
    from audiovae.codec.format import layer_bytes

    if name.startswith("audiovae"):
        t0 = time.perf_counter()
        data = codec.compress(ref, sr, kbps=kbps, extend=None if name == "audiovae" else False)
        t1 = time.perf_counter()
        y, _ = codec.decompress(data)
        t2 = time.perf_counter()
        kbit = 8 / (len(ref) / sr) / 1000  # kbps per byte
        return y[0], len(data) * kbit, layer_bytes(data)["extension"] * kbit, t1 - t0, t2 - t1
    coded = baselines.roundtrip(name, ref, sr, kbps)
    return coded.audio, coded.kbps, math.nan, coded.encode_s, coded.decode_s


def bandwidth(x: np.ndarray, sr: int, floor_db: float = 60.0) -> float:
    """The highest frequency whose long-term level is within ``floor_db`` of the 1-4 kHz median: a lossy
    original's real band (an Ogg at 44.1 kHz often stops near 18 kHz)."""
    db, f = metrics.ltas_db(x, sr)
    return float(f[np.flatnonzero(db > np.median(db[(f > 1000) & (f < 4000)]) - floor_db)[-1]])


BAND_FLOOR_DB = 48.0  # band_error_db: cells of the original this far below its loudest are not compared


def band_error_db(ref: np.ndarray, est: np.ndarray, sr: int, lo: float, hi: float) -> float:
    """Mean over 1 kHz bands in ``lo .. hi`` of the mean over 25 ms frames of |dB(est) - dB(ref)|, comparing only
    the (frame, band) cells whose level in the original is within ``BAND_FLOOR_DB`` of the original's loudest cell
    in ``lo .. hi``: a band or a frame that is empty or quiet in the original (a speech clip's top bands, its pauses)
    is not read as a large error when the codec leaves it silent (the extension drops levels 48 dB below the
    loudest, too). Bands with no such cell are left out; NaN if none is left."""
    hop = sr // 40
    frames = [np.lib.stride_tricks.sliding_window_view(s, 2 * hop)[::hop] for s in (ref, est)]
    spectra = [np.abs(np.fft.rfft(s * np.hanning(2 * hop), axis=-1)) ** 2 for s in frames]
    f = np.fft.rfftfreq(2 * hop, 1 / sr)
    bands = [sel for b in np.arange(lo, hi, 1000.0) if (sel := (f >= b) & (f < min(hi, b + 1000))).any()]
    if not bands:  # narrower than a bin
        return math.nan
    e = [np.stack([10 * np.log10(s[:, sel].mean(-1) + 1e-12) for sel in bands], axis=-1) for s in spectra]
    loud = e[0] > e[0].max() - BAND_FLOOR_DB  # (frames, bands)
    error = np.abs(e[1] - e[0])
    out = [error[loud[:, b], b].mean() for b in range(len(bands)) if loud[:, b].any()]
    return float(np.mean(out))


def save_spectrograms(path: Path, signals: dict[str, np.ndarray], sr: int, title: str) -> Path:
    """One spectrogram panel per named mono signal, stacked, with a shared colour scale."""
    from matplotlib.figure import Figure

    from audiovae.plots import log_spectrogram

    fig = Figure(figsize=(10.0, 2.6 * len(signals)))
    axes = np.atleast_1d(fig.subplots(len(signals), 1))
    top = None
    for ax, (name, x) in zip(axes, signals.items(), strict=True):
        db, hop_s = log_spectrogram(x, sr, n_fft=2048)
        top = db.max() if top is None else top
        ax.imshow(db, origin="lower", aspect="auto", extent=(0.0, db.shape[1] * hop_s, 0.0, sr / 2000),
                  cmap="magma", vmin=top - 90, vmax=top)
        ax.set_ylabel("kHz")
        ax.set_title(f"{title}: {name}")
    axes[-1].set_xlabel("seconds")
    return save_figure(fig, path)


def summarize_codec(rows: list[dict]) -> list[dict]:
    """Mean of every metric per (codec, nominal kbps), in the order the conditions ran."""
    keys = [k for k in ("kbps", "ext_kbps", "pesq_wb", "stoi", "visqol", "si_sdr", "mel_distance", "band_error_db",
                        "ripple_ratio", "encode_x_rt", "decode_x_rt") if k in rows[0]]
    out = []
    for cond in dict.fromkeys((r["codec"], r["nominal_kbps"]) for r in rows):
        rs = [r for r in rows if (r["codec"], r["nominal_kbps"]) == cond]
        s = {"codec": cond[0], "target_kbps": cond[1] or "-", "clips": len(rs)}
        for k in keys:
            vals = [r[k] for r in rs if not math.isnan(r[k])]
            s[k] = float(np.mean(vals)) if vals else math.nan
        out.append(s)
    return out


def codec_targets(summary: list[dict], sample_rate: int, rows: list[dict] | None = None) -> list[str]:
    """``CODEC_TARGETS`` (speech for 16 kHz models, music otherwise) checked on a ``summarize_codec`` table,
    one line per target: ours is the audiovae condition with the highest measured rate within the target. With
    the per-clip ``rows``, each score also gets the paired difference over the clips with its bootstrap 95 % CI."""
    lines = []
    for kbps, name, nominal, keys in CODEC_TARGETS["speech" if sample_rate == 16000 else "music"]:
        ours = [s for s in summary if s["codec"] == "audiovae" and s["kbps"] <= kbps]
        base = [s for s in summary if s["codec"] == name and s["target_kbps"] == nominal]
        what = f"audiovae at <= {kbps:g} kbps above {name} {nominal:g} kbps on {' and '.join(keys)}"
        if not ours or not base:
            lines.append(f"not measured: {what}")
            continue
        o, b = max(ours, key=lambda s: s["kbps"]), base[0]
        scores = ", ".join(f"{k} {o[k]:.3g} vs {b[k]:.3g}" + _paired(rows, o, b, k) for k in keys)
        met = "met" if all(o[k] > b[k] for k in keys) else "NOT met"
        lines.append(f"{met}: {what} ({o['kbps']:.2f} vs {b['kbps']:.2f} kbps measured: {scores})")
    return lines


def _paired(rows: list[dict] | None, ours: dict, base: dict, key: str, draws: int = 2000) -> str:
    """" (paired difference D, 95 % CI lo..hi)" of ``key`` between two summary rows' conditions, clip by clip."""
    if not rows:
        return ""
    by = {}
    for r in rows:
        by.setdefault(r["clip"], {})[r["codec"], r["nominal_kbps"]] = r.get(key, math.nan)
    a, b = (ours["codec"], ours["target_kbps"]), (base["codec"], base["target_kbps"])
    d = np.array([v[a] - v[b] for v in by.values() if a in v and b in v and not math.isnan(v[a] - v[b])])
    if len(d) < 2:
        return ""
    means = d[np.random.default_rng(0).integers(0, len(d), (draws, len(d)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return f" (paired difference {d.mean():+.3f}, 95 % CI {lo:+.3f}..{hi:+.3f})"


def plot_rate_quality(summary: list[dict], out: Path, title: str, stem: str | None = None) -> Path:
    """Rate-quality curves (measured kbps vs each quality metric), one line per codec, in ``out/STEM.png``
    (default stem: the title's first word and ``_rate_quality``)."""
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
    return save_figure(fig, out / f"{stem or title.split()[0] + '_rate_quality'}.png")
