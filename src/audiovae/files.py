"""Writing files so that a reader never sees half of one: into a temp file next to it, renamed into place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path next to ``path`` for the block to write; renamed onto ``path`` (mode 644) when the block
    succeeds, removed when it fails, so ``path`` is either its old self or the whole new file."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) at once."""
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
