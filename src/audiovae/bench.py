"""Benchmarks that write CSV, Markdown and plots: model speed and memory, reconstruction quality on a
corpus test split, and the training curve (quality against CPU minutes)."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audiovae import audio, metrics
from audiovae.data.manifest import read_manifest, spread
from audiovae.errors import AudioVAEError
from audiovae.files import replaced, write_text
from audiovae.inference import reconstruct
from audiovae.models.vae import VAE
from audiovae.plots import save_figure


def write_table(rows: list[dict], out: Path, stem: str, title: str) -> tuple[Path, Path]:
    """rows -> OUT/STEM.csv and OUT/STEM.md (a Markdown table for the README)."""
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    with replaced(csv_path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)

    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = [f"**{title}**", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


@torch.no_grad()
def speed(model: VAE, seconds: float = 60.0, repeats: int = 3) -> dict:
    """Encode and decode times on one thread, as multiples of real time (best of ``repeats``)."""
    torch.set_num_threads(1)
    x = torch.randn(1, int(seconds * model.sample_rate)) * 0.1
    model.reconstruct(x[:, : model.sample_rate])  # warm-up
    enc = dec = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        z = model.encode(x).mean
        t1 = time.perf_counter()
        model.decode(z)
        t2 = time.perf_counter()
        enc, dec = min(enc, t1 - t0), min(dec, t2 - t1)
    return {"model": getattr(model, "name", "model"), "encode_x_realtime": seconds / enc,
            "decode_x_realtime": seconds / dec, "encode_decode_x_realtime": seconds / (enc + dec),
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6}


def demo_speech(sample_rate: int) -> np.ndarray:
    """The shipped demo speech clips (test-split audio), joined, mono float32 at ``sample_rate``."""
    from audiovae.demo import ASSETS

    clips = sorted(ASSETS.glob("*.flac"))
    if not clips:
        raise AudioVAEError(f"no demo clips in {ASSETS}")
    return np.concatenate([audio.load(c, sample_rate=sample_rate, mono=True)[0][0] for c in clips])


def codec_speed(codec, seconds: float = 60.0, repeats: int = 3) -> dict:
    """End-to-end codec speed on one thread, as multiples of real time (best of ``repeats``): compress
    (VAE encoder, quantization, entropy coding, container) and decompress at quality 7 and at 6 kbps (with
    the envelope refinement where --kbps adds it), of ``seconds`` of the looped demo speech at the model's
    rate."""
    torch.set_num_threads(1)
    sr = codec.model.sample_rate
    x = np.resize(demo_speech(sr), int(seconds * sr))[None]
    codec.decompress(codec.compress(x[:, :sr], sr))  # warm-up
    best, files = {}, {}
    for _ in range(repeats):
        for name, kwargs in (("q7", {"quality": 7}), ("6kbps", {"kbps": 6.0})):
            t0 = time.perf_counter()
            files[name] = codec.compress(x, sr, **kwargs)
            t1 = time.perf_counter()
            codec.decompress(files[name])
            t2 = time.perf_counter()
            best[name] = min(best.get(name, (math.inf,) * 2), (t1 - t0, t2 - t1), key=sum)
    row = {}
    for name, (enc, dec) in best.items():
        row |= {f"compress_{name}_x_rt": seconds / enc, f"decompress_{name}_x_rt": seconds / dec,
                f"codec_{name}_x_rt": seconds / (enc + dec)}
    return row | {f"kbps_{name}": len(data) * 8 / seconds / 1000 for name, data in files.items()}


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` on one thread; (its peak RSS in MB, wall seconds). A failure raises with its last error line."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines() or [f"exit status {p.returncode}"]
            raise AudioVAEError(f"{' '.join(cmd[2:4])} failed: {lines[-1]}")
    return usage.ru_maxrss / 1024, wall


def memory(model: str, minutes: list[float], workdir: Path) -> list[dict]:
    """Peak RSS and wall time of ``audiovae compress`` (quality 7) and ``decompress``, each a fresh
    process on one thread, for files of each length (the looped demo speech at the model's rate)."""
    from audiovae.registry import load

    sr = load(model).sample_rate
    clip = demo_speech(sr)
    rows = []
    for mins in minutes:
        n = int(mins * 60 * sr)
        wav, avae, out = (workdir / f"memory_{mins:g}min{ext}" for ext in (".wav", ".avae", "_decoded.wav"))
        audio.save_blocks(wav, (clip[None, : n - i] for i in range(0, n, len(clip))), sr, 1)
        cli = [sys.executable, "-m", "audiovae"]
        c_mb, c_s = run_measured([*cli, "compress", str(wav), str(avae), "--model", model, "--quality", "7", "--force"])
        d_mb, d_s = run_measured([*cli, "decompress", str(avae), str(out), "--model", model, "--force"])
        rows.append({"model": Path(model).name, "minutes": mins, "compress_peak_rss_MB": c_mb,
                     "decompress_peak_rss_MB": d_mb, "compress_s": c_s, "decompress_s": d_s,
                     "kbps": avae.stat().st_size * 8 / (mins * 60) / 1000})
        for f in (wav, avae, out):
            f.unlink()
    return rows


def training_throughput(model: VAE, batch: int = 8, crop_seconds: float = 0.5, steps: int = 10) -> dict:
    """Stage-1 training steps per second on one thread, and audio seconds processed per second."""
    from audiovae.config import LossConfig
    from audiovae.losses import ReconstructionLoss, kl_loss

    torch.set_num_threads(1)
    model = VAE(model.config).train()
    loss_fn = ReconstructionLoss(LossConfig(), model.sample_rate)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n = int(crop_seconds * model.sample_rate) // model.hop_length * model.hop_length
    x = torch.randn(batch, n) * 0.1
    valid = n - model.latency
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        post = model.encode(x)
        loss = loss_fn(model.decode(post.sample())[:, :valid], x[:, :valid])[0] + 1e-4 * kl_loss(post)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step = float(np.median(times[2:]))
    return {"train_steps_per_min": 60 / step, "train_audio_s_per_s": batch * n / model.sample_rate / step}


def quality(model: VAE, manifest: str | Path, split: str = "test", max_clips: int = 200,
            progress=None) -> list[dict]:
    """Per-clip posterior-mean reconstruction metrics on one split of a corpus manifest."""
    entries, _ = read_manifest(manifest, split=split)
    if not entries:
        raise AudioVAEError(f"{manifest}: no entries in split '{split}'")
    chosen = spread(entries, max_clips)
    root = Path(manifest).parent
    rows = []
    for i, e in enumerate(chosen):
        x, sr = audio.load(e.audio_path(root), mono=True, offset=e.offset, duration=e.duration)
        y = reconstruct(model, x, sr)
        ref, est = x[0], y[0]
        row = {"id": e.id, "source": e.source, "seconds": round(e.duration, 2),
               "mel_distance": metrics.mel_distance(ref, est, sr), "si_sdr": metrics.si_sdr(ref, est),
               "ripple_ratio": metrics.ripple_ratio(ref, est, sr)}
        if model.sample_rate == 16000:
            row["pesq_wb"] = metrics.pesq_wb(ref, est, sr)
            row["stoi"] = metrics.stoi(ref, est, sr)
        rows.append(row)
        if progress:
            progress(i + 1, len(chosen))
    return rows


def summarize(rows: list[dict], by: str = "source") -> list[dict]:
    """Mean of each metric over all rows and per ``by`` value."""
    keys = [k for k in ("pesq_wb", "stoi", "si_sdr", "mel_distance", "ripple_ratio") if k in rows[0]]
    groups = {"all": rows} | {g: [r for r in rows if r[by] == g] for g in sorted({r[by] for r in rows})}
    out = []
    for g, rs in groups.items():
        s = {by: g, "clips": len(rs)}
        for k in keys:
            vals = [r[k] for r in rs if not math.isnan(r[k])]
            s[k] = float(np.mean(vals)) if vals else math.nan
        out.append(s)
    return out


def training_curve(run_dir: Path, out: Path) -> Path:
    """Plot validation PESQ / mel distance against training wall-clock minutes from a run's CSV logs."""
    from matplotlib.figure import Figure

    rows = []
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with path.open() as f:
            rows += list(csv.DictReader(f))
    val = [r for r in rows if r.get("val/mel")]
    if not val:
        raise AudioVAEError(f"{run_dir}: no validation results in logs/version_*/metrics.csv yet")
    x = [float(r["val/minutes"]) for r in val]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "val/pesq", "wideband PESQ (valid split)"),
                           (axes[1], "val/mel", "log-mel distance (valid split)")):
        ax.plot(x, [float(r[key]) if r.get(key) else math.nan for r in val], marker="o")
        ax.set_xlabel("training minutes (wall clock, 1 CPU thread)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    out.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out / f"curve_{run_dir.name}.png")



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
    from audiovae.codec import baselines

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
