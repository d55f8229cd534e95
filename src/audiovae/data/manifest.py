"""The corpus manifest: one JSON object per line, one line per clip.

Fields: ``id``, ``path`` (relative to the manifest's folder, or absolute), ``offset`` and
``duration`` (seconds into the file), ``sample_rate``, ``channels``, ``split``
(train / valid / test), ``source`` (Debian package or folder), ``license`` and ``labels``
(a flat dict: kind, language, speaker, text, instrument, family, synthetic, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from audiovae.errors import AudioVAEError
from audiovae.files import replaced

UNSEEN = "unseen"  # whole sources held out of training and tuning (see SourceConfig.holdout)
SPLITS = ("train", "valid", "test", UNSEEN)


class ManifestError(AudioVAEError):
    """A manifest that cannot be read at all."""


@dataclass
class Entry:
    id: str
    path: str
    offset: float
    duration: float
    sample_rate: int
    split: str
    source: str
    license: str
    channels: int = 1
    labels: dict = field(default_factory=dict)

    def audio_path(self, root: Path) -> Path:
        """Absolute path of the audio file, resolving a relative path against the manifest folder."""
        p = Path(self.path)
        return p if p.is_absolute() else root / p

    def label(self, key: str):
        return self.labels.get(key)


def split_for(key: str, valid: float = 0.05, test: float = 0.05) -> str:
    """Deterministic split from a hash of the *source file* key (never of a clip).

    The same key gives the same split on any machine and Python version (sha1, not ``hash``).
    """
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0**64
    if h < test:
        return "test"
    if h < test + valid:
        return "valid"
    return "train"


def spread(entries: list[Entry], n: int) -> list[Entry]:
    """At most ``n`` entries evenly spaced over the whole list (deterministic, every source represented)."""
    if len(entries) <= n:
        return list(entries)
    return [entries[(i * (len(entries) - 1)) // (n - 1)] for i in range(n)] if n > 1 else entries[:1]


def read_manifest(path: str | os.PathLike, split: str | None = None) -> tuple[list[Entry], int]:
    """Entries of a JSONL manifest (optionally one split) and the number of malformed lines skipped."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: no such manifest file")
    entries, skipped = [], 0
    with p.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                e = Entry(**d)
                if e.duration <= 0 or e.split not in SPLITS:
                    raise ValueError("bad duration or split")
            except (ValueError, TypeError):
                skipped += 1
                continue
            if split is None or e.split == split:
                entries.append(e)
    return entries, skipped


def write_manifest(path: str | os.PathLike, entries: Iterable[Entry]) -> Path:
    """Write entries as JSONL atomically (temp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with replaced(p) as tmp, tmp.open("w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(asdict(e), ensure_ascii=False, sort_keys=True) + "\n")
    return p
