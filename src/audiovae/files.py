"""Writing files so that a reader never sees half of one: into a temp file next to it, renamed into place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """A temp path next to ``path`` for the block to write; when the block succeeds it is synced to disk (so a
    crash cannot leave an empty file) and renamed onto ``path`` (mode 644), else removed: ``path`` is either its
    old self or the whole new file. Without ``overwrite`` an existing ``path``, also one created meanwhile, raises
    FileExistsError and is left as it is."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: never clobbers
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) at once."""
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
