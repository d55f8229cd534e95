"""Which envelope-refinement grids `--kbps` should try (docs/codec.md, "Coarser grids at 3 kbps").

Codes every clip of a split with each grid (and without the layer) at each latent quality, measures size, PESQ and
ViSQOL (`--table` CSV), then prints each grid beside quality 1 latents against quality 1 alone (paired) and, for
each target rate, what the shipped rule would give with a list of coarse grids: the finest grid `1x1` wherever it
fits, a coarse grid only where the file without the layer would hold quality 1 latents (then at quality 1).

    PYTHONPATH=src .venv/bin/python experiments/refine-grids/study.py --split valid --clips 24 --table grids.csv
"""

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from audiovae import audio, metrics
from audiovae.codec.stream import Codec
from audiovae.data.manifest import read_manifest, spread


def measure(args) -> None:
    codec, root = Codec(args.model), Path(args.manifest).parent
    entries = [e for e in read_manifest(args.manifest, split=args.split)[0] if e.duration >= 2.0]
    with open(args.table, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["clip", "grid", "quality", "kbps", "pesq", "visqol"])
        for i, e in enumerate(spread(entries, args.clips)):
            x, sr = audio.load(e.audio_path(root), mono=True, offset=e.offset, duration=e.duration)
            for q in range(1, args.qualities + 1):
                for name in ["none", *args.grids]:
                    grid = tuple(map(int, name.split("x"))) if name != "none" else (1, 1)
                    enc = codec.stream_encoder(sr, 1, q, length=x.shape[1], refine=name != "none", grid=grid)
                    data = enc(x) + enc.finish()
                    y, _ = codec.decompress(data)
                    pesq = metrics.pesq_wb(x[0], y[0], sr) if sr == 16000 else float("nan")
                    out.writerow([e.id, name, q, len(data) * 8 / e.duration / 1000, pesq,
                                  metrics.visqol(x[0], y[0], sr, "speech" if sr == 16000 else "audio")])
            f.flush()
            print(f"{i + 1} clips", flush=True)


def report(args) -> None:
    by = defaultdict(dict)
    for r in csv.DictReader(open(args.table)):
        by[r["clip"]][r["grid"], int(r["quality"])] = np.array([float(r[k]) for k in ("kbps", "pesq", "visqol")])
    clips = list(by)

    def paired(a, b, label):
        d = a - b
        ci = 1.96 * np.nanstd(d[:, 1]) / np.sqrt(len(d))
        print(f"  {label:28s} {d[:, 0].mean():+.3f} kbps, PESQ {np.nanmean(d[:, 1]):+.3f} (+-{ci:.3f}), "
              f"ViSQOL {d[:, 2].mean():+.3f}")

    print(f"{len(clips)} clips; beside quality 1 latents, against quality 1 alone:")
    for g in args.grids:
        paired(np.array([by[c][g, 1] for c in clips]), np.array([by[c]["none", 1] for c in clips]), g)

    def best(c, grid, target):
        fits = [q for q in range(1, args.qualities + 1) if by[c][grid, q][0] <= target]
        return max(fits) if fits else 0

    def rule(c, target, coarse):
        if q := best(c, "1x1", target):
            return by[c]["1x1", q]
        if best(c, "none", target) <= 1:
            for g in coarse:
                if by[c][g, 1][0] <= target:
                    return by[c][g, 1]
        return by[c]["none", max(best(c, "none", target), 1)]

    for target in args.kbps:
        plain = np.array([by[c]["none", max(best(c, "none", target), 1)] for c in clips])
        print(f"--kbps {target:g}, against latents alone ({plain[:, 0].mean():.2f} kbps):")
        for coarse in args.ladders:
            paired(np.array([rule(c, target, coarse.split(",")) for c in clips]), plain, "1x1," + coarse)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="speech16k")
    p.add_argument("--manifest", default="corpora/speech16k/manifest.jsonl")
    p.add_argument("--split", default="valid")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--qualities", type=int, default=5)
    p.add_argument("--grids", nargs="+", default=["1x1", "2x2", "3x2", "3x3", "3x4", "6x3", "6x6"])
    p.add_argument("--ladders", nargs="+", default=["2x2,3x2,3x3", "2x2,3x2,3x3,3x4"], help="coarse grids, in order")
    p.add_argument("--kbps", type=float, nargs="+", default=[2.8, 3.0, 3.2, 3.5, 4.0])
    p.add_argument("--table", default="refine_grids.csv", help="CSV of the measurements (made unless --report)")
    p.add_argument("--report", action="store_true", help="only report an existing --table")
    a = p.parse_args()
    torch.set_num_threads(1)
    if not a.report:
        measure(a)
    report(a)
