"""The bandwidth extension on real full-band audio: its bitrate, the band-energy error above the model's Nyquist,
ViSQOL audio mode with and without it, the LTAS ripple ratio over the extended band, and one-thread speed.

PYTHONPATH=src .venv/bin/python experiments/bandwidth-extension/measure.py --model music24k --kbps 12 \
    /usr/share/freedroidrpg/data/sound/music/*.ogg
Each file gives one clip of --seconds from its middle (the unseen split: measure only, never tune on it).
"""

import argparse
import time

import numpy as np
import soundfile as sf
import torch

from audiovae import metrics
from audiovae.bench.codec import band_error_db
from audiovae.codec.stream import Codec, extension_bytes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--model", default="music24k")
    p.add_argument("--kbps", type=float, default=12.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=0, help="resample the clips to this rate first (0: keep)")
    p.add_argument("--mono", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    codec = Codec(args.model)
    rows = []
    for path in args.files:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        x = x.T
        if args.rate:
            import soxr

            x, sr = soxr.resample(x.T, sr, args.rate).T.astype(np.float32), args.rate
        if args.mono:
            x = x.mean(0, keepdims=True)
        n = int(args.seconds * sr)
        start = max(0, (x.shape[1] - n) // 2)
        x = np.ascontiguousarray(x[:, start : start + n])
        row = {"file": path.rsplit("/", 1)[-1]}
        for name, ext in (("off", False), ("on", None)):
            t = time.perf_counter()
            data = codec.compress(x, sr, kbps=args.kbps, extend=ext)
            enc = time.perf_counter() - t
            t = time.perf_counter()
            y, _ = codec.decompress(data)
            dec = time.perf_counter() - t
            ref, est = x.mean(0), y.mean(0)
            top = min(sr / 2, 20000)
            extra = extension_bytes(data)
            row[name] = {"kbps": len(data) * 8 / args.seconds / 1000, "ext_kbps": extra * 8 / args.seconds / 1000,
                         "enc_x": args.seconds / enc,
                         "dec_x": args.seconds / dec, "visqol": metrics.visqol(ref, est, sr, "audio"),
                         "band_err_db": band_error_db(ref, est, sr, codec.model.sample_rate / 2, top),
                         "ripple": metrics.ltas_ripple(est, sr, band=(codec.model.sample_rate / 2, top))
                         / max(metrics.ltas_ripple(ref, sr, band=(codec.model.sample_rate / 2, top)), 1e-6)}
        rows.append(row)
        print(row["file"], " ".join(f"{k}: " + " ".join(f"{m}={v:.2f}" for m, v in row[k].items())
                                    for k in ("off", "on")), flush=True)
    for k in ("off", "on"):
        print(f"mean {k}:", " ".join(f"{m}={np.mean([r[k][m] for r in rows]):.2f}" for m in rows[0][k]))


if __name__ == "__main__":
    main()
