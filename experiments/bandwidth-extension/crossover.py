"""LTAS of decoded + extension over the original's across the crossover, for several ``extend.EDGE`` (where
version 3's band starts), the figures of docs/codec.md "Bandwidth extension" (session 21):

    EDGES=1000,960,950,940,930 .venv/bin/python experiments/bandwidth-extension/crossover.py music24k \
        /usr/share/freedroidrpg/data/sound/music/*.ogg

10 s from the middle of each file, mono, clips whose real band ends below 1.3 of the model's Nyquist left out; the
codec's output without the extension is cached under runs/ext3/cache, the envelope is of the whole clip (span 1)."""
import os
import sys

import numpy as np
import torch
from scipy.signal import welch

from audiovae import audio
from audiovae.codec import extend
from audiovae.codec.stream import Codec

torch.set_num_threads(1)
model, files = sys.argv[1], sys.argv[2:]
codec = Codec(model)
mr = codec.model.sample_rate
edges = [int(e) for e in os.environ.get("EDGES", "1000,960,950,940,930,920,910,900").split(",")]
acc = {e: [] for e in edges}
for path in files:
    info = audio.info(path)
    x, sr = audio.load(path, mono=True, offset=max(0.0, (info.duration - 10) / 2), duration=10)
    cache = f"runs/ext3/cache/{model}_{os.path.basename(path)}.npy"
    if os.path.exists(cache):
        y = np.load(cache)
    else:
        os.makedirs("runs/ext3/cache", exist_ok=True)
        y, _ = codec.decompress(codec.compress(x, sr, kbps=12 if model == "music24k" else 6, extend=False))
        np.save(cache, y)
    from audiovae.bench.codec import bandwidth
    bw = bandwidth(x[0], sr)
    print(path, f"bandwidth {bw:.0f}", flush=True)
    if bw < 1.3 * mr / 2:
        continue
    for e in edges:
        extend.EDGE = e
        a = extend.Analyzer(1, sr, mr, codec.model.hop_length)
        a.push(x)
        lv, nz = a.take(0, last=True)
        lv, nz = extend.decode(extend.encode(lv, nz), 1, 10**6, 3)
        ext = extend.Extender(1, sr, mr, 3)
        ext.envelope(lv, nz)
        z = np.concatenate([ext.push(y), ext.flush()], axis=1)[:, : x.shape[1]]
        f, px = welch(x[0], sr, nperseg=8192)
        _, pz = welch(z[0, : x.shape[1]], sr, nperseg=8192)
        acc[e].append((px, pz))
nyq = mr / 2
lo_edges = np.arange(0.88, 1.09, 0.01) * nyq  # bands of 1 % of the Nyquist frequency
band = np.digitize(f, lo_edges)


def ratio(pairs, per_clip=False):
    """dB of decoded over original power per band; pooled over clips (or per clip)."""
    out = []
    for px, pz in pairs:
        out.append([10 * np.log10(pz[band == b].sum() / (px[band == b].sum() + 1e-20))
                    for b in range(1, len(lo_edges))])
    out = np.array(out)
    pooled = 10 * np.log10(np.mean(10 ** (out / 10), 0))
    return out if per_clip else pooled
print("band(Hz) " + " ".join(f"{e:>6}" for e in edges))
r = {e: ratio(acc[e]) for e in edges}
for b in range(len(lo_edges) - 1):
    print(f"{lo_edges[b]:7.0f}  " + " ".join(f"{r[e][b]:6.1f}" for e in edges))
print("over 0.88-1.08 Nyquist: std of the pooled dB ratio; mean per-clip std; worst band")
for e in edges:
    pc = ratio(acc[e], True)
    print(e, f"{r[e].std():.2f}", f"{pc.std(1).mean():.2f}", f"min {r[e].min():.1f} max {r[e].max():.1f}")
