"""``make demo``: what the shipped models do, end to end, on the shipped clips."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from audiovae.errors import AudioVAEError
from audiovae.resources import resource

ASSETS = resource("assets", "demo")
DEMO_KBPS = (3.0, 6.0)


def run_demo(out: Path, console: Console, progress: Callable[[int, int], None] | None = None) -> None:
    """Print on ``console`` and write into ``out`` what the shipped models do with the demo clips; ``progress(done,
    total)`` is called after each clip, the classification and the generation."""
    from audiovae import audio, metrics
    from audiovae.codec.stream import Codec
    from audiovae.plots import save_spectrogram
    from audiovae.registry import list_models, load

    clips = sorted(ASSETS.glob("*.flac"))
    if not clips:
        raise AudioVAEError(f"no demo clips in {ASSETS}: this installation is incomplete (reinstall audiovae)")
    out.mkdir(parents=True, exist_ok=True)
    step = count(1)

    def done() -> None:
        if progress is not None:
            progress(next(step), len(clips) + 2)

    shipped = list_models()
    table = Table(title="shipped models on the demo clips (test-split audio, never trained on)")
    for col in ("clip", "model", "mode", "kbps", "PESQ", "STOI", "SI-SDR", "mel dist"):
        table.add_column(col)
    for clip in clips:
        x, sr = audio.load(clip)
        console.print(f"[bold]{clip.name}[/bold]: {x.shape[1] / sr:.2f} s, {sr} Hz, {x.shape[0]} channel(s), "
                      f"{audio.loudness_lufs(x, sr):.1f} LUFS")
        save_spectrogram(out / f"{clip.stem}.png", x, sr, title=clip.name)
        model_name, short = clip.stem.split("_", 1)
        if model_name not in shipped:
            table.add_row(short, f"{model_name}: not shipped yet", "", "", "", "", "", "")
            done()
            continue
        model = load(model_name)
        from audiovae.inference import reconstruct

        y = reconstruct(model, x, sr)
        table.add_row(short, model_name, "posterior mean", "-", *_scores(x, y, sr))
        audio.save(out / f"{clip.stem}_reconstructed.wav", y, sr)
        codec = Codec(model)
        for kbps in DEMO_KBPS:
            data = codec.compress(x, sr, kbps=kbps)
            (out / f"{clip.stem}_{kbps:g}kbps.avae").write_bytes(data)
            y, _ = codec.decompress(data)
            audio.save(out / f"{clip.stem}_{kbps:g}kbps.wav", y, sr)
            real = len(data) * 8 / (x.shape[1] / sr) / 1000
            table.add_row(short, model_name, f"codec --kbps {kbps:g}", f"{real:.2f}", *_scores(x, y, sr))
        save_spectrogram(out / f"{clip.stem}_{DEMO_KBPS[-1]:g}kbps.png", y, sr,
                         title=f"{clip.name} through the codec at {DEMO_KBPS[-1]:g} kbps")
        done()
    console.print(table)
    if not metrics.has_pesq():
        console.print("PESQ and STOI need the bench extra: pip install 'audiovae[bench]'", markup=False)
    _classify(clips, console)
    done()
    _generate(out, console)
    done()


def _classify(clips: list[Path], console: Console) -> None:
    """Spoken language of each clip from the shipped probe on speech16k embeddings."""
    from audiovae import audio
    from audiovae.classify import Classifier
    from audiovae.registry import PRETRAINED_DIR, load

    folder = PRETRAINED_DIR / "speech16k-language"
    if not (folder / "classifier.json").exists():
        return
    clf = Classifier.load(folder)
    model = load("speech16k")
    for clip in clips:
        x, sr = audio.load(clip)
        probs = clf.predict_proba(clf.embed(model, x, sr, str(clip))[None])[0]
        best = int(np.argmax(probs))
        console.print(f"language of {clip.name}: [bold]{clf.classes[best]}[/bold] (p = {probs[best]:.2f}; "
                      f"{len(clf.classes)} languages, probe on speech16k embeddings)")


def _generate(out: Path, console: Console, seconds: float = 3.0) -> None:
    """Clips sampled from the shipped speech16k's latent prior, one per demo language when it knows them."""
    from audiovae import audio
    from audiovae.generate import Generator

    try:
        gen = Generator("speech16k")
    except AudioVAEError as e:
        console.print(f"generation skipped: {e}")
        return
    labels = [lb for lb in ("cs", "nl") if lb in gen.labels] or [None]
    for label in labels:
        path = out / f"generated_{label or 'unconditional'}.wav"
        audio.save(path, gen.sample(seconds=seconds, label=label, seed=0), gen.sample_rate)
        console.print(f"generated {seconds:g} s of speech{f' in {label!r}' if label else ''} "
                      f"from the latent prior: {path}")


def _scores(x, y, sr) -> list[str]:
    """PESQ, STOI, SI-SDR and mel distance of the first channels; "-" where undefined or not installed."""
    from audiovae.app.api import scores

    s = scores(x[0], y[0], sr)
    return ["-" if v is None else f.format(v) for v, f in zip(s.values(), ("{:.2f}", "{:.3f}", "{:.1f} dB", "{:.3f}"),
                                                             strict=True)]
