"""Writing files so that a reader never sees half of one: into a temp file next to it, renamed into place."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def umask_mode() -> int:
    """The mode a new file gets from the process's umask (0o666 & ~umask), as ``open`` would create it."""
    mask = os.umask(0o077)  # reading it means setting it: meanwhile, the strictest
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def replaced(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """A temp path next to ``path`` for the block to write; when the block succeeds it is synced to disk (so a
    crash cannot leave an empty file), given the umask's mode and renamed onto ``path``, else removed: ``path`` is
    either its old self or the whole new file. Without ``overwrite`` an existing ``path``, also one created
    meanwhile, raises FileExistsError and is left as it is. An OSError about the temp file (creating, writing,
    renaming it) is raised naming ``path``."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"  # named before it exists: whenever a signal
    try:  # unwinds this, the finally below removes whatever was created
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: never clobbers
    except OSError as e:
        if e.errno is None or e.filename not in (None, str(tmp)):  # not about the temp file: the caller's
            raise
        raise type(e)(e.errno, e.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) at once."""
    with replaced(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
