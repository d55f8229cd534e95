"""Benchmarks of a model that write CSV, Markdown and plots: speed and memory, reconstruction quality on a
corpus test split, and the training curve (quality against CPU minutes); ``write_table`` for every benchmark."""

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
from audiovae.config import LossConfig
from audiovae.data.manifest import read_manifest, spread
from audiovae.errors import AudioVAEError
from audiovae.files import replaced, write_text
from audiovae.inference import reconstruct
from audiovae.losses import ReconstructionLoss, kl_loss
from audiovae.models.vae import VAE
from audiovae.plots import save_figure
from audiovae.registry import load


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
