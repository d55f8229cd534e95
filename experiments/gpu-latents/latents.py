"""Carry a prior run's latent caches to a machine without the corpus (a lent GPU, whose upload is 64 MiB).

    pack RUN_DIR OUT.npz [--step S]
                                  RUN_DIR/latents/{train,valid}.safetensors -> int8 frames (rounding error
                                  <= S / 2; default 0.1) + lengths + labels, deflated, no pickle
    unpack OUT.npz RUN_DIR --config RECIPE.yaml
                                  writes the caches back with this machine's cache key, so that
                                  `audiovae train-prior --config RECIPE.yaml --run-dir RUN_DIR` reuses them

Run from the repository root: `PYTHONPATH=src .venv/bin/python experiments/gpu-latents/latents.py pack ...`.
A packed file larger than one upload travels in parts (`split -b 26000000`), one per call, each moved by that call
into the machine's /tmp: a call's carried folders do not outlast it, /tmp does while the machine stays warm. The
last call joins them with `cat` and trains (docs/generation.md, "a larger prior on the whole train split").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "valid")


def pack(run_dir: Path, out: Path, step: float) -> None:
    from audiovae.train.latents import load_cache

    arrays = {"step": np.float32(step)}
    for split in SPLITS:
        path = run_dir / "latents" / f"{split}.safetensors"
        cache = load_cache(path)
        q = np.round(cache.frames.numpy() / step)
        if np.abs(q).max() > 127:
            raise SystemExit(f"{path}: latents reach {cache.frames.abs().max():.2f}, beyond int8 at step {step}")
        arrays[f"{split}_frames"], arrays[f"{split}_lengths"] = q.astype(np.int8), cache.lengths.numpy()
        arrays[f"{split}_labels"] = np.array(json.dumps(cache.labels))
    np.savez_compressed(out, **arrays)
    counts = ", ".join(f"{len(arrays[s + '_lengths'])} {s} clips" for s in SPLITS)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB for {counts}")


def unpack(packed: Path, run_dir: Path, config: Path) -> None:
    from audiovae.registry import load
    from audiovae.train.latents import LatentCache, cache_meta, write_cache
    from audiovae.train.prior import load_prior_config

    cfg = load_prior_config(config)
    model = load(cfg.model)
    with np.load(packed, allow_pickle=False) as z:
        for split in SPLITS:
            path = run_dir / "latents" / f"{split}.safetensors"
            cache = LatentCache(torch.from_numpy(z[f"{split}_frames"].astype(np.float32) * z["step"]),
                                torch.from_numpy(z[f"{split}_lengths"]), json.loads(str(z[f"{split}_labels"])))
            write_cache(path, cache, cache_meta(model, Path(cfg.manifest), split, cfg.label, cfg.max_clips))
            print(f"{path}: {len(cache.lengths)} clips, {len(cache.frames)} frames")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("run_dir", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--step", type=float, default=0.1)
    b = sub.add_parser("unpack")
    b.add_argument("packed", type=Path)
    b.add_argument("run_dir", type=Path)
    b.add_argument("--config", type=Path, required=True)
    args = p.parse_args()
    if args.cmd == "pack":
        pack(args.run_dir, args.out, args.step)
    else:
        unpack(args.packed, args.run_dir, args.config)


if __name__ == "__main__":
    main()
