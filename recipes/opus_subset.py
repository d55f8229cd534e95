"""Pack a subset of a corpus into a few long Opus files plus a manifest, for training on a remote
accelerator that only a small upload reaches (the shipped speech16k's GPU run used 3.1 h at 24 kbps,
37 MB). Opus at 24 kbps is close to transparent for 16 kHz speech; the targets carry its small
artefacts, so prefer the full corpus wherever it fits.

    python recipes/opus_subset.py corpora/speech16k/manifest.jsonl .gpu/speech16k --hours 3.1 --kbps 24
    audiovae train --config recipes/speech16k/train-gpu.yaml --data .gpu/speech16k/manifest.jsonl ...

Train clips are drawn per source in proportion to its share of the train split (seeded); 48 valid
clips are packed for validation. Needs opusenc (apt-get install opus-tools).
"""

import argparse
import json
import random
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from audiovae import audio
from audiovae.train.data import load_entries


def pack(entries, split: str, out: Path, kbps: int, pack_seconds: float = 120.0) -> list[dict]:
    """Concatenate the entries' audio into Opus files of about ``pack_seconds``; returns manifest rows."""
    rows, chunk, start, k = [], [], 0, 0

    def flush() -> None:
        nonlocal chunk, start, k
        name = f"audio/{split}{k:04d}.opus"
        with tempfile.NamedTemporaryFile(suffix=".wav") as t:
            audio.save(t.name, np.concatenate([x for x, _ in chunk], axis=1), sr)
            subprocess.run(["opusenc", "--quiet", "--bitrate", str(kbps), t.name, str(out / name)], check=True)
        rows.extend(asdict(replace(e, path=name)) for _, e in chunk)
        chunk, start, k = [], 0, k + 1

    sr = entries[0].sample_rate
    for e in entries:
        x, _ = audio.load(e.path, mono=True, offset=e.offset, duration=e.duration)
        chunk.append((x, replace(e, offset=start / sr, duration=x.shape[1] / sr, sample_rate=sr, channels=1)))
        start += x.shape[1]
        if start >= pack_seconds * sr:
            flush()
    if chunk:
        flush()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest")
    p.add_argument("out", type=Path)
    p.add_argument("--hours", type=float, default=3.0)
    p.add_argument("--kbps", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    entries = load_entries([a.manifest])
    rng = random.Random(a.seed)
    by_source = defaultdict(list)
    for e in entries:
        if e.split == "train":
            by_source[e.source].append(e)
    share = a.hours * 3600 / sum(e.duration for es in by_source.values() for e in es)
    chosen = []
    for _, es in sorted(by_source.items()):
        rng.shuffle(es)
        budget, got = share * sum(e.duration for e in es), 0.0
        for e in es:
            if got >= budget:
                break
            chosen.append(e)
            got += e.duration
    rng.shuffle(chosen)
    valid = [e for e in entries if e.split == "valid"]
    (a.out / "audio").mkdir(parents=True, exist_ok=True)
    rows = pack(chosen, "train", a.out, a.kbps) + pack(valid[:: max(1, len(valid) // 48)][:48], "valid", a.out, a.kbps)
    with open(a.out / "manifest.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"{a.out}: {len(rows)} clips, {sum(e.duration for e in chosen) / 3600:.2f} h of train audio")


if __name__ == "__main__":
    main()
