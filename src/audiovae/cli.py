"""The ``audiovae`` command. Each command is a thin wrapper over the library."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from audiovae.errors import AudioVAEError

app = typer.Typer(
    help="Variational autoencoders for audio: compress, classify, generate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Build, inspect and shard training corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)


@app.command()
def info(
    file: Path = typer.Argument(..., help="Audio file (WAV, FLAC, Ogg, Opus, MP3, ...)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a spectrogram PNG to this path."),
) -> None:
    """Duration, sample rate, channels, peak and loudness of an audio file."""
    from audiovae import audio

    meta = audio.info(file)
    x, sr = audio.load(file)
    peak = float(abs(x).max())
    console.print(f"[bold]{file}[/bold]")
    console.print(f"  format      {meta.format} / {meta.subtype}")
    console.print(f"  duration    {x.shape[1] / sr:.3f} s ({x.shape[1]} frames)")
    console.print(f"  sample rate {sr} Hz")
    console.print(f"  channels    {x.shape[0]}")
    console.print(f"  peak        {20 * __import__('math').log10(max(peak, 1e-12)):.1f} dBFS")
    console.print(f"  loudness    {audio.loudness_lufs(x, sr):.1f} LUFS")
    if plot is not None:
        from audiovae.plots import save_spectrogram

        save_spectrogram(plot, x, sr, title=file.name)
        console.print(f"  spectrogram {plot}")


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), help="Folder for the demo's outputs."),
) -> None:
    """Run what the shipped models can do on the shipped clips."""
    from audiovae.demo import run_demo

    run_demo(out, console)


def main() -> None:
    try:
        app()
    except AudioVAEError as e:
        err_console.print(f"audiovae: error: {e}", highlight=False, markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("audiovae: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
