"""``generate``, ``continue``, ``interpolate``, ``arithmetic`` and ``transfer``."""

from __future__ import annotations

from pathlib import Path

import typer

from audiovae.cli.common import app, refuse_existing, say
from audiovae.cli.progress import bars


def _outputs(out: Path, count: int, stem: str) -> list[Path]:
    """``count`` output paths: OUT itself (an audio file name) or numbered files in OUT (a folder)."""
    if out.suffix.lower() in (".wav", ".flac"):
        return [out] if count == 1 else [out.with_name(f"{out.stem}-{k}{out.suffix}") for k in range(count)]
    out.mkdir(parents=True, exist_ok=True)
    return [out / f"{stem}-{k}.wav" for k in range(count)]


def _write(path: Path, x, sample_rate: int) -> None:
    from audiovae import audio

    audio.save(path, x, sample_rate)
    say(f"wrote {path}")


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="A .wav/.flac file, or a folder for numbered files."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    label: str | None = typer.Option(None, "--label", help="Condition on this label (see the error for the list)."),
    seconds: float = typer.Option(4.0, "--seconds", help="Length of each clip."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (> 0)."),
    guidance: float | None = typer.Option(None, "--guidance", help="Classifier-free guidance scale "
                                          "(1: plain conditional; default: the prior's, 3 unless set at export)."),
    classifier_guidance: float | None = typer.Option(
        None, "--classifier-guidance", help="Weight of the prior's label guide (0: off; default: the prior's)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the first clip (clip k uses seed + k)."),
    n: int = typer.Option(1, "-n", min=1, help="Number of clips."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
) -> None:
    """Sample new audio from the model's latent prior (deterministic for a seed)."""
    from audiovae.generate import Generator

    gen = Generator(model)
    gen.frames(seconds), gen.label_index(label)  # bad arguments fail before any output is written
    paths = _outputs(out, n, f"{gen.model.name}-{label or 'any'}-seed{seed}")
    for p in paths:
        refuse_existing(p, force)
    with bars() as b:
        for k, p in b.files(list(enumerate(paths))) if n > 1 else enumerate(paths):
            with b.task(f"generate {p.name}") as progress:
                x = gen.sample(seconds, label, temperature, guidance, seed + k, classifier_guidance, progress)
            _write(p, x, gen.sample_rate)


@app.command("continue")
def continue_(
    prompt: Path = typer.Argument(..., help="Audio to continue (any rate; mixed to mono)."),
    out: Path = typer.Option(..., "--out", help="WAV or FLAC: the prompt's reconstruction and its continuation."),
    seconds: float = typer.Option(4.0, "--seconds", help="Seconds to add."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    label: str | None = typer.Option(None, "--label", help="Condition the continuation on this label."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (> 0)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Continue a clip with the latent prior."""
    from audiovae import audio
    from audiovae.generate import Generator

    refuse_existing(out, force, prompt)
    gen = Generator(model)
    x, sr = audio.load(prompt)
    with bars() as b, b.task(f"continue {prompt.name}") as progress:
        x = gen.continue_audio(x, sr, seconds, label, temperature, seed=seed, progress=progress)
    _write(out, x, gen.sample_rate)


@app.command()
def interpolate(
    a: Path = typer.Argument(..., help="Start clip."),
    b: Path = typer.Argument(..., help="End clip."),
    out: Path = typer.Option(..., "--out", help="Folder for step-0.wav .. step-(N-1).wav."),
    steps: int = typer.Option(8, "--steps", min=2, help="Number of clips from A to B (ends included)."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
) -> None:
    """Morph A into B: spherical interpolation of their latent sequences (cut to the shorter)."""
    from audiovae import audio
    from audiovae.generate import Generator

    gen = Generator(model)
    paths = _outputs(out, steps, "step")
    for p in paths:
        refuse_existing(p, force, a, b)
    (xa, sra), (xb, srb) = audio.load(a), audio.load(b)
    with bars() as bs, bs.task(f"interpolate {a.name} {b.name}") as progress:
        clips = gen.interpolate(xa, sra, xb, srb, steps, progress)
    for p, x in zip(paths, clips, strict=True):
        _write(p, x, gen.sample_rate)


@app.command()
def arithmetic(
    clip: Path = typer.Argument(..., help="Clip whose content is kept."),
    minus: Path = typer.Option(..., "--minus", help="Clip whose average character is taken out."),
    plus: Path = typer.Option(..., "--plus", help="Clip whose average character is put in."),
    out: Path = typer.Option(..., "--out", help="WAV or FLAC to write (at the model's rate)."),
    scale: float = typer.Option(1.0, "--scale", help="How far to move (0: the clip's reconstruction)."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (with a prior)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Latent arithmetic: CLIP - MINUS + PLUS on time-averaged latents (e.g. swap the voice or recording)."""
    from audiovae import audio
    from audiovae.generate import Generator

    refuse_existing(out, force, clip, minus, plus)
    gen = Generator(model)
    with bars() as b, b.task(f"arithmetic {clip.name}"):
        x = gen.arithmetic(*audio.load(clip), audio.load(minus), audio.load(plus), scale)
    _write(out, x, gen.sample_rate)


@app.command()
def transfer(
    content: Path = typer.Argument(..., help="Audio whose content is kept."),
    out: Path = typer.Option(..., "--out", help="WAV or FLAC to write (at the target model's rate)."),
    model: str = typer.Option("music24k", "--model", help="Target model: its decoder renders the result."),
    source: str = typer.Option("speech16k", "--source", help="Model that encodes the content."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Timbre transfer: encode with --source, map latent statistics, decode with --model (channels kept)."""
    from audiovae import audio
    from audiovae.generate import Generator
    from audiovae.generate import transfer as run

    refuse_existing(out, force, content)
    target = Generator(model)
    x, sr = audio.load(content)
    with bars() as b, b.task(f"transfer {content.name}"):
        x = run(x, sr, source, target)
    _write(out, x, target.sample_rate)
