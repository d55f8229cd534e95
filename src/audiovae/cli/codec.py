"""``compress``, ``decompress``, ``reconstruct``, ``info`` and ``codec fit``."""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import typer

from audiovae.cli.common import app, codec_app, console, err_console, refuse_existing, to_stdout
from audiovae.errors import AudioVAEError


@app.command()
def info(
    file: Path = typer.Argument(..., help="Audio file (WAV, FLAC, Ogg, Opus, MP3, ...)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a spectrogram PNG to this path."),
) -> None:
    """Duration, sample rate, channels, peak and loudness of an audio file."""
    from rich.markup import escape

    from audiovae import audio

    if plot is not None and not plot.parent.is_dir():  # before the work, not after it
        raise AudioVAEError(f"{plot}: folder {plot.parent} does not exist")
    if plot is not None:
        refuse_existing(plot, True, file)
    meta = audio.info(file)
    x, sr = audio.load(file)
    peak = float(abs(x).max())
    lufs = audio.loudness_lufs(x, sr)
    console.print(f"[bold]{escape(str(file))}[/bold]", soft_wrap=True)
    console.print(f"  format      {meta.format} / {meta.subtype}", highlight=False)
    console.print(f"  duration    {x.shape[1] / sr:.3f} s ({x.shape[1]} frames)")
    console.print(f"  sample rate {sr} Hz")
    console.print(f"  channels    {x.shape[0]}")
    console.print(f"  peak        {20 * math.log10(max(peak, 1e-12)):.1f} dBFS")
    if math.isfinite(lufs):
        console.print(f"  loudness    {lufs:.1f} LUFS")
    else:
        console.print("  loudness    n/a (silent, or shorter than 0.4 s)")
    if plot is not None:
        from audiovae.plots import save_spectrogram

        save_spectrogram(plot, x, sr, title=file.name)
        console.print(f"  spectrogram {escape(str(plot))}")


@app.command()
def reconstruct(
    input: Path = typer.Argument(..., help="Audio file to encode and decode."),
    output: Path = typer.Argument(..., help="WAV or FLAC to write."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Encode to the posterior mean and decode (rate and channels of the input are kept), block by block."""
    from audiovae import audio
    from audiovae.inference import block_frames, reconstruct_blocks
    from audiovae.registry import load

    refuse_existing(output, force, input)
    meta = _audio_info(input)
    blocks = audio.blocks(input, block_frames(meta.sample_rate))
    audio.save_blocks(output, reconstruct_blocks(load(model), blocks, meta.sample_rate, meta.channels, meta.frames),
                      meta.sample_rate, meta.channels)
    console.print(f"wrote {output}")


def _audio_info(path: Path):
    from audiovae import audio

    meta = audio.info(path)
    if meta.frames == 0:
        raise audio.AudioError(f"{path}: no audio samples (0 frames)")
    return meta


@app.command()
def compress(
    input: Path = typer.Argument(..., help="Audio file (any rate, channels, WAV/FLAC/Ogg/MP3), or - for stdin."),
    output: Path = typer.Argument(..., help="The .avae file to write, or - for stdout."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder."),
    kbps: float | None = typer.Option(None, "--kbps", help="Target average bitrate (picks the quality)."),
    quality: int | None = typer.Option(None, "--quality", help="Quality level 1 (smallest) .. 16 (best)."),
    refine: bool | None = typer.Option(None, "--refine/--no-refine", help="Add the envelope refinement layer "
                                       "(default: with --kbps from quality 4 on, without with --quality)."),
    extend: bool = typer.Option(True, "--extend/--no-extend", help="Rebuild the band above the model's from a "
                                "coded envelope (bandwidth extension; on where the input's rate has that band)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Compress audio with the neural codec, block by block (memory does not grow with the length)."""
    import tempfile

    from audiovae import audio
    from audiovae.codec.stream import Codec, check_kbps
    from audiovae.inference import block_frames

    refuse_existing(output, force, input)
    if kbps is not None and quality is not None:
        raise AudioVAEError("give --kbps or --quality, not both")
    if kbps is not None:
        check_kbps(kbps)
    with tempfile.TemporaryDirectory() as tmp:
        src = input
        if str(input) == "-":  # the length goes into the header: keep stdin in a file
            src = Path(tmp) / "stdin"
            with src.open("wb") as f:
                shutil.copyfileobj(sys.stdin.buffer, f)
        meta = _audio_info(src)
        codec = Codec(model)
        blocks = audio.blocks(src, block_frames(meta.sample_rate))
        with _output(output) as f:
            q = codec.write_blocks(f, blocks, meta.sample_rate, meta.channels, meta.frames, kbps=kbps, quality=quality,
                                   refine=refine, extend=None if extend else False)
            size = f.tell()
    rate = size * 8 / meta.duration / 1000
    err_console.print(f"{input} -> {output}: {size} bytes, {rate:.2f} kbps, quality {q}", soft_wrap=True)
    if kbps is not None and abs(rate - kbps) > 0.1 * kbps:
        err_console.print(f"warning: {output}: {rate:.2f} kbps misses the --kbps {kbps:g} target by more than 10 % "
                          "(the model's nearest quality level)", highlight=False, markup=False, soft_wrap=True)


@app.command()
def decompress(
    input: Path = typer.Argument(..., help="An .avae file, or - for stdin."),
    output: Path = typer.Argument(..., help="WAV or FLAC to write, or - for WAV on stdout."),
    model: str | None = typer.Option(None, "--model", help="Model folder (default: the model named in the file)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Decompress an .avae file (original rate and channels restored), block by block."""
    import tempfile

    from audiovae import audio
    from audiovae.codec.format import Reader
    from audiovae.codec.stream import Codec

    refuse_existing(output, force, input)
    name = "<stdin>" if str(input) == "-" else str(input)
    if str(input) != "-" and not input.is_file():
        raise AudioVAEError(f"{input}: no such file")
    with (sys.stdin.buffer if str(input) == "-" else input.open("rb")) as f:
        reader = Reader(f, name=name)
        codec = Codec.for_header(reader.header, model, name)
        h = reader.header
        sr = h.original_sample_rate
        if str(output) == "-":  # decoded into a temporary WAV first: no partial output on errors
            with tempfile.TemporaryDirectory() as tmp:
                wav = audio.save_blocks(Path(tmp) / "out.wav", codec.stream_decode(reader), sr, h.channels)
                with wav.open("rb") as w:
                    to_stdout(w)
        else:
            audio.save_blocks(output, codec.stream_decode(reader), sr, h.channels)
    err_console.print(f"{input} -> {output}: {sr} Hz, {h.channels} channel(s)")


@codec_app.command("fit")
def codec_fit(
    model: Path = typer.Argument(..., help="An exported model folder (NAME.json + NAME.safetensors)."),
    manifest: Path = typer.Option(..., help="Corpus manifest; its train split is used."),
    clips: int = typer.Option(400, help="Number of train clips to fit on."),
) -> None:
    """Fit the context entropy model on a model's train-split latents and store it with the model."""
    from audiovae import audio
    from audiovae.codec.stream import fit_for_model
    from audiovae.data.manifest import read_manifest, spread
    from audiovae.registry import load

    m = load(model)
    entries, _ = read_manifest(manifest, split="train")
    chosen = spread(entries, clips)
    waves = [audio.load(e.audio_path(manifest.parent), sample_rate=m.sample_rate, mono=True, offset=e.offset,
                        duration=e.duration)[0][0] for e in chosen]
    fit_for_model(m, waves, m.sample_rate)
    console.print(f"fitted the entropy model of {model} on {len(waves)} train clips")


@contextlib.contextmanager
def _output(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` (renamed into place, or copied to stdout for -) only when the
    block succeeds; on any error nothing is left behind."""
    import tempfile

    from audiovae.files import replaced

    stdout = str(path) == "-"
    if not stdout and not path.parent.is_dir():
        raise AudioVAEError(f"{path}: folder {path.parent} does not exist")
    try:
        if stdout:
            with tempfile.TemporaryFile() as f:  # nameless: nothing to leave behind
                yield f
                f.seek(0)
                to_stdout(f)
        else:
            with replaced(path) as tmp, tmp.open("w+b") as f:
                yield f
    except OSError as e:
        raise AudioVAEError(f"{path}: cannot write ({e.strerror or e})") from None
