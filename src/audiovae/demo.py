"""``make demo``: what the shipped models do, end to end, on the shipped clips."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "demo"


def run_demo(out: Path, console: Console) -> None:
    from audiovae import audio, metrics
    from audiovae.inference import reconstruct
    from audiovae.plots import save_spectrogram
    from audiovae.registry import list_models, load

    out.mkdir(parents=True, exist_ok=True)
    clips = sorted(ASSETS.glob("*.flac"))
    if not clips:
        console.print(f"no demo clips found in {ASSETS}")
        return
    shipped = list_models()
    table = Table(title="posterior-mean reconstruction with the shipped models")
    for col in ("clip", "model", "PESQ", "STOI", "SI-SDR", "mel dist"):
        table.add_column(col)
    for clip in clips:
        x, sr = audio.load(clip)
        console.print(f"[bold]{clip.name}[/bold]: {x.shape[1] / sr:.2f} s, {sr} Hz, {x.shape[0]} channel(s), "
                      f"{audio.loudness_lufs(x, sr):.1f} LUFS")
        save_spectrogram(out / f"{clip.stem}.png", x, sr, title=clip.name)
        model_name = clip.stem.split("_")[0]
        row = [clip.stem.split("_", 1)[-1]]
        if model_name not in shipped:
            table.add_row(*row, f"{model_name}: not shipped yet", "", "", "", "")
            continue
        y = reconstruct(load(model_name), x, sr)
        audio.save(out / f"{clip.stem}_decoded.wav", y, sr)
        save_spectrogram(out / f"{clip.stem}_decoded.png", y, sr, title=f"{clip.name} decoded by {model_name}")
        ref, est = x[0], y[0]
        pesq = metrics.pesq_wb(ref, est, sr) if model_name.startswith("speech") else math.nan
        stoi = metrics.stoi(ref, est, sr) if model_name.startswith("speech") else math.nan
        table.add_row(*row, model_name, f"{pesq:.2f}", f"{stoi:.3f}", f"{metrics.si_sdr(ref, est):.1f} dB",
                      f"{metrics.mel_distance(ref, est, sr):.3f}")
    console.print(table)
    console.print(f"spectrograms and decoded audio in {out}/")
