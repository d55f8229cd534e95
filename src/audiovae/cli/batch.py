"""One command over many files in one process (``compress a.wav b.flac --out-dir DIR``): the outputs' names, and
a loop that reports a failing file and goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from audiovae.cli.common import report_error
from audiovae.cli.progress import Bars
from audiovae.errors import AudioVAEError


def jobs(paths: list[Path], out_dir: Path | None, suffix: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs: ``IN OUT`` without ``out_dir``; with it, every path is an input written into
    ``out_dir`` (created if missing) as its stem + ``suffix``. Two inputs that would write one output are
    refused before any work."""
    if out_dir is None:
        if len(paths) != 2:
            raise AudioVAEError(f"give IN OUT, or input files and --out-dir DIR (got {len(paths)} paths)")
        return [(paths[0], paths[1])]
    if any(str(p) == "-" for p in paths):
        raise AudioVAEError("- (stdin) goes with IN OUT, not with --out-dir")
    if out_dir.exists() and not out_dir.is_dir():
        raise AudioVAEError(f"{out_dir}: not a folder (--out-dir)")
    pairs, written = [], {}
    for p in paths:
        out = out_dir / (p.stem + suffix)
        if out in written:
            raise AudioVAEError(f"{out}: both {written[out]} and {p} would be written there (rename one)")
        written[out] = p
        pairs.append((p, out))
    out_dir.mkdir(parents=True, exist_ok=True)
    return pairs


def run(pairs: list[tuple[Path, Path]], one: Callable[[Path, Path], None], bars: Bars, many: bool) -> None:
    """``one(input, output)`` for each pair. With ``many``, a file that fails prints its one-line error and the
    rest go on, and the batch fails at the end if any did; else an error ends the command."""
    if not many:
        one(*pairs[0])
        return
    failed = 0
    for src, dst in bars.files(pairs):
        try:
            one(src, dst)
        except (AudioVAEError, OSError) as e:
            report_error(e)
            failed += 1
    if failed:
        raise AudioVAEError(f"{failed} of {len(pairs)} files failed")
