"""Progress bars on stderr for long commands: shown when stderr is a terminal or with ``--progress``, never with
``-q``; stdout (a ``-`` output) is never written to."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from audiovae.cli.common import err_console, output

T = TypeVar("T")


class Bars:
    """The bars of one command: ``track`` for the samples of one file, ``task`` for a library call's own progress
    callback, ``files`` for a batch."""

    def __init__(self, progress: Progress | None):
        self._progress = progress

    def track(self, blocks: Iterable[np.ndarray], total: int | None, description: str) -> Iterator[np.ndarray]:
        """``blocks`` of (channels, n) samples, passed on while a bar counts them to ``total`` (None: unknown)."""
        if self._progress is None:
            yield from blocks
            return
        task = self._progress.add_task(description, total=total)
        for x in blocks:
            self._progress.advance(task, x.shape[-1])
            yield x

    @contextlib.contextmanager
    def task(self, description: str) -> Iterator[Callable[[int, int], None] | None]:
        """A bar while the block runs, fed by the ``progress(done, total, what=None)`` callback it yields (None without
        bars; ``what`` renames the bar):
        pulsing until its first call (or throughout, for work that reports nothing), full when the block ends."""
        if self._progress is None:
            yield None
            return
        p = self._progress
        task = p.add_task(description, total=None)
        yield lambda done, total, what=None: p.update(task, completed=done, total=total,
                                                      **({"description": what} if what else {}))
        p.update(task, completed=1, total=1)

    def files(self, items: list[T]) -> Iterator[T]:
        """``items`` (one per file), a bar counting them; each file's own bars go once it is done."""
        if self._progress is None:
            yield from items
            return
        p = self._progress
        task = p.add_task(f"{len(items)} files", total=len(items))
        for item in items:
            yield item
            for other in [t for t in p.task_ids if t != task]:
                p.remove_task(other)
            p.advance(task)


def then(items: Iterable[T], start: Callable[[], object]) -> Iterator[T]:
    """``items``, then ``start()`` once the last one is taken (to show the work that follows them)."""
    yield from items
    start()


@contextlib.contextmanager
def bars(lines: Console = err_console) -> Iterator[Bars]:
    """The bars of a command, on stderr while the block runs; lines printed meanwhile on ``lines`` (a console)
    appear above them (stdout's: where stdout is the terminal too, the bars are drawn through it)."""
    if output.level < 0 or not (err_console.is_terminal or output.progress):
        yield Bars(None)
        return
    if err_console.is_terminal:
        console = lines if lines.is_terminal else err_console
    else:
        console = output.stderr = Console(stderr=True, force_terminal=True)
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, redirect_stdout=False) as p:
            yield Bars(p)
    finally:
        output.stderr = None
