"""Our codec at given `--kbps` targets on a split's clips: measured kbps and ViSQOL per clip, as CSV on stdout.

Run it with the code before and after a change (e.g. the older code in a git worktree on PYTHONPATH) and pair the
rows by clip; docs/codec.md ("Coarser grids at 3 kbps") compares music24k at 3 and 4.5 kbps this way:

    PYTHONPATH=src .venv/bin/python experiments/codec-rates/rates.py --model music24k \\
        --manifest corpora/music24k/manifest.jsonl --split unseen --clips 16 --kbps 3 4.5 > after.csv
"""

import argparse
from pathlib import Path

import torch

from audiovae import audio, metrics
from audiovae.codec.stream import Codec
from audiovae.data.manifest import read_manifest, spread

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="music24k")
    p.add_argument("--manifest", default="corpora/music24k/manifest.jsonl")
    p.add_argument("--split", default="unseen")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--kbps", type=float, nargs="+", default=[3.0, 4.5])
    a = p.parse_args()
    torch.set_num_threads(1)
    codec, root = Codec(a.model), Path(a.manifest).parent
    mode = "speech" if codec.model.sample_rate == 16000 else "audio"
    entries = [e for e in read_manifest(a.manifest, split=a.split)[0] if e.duration >= 2.0]
    print("clip,target_kbps,kbps,visqol")
    for e in spread(entries, a.clips):
        x, sr = audio.load(e.audio_path(root), mono=True, offset=e.offset, duration=e.duration)
        for kbps in a.kbps:
            data = codec.compress(x[0], sr, kbps=kbps)
            y, _ = codec.decompress(data)
            print(f"{e.id},{kbps},{len(data) * 8 / e.duration / 1000:.4f},{metrics.visqol(x[0], y[0], sr, mode):.4f}",
                  flush=True)
