"""One-thread codec speed as session 19 measured it (docs/codec.md): 60 s of Bleostrada.ogg at 44.1 kHz mixed to
mono, Codec("music24k").compress(x, 44100, quality=7, extend=...) then decompress, best of 3; and the same for
speech16k on 60 s of the speech44k clips joined (docs/codec.md, session 21). Run with PYTHONPATH=<snapshot>/src
to time a version of the code (git archive COMMIT src | tar -x -C DIR).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/bandwidth-extension/speed.py
"""
import glob
import time

import numpy as np
import torch

from audiovae import audio
from audiovae.codec import extend
from audiovae.codec.stream import Codec

torch.set_num_threads(1)
print(extend.__file__, extend.VERSION)
x, sr = audio.load("/usr/share/freedroidrpg/data/sound/music/Bleostrada.ogg", mono=True, offset=30, duration=60)
clips = [audio.load(p, mono=True)[0] for p in sorted(glob.glob("runs/eval/speech44k/*.ogg"))]
s = np.resize(np.concatenate(clips, axis=1), (1, 60 * 44100))
for model, wave in (("music24k", x), ("speech16k", s)):
    codec = Codec(model)
    codec.decompress(codec.compress(wave[:, :44100], 44100, quality=7))
    for ext in (False, True):
        best = (np.inf, np.inf)
        for _ in range(3):
            t0 = time.perf_counter()
            data = codec.compress(wave, 44100, quality=7, extend=ext)
            t1 = time.perf_counter()
            codec.decompress(data)
            t2 = time.perf_counter()
            best = min(best, (t1 - t0, t2 - t1), key=sum)
        d = wave.shape[1] / 44100
        print(f"{model} extend={ext}: {len(data) * 8 / d / 1000:.2f} kbps, end to end {d / sum(best):.1f}x, "
              f"compress {d / best[0]:.1f}x, decompress {d / best[1]:.1f}x", flush=True)
if hasattr(extend, "SPEECH_SPAN"):
    a = extend.Analyzer(1, 44100, 16000, 320)
    a.push(s[:, : 10 * 44100])
    t0 = time.perf_counter()
    for _ in range(20):
        a.mono_start, a.mono, a.checked = 0, [s[0, : 10 * 44100]], None
        a.choose_span(10 * 44100)
    print(f"the span's content check: {(time.perf_counter() - t0) / 20 * 1000:.1f} ms per check (10 s window)")
