"""The ``audiovae`` Typer app, its command groups and consoles, and what several command groups share."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
codec_app = typer.Typer(help="Entropy models for the codec.", no_args_is_help=True)
app.add_typer(codec_app, name="codec")
bench_app = typer.Typer(help="Benchmarks: CSV + Markdown tables and plots.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
classify_app = typer.Typer(help="Fit, apply and evaluate classifiers on embeddings.", no_args_is_help=True)
app.add_typer(classify_app, name="classify")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from audiovae import __version__

        console.print(f"audiovae {__version__}")
        raise typer.Exit()


@dataclass
class Output:
    """What the global options asked of the commands' own output: ``level`` -1 (-q), 0 or 1 (-v); ``progress``:
    bars also when stderr is not a terminal; ``stderr``: the console of such bars while they are drawn (the lines on
    stderr go through it, above them)."""

    level: int = 0
    progress: bool = False
    stderr: Console | None = None


output = Output()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit."),
             quiet: bool = typer.Option(False, "-q", "--quiet", help="Only errors and warnings (no progress bars, "
                                        "no informational lines)."),
             verbose: bool = typer.Option(False, "-v", "--verbose", help="More detail: the model's sha256, the "
                                          "codec's layers, timings and speed."),
             progress: bool = typer.Option(False, "--progress", help="Progress bars (on stderr) also when stderr "
                                           "is not a terminal.")) -> None:
    """Options of the audiovae command itself, given before the command (``audiovae -q compress ...``)."""
    if quiet and verbose:
        raise AudioVAEError("give -q or -v, not both")
    output.level, output.progress = -1 if quiet else int(verbose), progress


def _line(text: str) -> None:
    (output.stderr or err_console).print(text, highlight=False, markup=False, soft_wrap=True)


def say(text: str) -> None:
    """An informational line on stderr (not with -q)."""
    if output.level >= 0:
        _line(text)


def detail(text: str) -> None:
    """A line on stderr with -v only."""
    if output.level > 0:
        _line(text)


def warn(text: str) -> None:
    """A warning line on stderr (also with -q)."""
    _line(f"warning: {text}")


def report_error(e: Exception) -> None:
    """The one line on stderr that reports ``e`` (an AudioVAEError, or an OSError not met where its path is known)."""
    text = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename and e.strerror else str(e)
    _line(f"audiovae: error: {text}")


def check_suffix(path: Path, suffixes: Iterable[str], writes: str) -> None:
    """Refuse an output named for another format than the one written (``-``, stdout, passes)."""
    suffixes = tuple(suffixes)
    if str(path) != "-" and path.suffix.lower() not in suffixes:
        raise AudioVAEError(f"{path}: {writes}: name it {' or '.join(f'*{s}' for s in suffixes)}")


def refuse_existing(path: Path, force: bool, *inputs: Path) -> None:
    """Refuse an existing output without ``force``, and an output that is one of ``inputs`` (same file, also
    through a link) even with it."""
    if str(path) == "-" or not path.exists():
        return
    for i in inputs:
        if str(i) != "-" and i.exists() and os.path.samefile(i, path):
            raise AudioVAEError(f"{path}: is the input {i} (not overwriting an input, even with --force)")
    if not force:
        raise AudioVAEError(f"{path}: already exists (use --force to overwrite)")


def to_stdout(f: BinaryIO | None = None) -> None:
    """Copy ``f`` to stdout and flush it: a closed pipe or a full disk is a one-line error."""
    try:
        if f is not None:
            shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.flush()
    except OSError as e:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left in the buffer: nowhere
        raise AudioVAEError(f"<stdout>: cannot write ({e.strerror or e})") from None
