"""What a smaller .avae container would buy: each clip coded at `--kbps` targets with its budget raised by SAVE
bytes, those bytes then taken off its size; PESQ and ViSQOL against the plain target, paired (speech models).

    PYTHONPATH=src .venv/bin/python experiments/codec-rates/container.py --split unseen --clips 32 --save 100
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from audiovae import audio, metrics
from audiovae.codec.stream import Codec
from audiovae.data.manifest import read_manifest, spread

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="speech16k")
    p.add_argument("--manifest", default="corpora/speech16k/manifest.jsonl")
    p.add_argument("--split", default="unseen")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--kbps", type=float, nargs="+", default=[3.0, 6.0])
    p.add_argument("--save", type=int, default=100, help="bytes the container would lose")
    a = p.parse_args()
    torch.set_num_threads(1)
    codec, root = Codec(a.model), Path(a.manifest).parent
    entries = [e for e in read_manifest(a.manifest, split=a.split)[0] if e.duration >= 2.0]
    rows = []
    for e in spread(entries, a.clips):
        x, sr = audio.load(e.audio_path(root), mono=True, offset=e.offset, duration=e.duration)
        for kbps in a.kbps:
            for save in (0, a.save):
                data = codec.compress(x[0], sr, kbps=kbps + save * 8 / e.duration / 1000)
                y, _ = codec.decompress(data)
                rows.append((kbps, save, (len(data) - save) * 8 / e.duration / 1000, metrics.pesq_wb(x[0], y[0], sr),
                             metrics.visqol(x[0], y[0], sr, "speech")))
    r = np.array(rows)
    for kbps in a.kbps:
        before, after = r[(r[:, 0] == kbps) & (r[:, 1] == 0)], r[(r[:, 0] == kbps) & (r[:, 1] == a.save)]
        ok = ~(np.isnan(before[:, 3]) | np.isnan(after[:, 3]))
        d = after[ok, 3] - before[ok, 3]
        print(f"--kbps {kbps:g}: kbps {before[:, 2].mean():.2f} -> {after[:, 2].mean():.2f}, PESQ "
              f"{before[ok, 3].mean():.3f} -> {after[ok, 3].mean():.3f} ({d.mean():+.3f} +- "
              f"{1.96 * d.std() / np.sqrt(len(d)):.3f}), ViSQOL {before[:, 4].mean():.3f} -> {after[:, 4].mean():.3f}")
