"""Does a learned bandwidth extension beat the parametric one (codec/extend.py) per bit and per CPU-millisecond?

Question (issue 31, point 3): the parametric layer codes the original's high-band envelope (8 levels in 3 dB steps
and a noise flag per 25 ms frame, 0.8-1.0 kbps). Could a small predictor working from what the decoder already has
(the decoded low band, or the decoded latents) replace those bits (blind, 0 kbps), or shrink them (predictive)?

Method. Train only on training sources at 44.1 kHz (music: 8 clips of 8 s from each of Wesnoth, naev, Drascula and
UFO:AI; speech: Tux Paint stamp descriptions and KLettres letters joined into 12 clips of about 10 s); test only on
the unseen sources of the bench (the first 16 FreedroidRPG tracks and the first 16 clips of runs/eval/speech44k, 10 s
from the middle of each, as ``bench codec --folder`` picks them). Every clip goes through the real codec (music24k
``--kbps 12``, speech16k ``--kbps 6``) without the extension and with it; for the latter the decoder's Extender is
replaced by a subclass recording the low band it receives and the envelope it decodes (replaying them reproduces the
decoded file exactly). Features per extension frame (the Extender's frames, causal): the levels of 8 sub-bands of the
decoded top octave (the Extender's source band) and of 4 bands below, in the layer's 3 dB steps, their flatness, the
two previous frames' and a running mean's sub-band levels; "+z" adds the decoder's dequantized latents (the latent
frame at the frame's centre and the one before). Targets: the original's 8 band levels (float steps, as
extend.Analyzer measures them before its hysteresis) and its noise flags. Predictors: ridge regression and an MLP
(2 x 64, torch, one thread), regularization / epochs and the winner chosen on a training source held out (Drascula,
KLettres), then refitted on all training clips.

Conditions on the unseen clips (the low band: that of the ``--no-extend`` file, which has every bit, unless said):
none; parametric (the real file and its bytes); the parametric coder at spans 2, 4, 8 (extend.encode, real bytes);
learned blind (the predicted envelope through extend.Extender, 0 bits); learned + one offset per band and segment
(the original's mean level less the prediction, 6 bits each, segments of 5 s, 1 s, 0.25 s); the control for it with no
predictor (the original's mean level per band and segment, 6 bits, and its majority noise flag, 1 bit); and predictive
coding of the parametric envelope itself (same audio as the parametric file): its steps in time coded with a static
table counted on the training clips, with and without the decoder's blind prediction as the table's context, bits as
-log2 of the table (an ideal coder), against extend.py's own per-chunk tables on the same symbols (its cost model is
checked against the real bytes). Metrics: ViSQOL audio mode (metrics.visqol, 48 kHz; for the main conditions only, it
costs about 16 CPU-s a clip), the envelope error (mean |dB| of the output's 8 band levels, measured as the Analyzer
does, against the original's, over frames and bands within 48 dB of the clip's loudest), kbps, and CPU ms per second
of audio of the layer (thread CPU time: Analyzer + encode at the encoder, decode + features + predictor + Extender at
the decoder; an encoder that needs the decoder's prediction must also decode, which is counted).

Command (from the repository root; stages cache under --cache; about 5 CPU-minutes without ViSQOL, 55 with it):
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python experiments/bwe-learned/measure.py all
Stages: ``prep`` (codec runs), ``latents``, ``visqol-base`` (none, parametric), ``learn`` (predictors and every
condition but ViSQOL), ``visqol-learned`` (the chosen blind predictor, it + offsets per 5 s, the control per 5 s,
span 8), ``table`` (the markdown tables of RESULTS.md), ``all``.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from audiovae import audio, metrics
from audiovae.codec import extend as X
from audiovae.codec.refine import frame_count
from audiovae.codec.stream import Codec, extension_bytes

MUSIC_TEST = "/usr/share/freedroidrpg/data/sound/music"
SPEECH_TEST = "runs/eval/speech44k"
SETUPS = {"music": ("music24k", 12.0), "speech": ("speech16k", 6.0)}
SECONDS = 10.0
OFFSET_SEGMENTS = (200, 40, 10)
SR = 44100


# ---------------------------------------------------------------- data

def _middle(path, seconds=SECONDS):
    d = audio.info(path).duration
    x, sr = audio.load(path, mono=True, offset=max(0.0, (d - seconds) / 2), duration=seconds)
    return x[0].astype(np.float32), sr


def test_clips(kind):
    """The bench's pick (bench/codec.py fullband_benchmark): the first 16 files of 2 s or more, 10 s from the middle."""
    folder = MUSIC_TEST if kind == "music" else SPEECH_TEST
    files = [p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in (".wav", ".flac", ".ogg", ".opus", ".mp3")
             and audio.info(p).duration >= 2.0][:16]
    return [(p.stem, *_middle(p)) for p in files]


def _spread(files, k):
    return [files[i * len(files) // k] for i in range(k)]


def train_clips(kind, tmp: Path):
    """(name, source, audio) of training sources only, 44.1 kHz."""
    out = []
    if kind == "music":
        groups = {"wesnoth": sorted(glob.glob("/usr/share/games/wesnoth/1.16/data/core/music/*.ogg")),
                  "naev": sorted(glob.glob("/usr/share/naev/dat/snd/music/*.ogg")),
                  "drascula": sorted(glob.glob("/usr/share/scummvm/drascula/audio/*.ogg"))}
        z = zipfile.ZipFile("/usr/share/games/ufoai/base/0music.pk3")
        names = sorted(n for n in z.namelist() if n.endswith(".ogg"))
        tmp.mkdir(parents=True, exist_ok=True)
        ufo = []
        for n in _spread(names, 16):
            p = tmp / Path(n).name
            if not p.exists():
                p.write_bytes(z.read(n))
            ufo.append(str(p))
        groups["ufoai"] = ufo
        for src, files in groups.items():
            files = [f for f in files if audio.info(f).sample_rate == SR and audio.info(f).duration >= 30]
            for f in _spread(files, 8):
                out.append((f"{src}-{Path(f).stem}", src, _middle(f, 8.0)[0]))
        return out
    rng = random.Random(0)
    for src, pkg, count in (("tuxpaint", "tuxpaint-stamps-default", 8), ("klettres", "klettres-data", 4)):
        files = [f for f in subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True).stdout.split()
                 if f.endswith(".ogg")]
        rng.shuffle(files)
        it = iter(files)
        for i in range(count):
            parts, total = [], 0
            while total < 10 * SR:
                f = next(it)
                info = audio.info(f)
                if info.sample_rate != SR or info.duration < 0.7:
                    continue
                x, _ = audio.load(f, mono=True)
                parts += [x[0], np.zeros(SR // 10, np.float32)]
                total += x.shape[1] + SR // 10
            out.append((f"{src}-{i}", src, np.concatenate(parts).astype(np.float32)))
    return out


class Recorder(X.Extender):
    """The decoder's Extender, recording the low band it receives and the envelope it decodes."""
    last = None

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.got, self.env, self.chunks = [], [], []
        Recorder.last = self

    def push(self, y):
        self.got.append(np.array(y))
        return super().push(y)

    def envelope(self, levels, noise):
        self.env.append((levels.copy(), noise.copy()))
        self.chunks.append(levels.shape[-1])
        super().envelope(levels, noise)


def prep(cache: Path):
    torch.set_num_threads(1)
    X_orig = X.Extender
    for kind, (model, kbps) in SETUPS.items():
        codec = Codec(model)
        for split in ("test", "train"):
            path = cache / f"{kind}-{split}.npz"
            if path.exists():
                continue
            clips = test_clips(kind) if split == "test" else train_clips(kind, cache / "ufoai")
            rec = {}
            for i, clip in enumerate(clips):
                name, x = clip[0], clip[-1] if split == "train" else clip[1]
                sr = SR if split == "train" else clip[2]
                assert sr == SR, (name, sr)
                data0 = codec.compress(x, sr, kbps=kbps, extend=False)
                t = time.thread_time()
                y0 = codec.decompress(data0)[0][0]
                dec_ms = (time.thread_time() - t) * 1000 / (len(x) / sr)
                rec[f"{i}/x"], rec[f"{i}/none"] = x, y0
                rec[f"{i}/meta"] = json.dumps({"name": name, "source": clip[1] if split == "train" else "unseen",
                                               "kbps_none": len(data0) * 8 / (len(x) / sr) / 1000,
                                               "decode_ms_per_s": dec_ms})
                if split == "test":
                    data = codec.compress(x, sr, kbps=kbps, extend=True)
                    X.Extender = Recorder
                    import audiovae.codec.stream as S
                    S.extend_layer.Extender = Recorder
                    try:
                        y = codec.decompress(data)[0][0]
                    finally:
                        S.extend_layer.Extender = X_orig
                    r = Recorder.last
                    meta = json.loads(rec[f"{i}/meta"])
                    meta.update(kbps_param=len(data) * 8 / (len(x) / sr) / 1000,
                                ext_kbps=extension_bytes(data) * 8 / (len(x) / sr) / 1000, chunks=r.chunks)
                    rec[f"{i}/meta"] = json.dumps(meta)
                    rec[f"{i}/param"], rec[f"{i}/low"] = y, np.concatenate(r.got, axis=1)[0]
                    rec[f"{i}/levels"] = np.concatenate([e[0] for e in r.env], -1)[0]
                    rec[f"{i}/noise"] = np.concatenate([e[1] for e in r.env], -1)[0]
                print(kind, split, i, name, flush=True)
            np.savez(path, **rec)


def latents(cache: Path):
    """The decoder's dequantized latents of the same files (compress is deterministic): i/none for the --no-extend
    file, i/low for the extended one (test clips)."""
    torch.set_num_threads(1)
    for kind, (model, kbps) in SETUPS.items():
        codec = Codec(model)
        orig, got = codec.entropy.dequantize, []

        def record(sym, q, got=got, orig=orig):
            got.append(orig(sym, q))
            return got[-1]

        codec.entropy.dequantize = record
        for split in ("test", "train"):
            path = cache / f"{kind}-{split}-latents.npz"
            if path.exists():
                continue
            rec = {}
            for i, c in enumerate(load(cache, kind, split)):
                for key, ext in (("none", False), ("low", True)) if split == "test" else (("none", False),):
                    got.clear()
                    codec.decompress(codec.compress(c["x"], SR, kbps=kbps, extend=ext))
                    rec[f"{i}/{key}"] = np.concatenate(got, axis=-1)
            np.savez(path, **rec)
            print(kind, split, "latents", flush=True)


def latent_features(z, n, lay, model_rate, model_hop):
    """Latents (D, J) -> per extension frame (n, 2 D): the latent frame at the frame's centre and the one before."""
    j = np.clip((np.arange(n) * lay.hop * model_rate // SR) // model_hop, 0, z.shape[1] - 1)
    return np.hstack([z[:, j].T, z[:, np.maximum(j - 1, 0)].T]).astype(np.float32)


def load(cache, kind, split):
    z = np.load(cache / f"{kind}-{split}.npz")
    n = len([k for k in z.files if k.endswith("/meta")])
    return [{**{k.split("/")[1]: z[k] for k in z.files if k.startswith(f"{i}/") and not k.endswith("/meta")},
             **json.loads(str(z[f"{i}/meta"]))} for i in range(n)]


# ---------------------------------------------------------------- features and targets

def spectra(x, lay):
    f = X._Frames32(1, lay.hop)
    f.push(np.asarray(x, np.float64)[None])
    n = frame_count(len(x), lay.hop)
    f.pad_to(n)
    return np.abs(f.take(n)[0]) ** 2  # (n, bins)


def steps(power_mean, hop):
    return np.clip(10 * np.log10(power_mean / hop + 1e-30) / X.STEP_DB + X.ZERO, 0, X.LEVELS - 1)


def band_steps(x, lay):
    """The original's 8 band levels per frame in float steps (Analyzer._measure before its hysteresis), and flatness."""
    p = spectra(x, lay)
    band = p[:, lay.edges[0]: lay.edges[-1]]
    lv = steps(X._band_sum(band, lay.band) / np.diff(lay.edges), lay.hop)
    noise = X._flatness(band, lay.band) > X._flatness(p[:, lay.source], lay.band) + X.NOISE_MARGIN
    return lv, noise.astype(np.int32)


def features(y, lay):
    """Causal per-frame features of the decoded low band (n, 44)."""
    p = spectra(y, lay)
    lo, hi = int(lay.source_bins[0]), int(lay.source_bins[-1]) + 1  # the Extender's source band
    e = lo + (hi - lo) * np.arange(9) // 8
    sub = np.repeat(np.arange(8), np.diff(e))
    src = steps(X._band_sum(p[:, lo:hi], sub) / np.diff(e), lay.hop)
    flat = np.log(_flat8(p[:, lo:hi], sub) + 1e-6)
    le = np.unique(np.r_[1, np.geomspace(1, lo, 5).astype(int)[1:-1], lo])
    low = steps(np.add.reduceat(p[:, le[0]:lo], le[:-1] - le[0], axis=1) / np.diff(le), lay.hop)
    low = np.pad(low, ((0, 0), (0, 4 - low.shape[1])))
    prev1 = np.vstack([src[:1] * 0, src[:-1]])
    prev2 = np.vstack([src[:2] * 0, src[:-2]])
    from scipy.signal import lfilter
    mean = lfilter([1 - X.DECAY], [1, -X.DECAY], src, axis=0) / (1 - X.DECAY ** np.arange(1, len(src) + 1))[:, None]
    return np.hstack([src, low, flat, prev1, prev2, mean]).astype(np.float32)


def _flat8(power, sub):
    count = np.bincount(sub, minlength=8)
    lm = np.add.reduceat(np.log(power + 1e-30), np.flatnonzero(np.r_[True, sub[1:] != sub[:-1]]), axis=-1) / count
    return np.exp(lm) / (np.add.reduceat(power, np.flatnonzero(np.r_[True, sub[1:] != sub[:-1]]), axis=-1) / count
                         + 1e-30)


def dataset(clips, lay, low_key="none", Z=None, rates=None):
    F, T, N, G = [], [], [], []
    for i, c in enumerate(clips):
        f = features(c[low_key], lay)
        if Z is not None:
            f = np.hstack([f, latent_features(Z[f"{i}/{low_key}"], len(f), lay, *rates)])
        t, nz = band_steps(c["x"], lay)
        n = min(len(f), len(t))
        F.append(f[:n]), T.append(t[:n]), N.append(nz[:n])
        G += [c["source"]] * n
    return np.vstack(F), np.vstack(T), np.vstack(N), np.array(G)


class Ridge:
    def __init__(self, lam):
        self.lam = lam

    def fit(self, F, T):
        self.mu, self.sd = F.mean(0), F.std(0) + 1e-6
        A = np.hstack([(F - self.mu) / self.sd, np.ones((len(F), 1))])
        self.W = np.linalg.solve(A.T @ A + self.lam * np.diag(np.r_[np.ones(F.shape[1]), 0]), A.T @ T)
        return self

    def __call__(self, F):
        return np.hstack([(F - self.mu) / self.sd, np.ones((len(F), 1))]) @ self.W


class MLP:
    def __init__(self, epochs):
        self.epochs = epochs

    def fit(self, F, T, N):
        torch.manual_seed(0)
        self.mu, self.sd = F.mean(0), F.std(0) + 1e-6
        self.tm, self.ts = T.mean(0), T.std(0) + 1e-6
        f = torch.tensor((F - self.mu) / self.sd, dtype=torch.float32)
        t = torch.tensor((T - self.tm) / self.ts, dtype=torch.float32)
        n = torch.tensor(N, dtype=torch.float32)
        self.net = torch.nn.Sequential(torch.nn.Linear(F.shape[1], 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                                       torch.nn.GELU(), torch.nn.Linear(64, 16))
        opt = torch.optim.Adam(self.net.parameters(), 2e-3, weight_decay=1e-4)
        g = torch.Generator().manual_seed(0)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(f), generator=g).split(256):
                out = self.net(f[idx])
                loss = torch.nn.functional.mse_loss(out[:, :8], t[idx]) + \
                    0.3 * torch.nn.functional.binary_cross_entropy_with_logits(out[:, 8:], n[idx])
                opt.zero_grad(), loss.backward(), opt.step()
        return self

    def __call__(self, F):
        with torch.no_grad():
            out = self.net(torch.tensor((F - self.mu) / self.sd, dtype=torch.float32)).numpy()
        return out[:, :8] * self.ts + self.tm, (out[:, 8:] > 0).astype(np.int32)


def loud_mask(t):
    return t > t.max() - X.FLOOR


def env_err_db(t, p):
    m = loud_mask(t)
    return float(np.abs(p - t)[m].mean() * X.STEP_DB)


# ---------------------------------------------------------------- bits (extend.py's own tables)

HEADER_BITS = 8 * (X._SPAN.size + 2 + 1 + X.BANDS * X._BAND.size + 1)


def level_bits(field):
    """Bits of a residual field (BANDS, n) with extend.py's per-band centre and cheapest table."""
    return X._cost(np.clip(field, -X.CENTER_LIMIT - 40, X.CENTER_LIMIT + 40))


def flag_bits(noise):
    ch = noise ^ np.concatenate([np.zeros((X.BANDS, 1), noise.dtype), noise[:, :-1]], axis=1)
    return float(X._FLAG_COST[:, ch.ravel()].sum(-1).min())


def chunked(levels, chunks):
    at = np.cumsum([0] + list(chunks))
    return [(a, b) for a, b in zip(at[:-1], at[1:], strict=True) if b > a]


def param_bits_estimate(levels, noise, chunks):
    """The parametric coder's cost model: per chunk header, first frame uniform, steps in time (best mode 1..3)."""
    bits = 0.0
    for a, b in chunked(levels, chunks):
        q = levels[None, :, a:b].astype(np.int64)
        bits += HEADER_BITS + X.BANDS * np.log2(X.LEVELS) + \
            min(level_bits(X._field(q, 0, m)) for m in range(1, X.MODES)) + flag_bits(noise[:, a:b])
    return bits


def predictive_bits(levels, noise, chunks, pred, theta):
    """Levels coded against Q_t = L_{t-1} + round(g_t) where g_t predicts the step (0 below a dead zone ``theta``):
    the residual L_t - Q_t with extend.py's tables (the same header, first frame and flags as the parametric)."""
    bits = 0.0
    for a, b in chunked(levels, chunks):
        q = levels[:, a:b].astype(np.int64)
        g = pred[:, a + 1:b]
        step = np.where(np.abs(g) > theta, np.rint(g), 0).astype(np.int64)
        step = np.where(q[:, :-1] == 0, 0, step)  # a band left out stays out
        r = np.diff(q, axis=1) - step
        bits += HEADER_BITS + X.BANDS * np.log2(X.LEVELS) + (level_bits(r) if r.size else 0) + \
            flag_bits(noise[:, a:b])
    return bits


def contexts(L, P, chunks):
    """Symbols (steps in time of the coded levels, clipped to +-16) and their contexts for a learned entropy model,
    frames after each chunk's first: the band group, whether the band was left out (level 0), and with the
    prediction: the rounded distance of the decoder's blind prediction P_t from the last coded level, and P's own step.
    L, P: (n, BANDS). Returns (symbols, context without prediction, context with it)."""
    sym, c0, c1 = [], [], []
    group = np.minimum(np.arange(X.BANDS) // 3, 2)[None]
    for a, b in chunked(L.T, chunks):
        if b - a < 2:
            continue
        Lc, Pc = L[a:b].astype(np.int64), P[a:b]
        zero = (Lc[:-1] == 0).astype(np.int64)
        sym.append(np.clip(np.diff(Lc, axis=0), -16, 16) + 16)
        base = group * 2 + zero
        c0.append(np.broadcast_to(base, zero.shape))
        dist = np.clip(np.rint(Pc[1:] - Lc[:-1]), -6, 6).astype(np.int64) + 6
        move = np.clip(np.rint(Pc[1:] - Pc[:-1]), -2, 2).astype(np.int64) + 2
        c1.append((base * 13 + dist) * 5 + move)
    if not sym:
        e = np.zeros(0, np.int64)
        return e, e, e
    return (np.concatenate(sym).ravel(), np.concatenate(c0).ravel(), np.concatenate(c1).ravel())


class Table:
    """A static conditional distribution of the symbols, counted on the training clips (+0.5 each)."""

    def __init__(self, sym, ctx, contexts):
        self.p = np.full((contexts, 33), 0.5)
        np.add.at(self.p, (ctx, sym), 1)
        self.p /= self.p.sum(1, keepdims=True)

    def bits(self, sym, ctx):
        return float(-np.log2(self.p[ctx, sym]).sum())


def coder_level_bits(levels, chunks):
    """extend.py's tables on the same symbols: the steps in time after each chunk's first frame, best mode."""
    bits = 0.0
    for a, b in chunked(levels, chunks):
        if b - a >= 2:
            q = levels[None, :, a:b].astype(np.int64)
            bits += min(level_bits(X._field(q, 0, m)) for m in range(1, X.MODES))
    return bits


def step_features(F, levels_prev, pred_abs, pred_abs_prev):
    """For the step predictor: how far the blind prediction is from the last coded level, its own step, and the
    decoded top octave's step."""
    dsrc = F[:, :8] - F[:, 24:32]
    return np.hstack([pred_abs - levels_prev, pred_abs - pred_abs_prev, dsrc, (levels_prev == 0)])


def coded_levels(x, lay, model_rate, model_hop, chunks_frames=200):
    """The parametric encoder's levels of a training clip (Analyzer, then the FLOOR rule per chunk)."""
    an = X.Analyzer(1, SR, model_rate, model_hop)
    an.push(np.asarray(x, np.float64)[None])
    lv, nz = an.take(0, last=True)
    lv, nz = lv[0], nz[0]
    out = lv.copy()
    for a in range(0, lv.shape[1], chunks_frames):
        s = slice(a, a + chunks_frames)
        out[:, s] = np.where(lv[:, s] <= lv[:, s].max(initial=0) - X.FLOOR, 0, lv[:, s])
    return out, nz


# ---------------------------------------------------------------- the study

def extend_with(y, levels, noise, sr, model_rate):
    ext = X.Extender(1, sr, model_rate)
    ext.envelope(levels[None], noise[None])
    return np.concatenate(list(ext.run([np.asarray(y, np.float32)[None]])), axis=1)[0][: len(y)]


def learn(cache: Path, out: Path):
    torch.set_num_threads(1)
    results = {}
    for kind, (model, _) in SETUPS.items():
        codec = Codec(model)
        mr, mh = codec.model.sample_rate, codec.model.hop_length
        lay = X.Layout(SR, mr)
        train, test = load(cache, kind, "train"), load(cache, kind, "test")
        zpath = cache / f"{kind}-train-latents.npz"
        Ztr = np.load(zpath) if zpath.exists() else None
        Zte = np.load(cache / f"{kind}-test-latents.npz") if zpath.exists() else None
        F, T, N, G = dataset(train, lay)
        held = "drascula" if kind == "music" else "klettres"
        tr, va = G != held, G == held
        sets = {"": F}
        if Ztr is not None:
            sets["+z"] = dataset(train, lay, Z=Ztr, rates=(mr, mh))[0]
        sel = {}
        for z, FF in sets.items():
            for lam in (0.1, 10.0, 1000.0):
                r = Ridge(lam).fit(FF[tr], np.hstack([T[tr], N[tr]]))
                sel[(f"ridge{z}", lam)] = env_err_db(T[va], r(FF[va])[:, :8])
            for ep in (5, 20):
                m = MLP(ep).fit(FF[tr], T[tr], N[tr])
                sel[(f"mlp{z}", ep)] = env_err_db(T[va], m(FF[va])[0])
        print(kind, "validation envelope error dB (held-out source", held, "):", sel, flush=True)
        predictors, fit_s, chosen = {}, {}, {}
        for z, FF in sets.items():
            for kindp in ("ridge", "mlp"):
                name = kindp + z
                best = min((k for k in sel if k[0] == name), key=sel.get)
                chosen[name] = best[1]
                t = time.thread_time()
                if kindp == "ridge":
                    fitted = Ridge(best[1]).fit(FF, np.hstack([T, N]))

                    def pr(f, fitted=fitted):
                        out = fitted(f)
                        return out[:, :8], (out[:, 8:] > 0.5).astype(np.int32)
                    if not z:
                        ridge = fitted
                else:
                    pr = MLP(best[1]).fit(FF, T, N)
                fit_s[name] = time.thread_time() - t
                predictors[name] = pr

        # the step predictor of the predictive variant, trained on the training clips' coded levels
        SF, ST, S0, S1, SS = [], [], [], [], []
        for c in train:
            lv, _ = coded_levels(c["x"], lay, mr, mh)
            f = features(c["none"], lay)
            n = min(lv.shape[1], len(f))
            pa = np.clip(ridge(f[:n])[:, :8], 0, X.LEVELS - 1)
            L = lv[:, :n].T.astype(np.float64)
            SF.append(step_features(f[1:n], L[:-1], pa[1:], pa[:-1]))
            sym, c0, c1 = contexts(lv[:, :n].T, pa, [200] * (n // 200 + 1))
            SS.append(sym), S0.append(c0), S1.append(c1)
            ST.append(np.diff(L, axis=0))
        SF, ST = np.vstack(SF), np.vstack(ST)
        SS, S0, S1 = np.concatenate(SS), np.concatenate(S0), np.concatenate(S1)
        table0, table1 = Table(SS, S0, 6), Table(SS, S1, 6 * 13 * 5)
        stepper = Ridge(10.0).fit(SF, ST)
        # dead zone chosen on the training clips (bits of the residual steps)
        pst = stepper(SF)
        theta = min((0.5, 0.75, 1.0, 1.5, 2.0, 99.0),
                    key=lambda th: level_bits((ST - np.where(np.abs(pst) > th, np.rint(pst), 0)).T.astype(np.int64)))

        rows = []
        for c in test:
            sr, n_x = SR, len(c["x"])
            dur = n_x / sr
            t_orig, _ = band_steps(c["x"], lay)
            row = {"clip": c["name"], "kbps_none": c["kbps_none"], "kbps_param": c["kbps_param"],
                   "ext_kbps": c["ext_kbps"], "decode_ms_per_s": c["decode_ms_per_s"]}
            for cond in ("none", "param"):
                tt = band_steps(c[cond], lay)[0]
                m = min(len(tt), len(t_orig))
                row[f"env_{cond}"] = env_err_db(t_orig[:m], tt[:m])
            # parametric: CPU of the layer (encoder: Analyzer + encode; decoder: decode + Extender)
            t0 = time.thread_time()
            an = X.Analyzer(1, sr, mr, mh)
            an.push(np.asarray(c["x"], np.float64)[None])
            lv, nz = an.take(0, last=True)
            blobs = [X.encode(lv[:, :, a:b], nz[:, :, a:b]) for a, b in chunked(lv[0], c["chunks"])]
            t1 = time.thread_time()
            dec = [X.decode(bl, 1, 10 ** 6) for bl in blobs]
            extend_with(c["low"], np.concatenate([d[0] for d in dec], -1)[0],
                            np.concatenate([d[1] for d in dec], -1)[0], sr, mr)
            t2 = time.thread_time()
            row["param_enc_ms"], row["param_dec_ms"] = (t1 - t0) * 1000 / dur, (t2 - t1) * 1000 / dur
            check = extend_with(c["low"], c["levels"], c["noise"], sr, mr)
            row["param_replay_max_diff"] = float(np.abs(check[:n_x] - c["param"][:n_x]).max())
            lv_file, nz_file = c["levels"].astype(np.int64), c["noise"].astype(np.int64)
            row["param_bits_est_kbps"] = param_bits_estimate(lv_file, nz_file, c["chunks"]) / dur / 1000
            # blind: the no-extend file's low band, predicted envelope; "+offsets": plus one coded offset per chunk
            # and band (the original's mean level less the prediction over the chunk, 6 bits each)
            for name, pr in predictors.items():
                t0 = time.thread_time()
                f = features(c["none"], lay)
                if name.endswith("+z"):
                    f = np.hstack([f, latent_features(Zte[f"{len(rows)}/none"], len(f), lay, mr, mh)])
                lv_p, nz_p = pr(f)
                lv_p = np.clip(lv_p, 0, X.LEVELS - 1)
                yb = extend_with(c["none"], lv_p.T, nz_p.T, sr, mr)
                row[f"{name}_dec_ms"] = (time.thread_time() - t0) * 1000 / dur
                m = min(len(lv_p), len(t_orig))
                row[f"{name}_pred_err"] = env_err_db(t_orig[:m], lv_p[:m])
                row[f"env_{name}"] = env_err_db(t_orig[:m], band_steps(yb, lay)[0][:m])
                np.save(cache / f"{kind}-{name}-{len(rows)}.npy", yb)
                for seg in OFFSET_SEGMENTS:  # frames per offset: 200 = a 5 s chunk, 40 = 1 s, 10 = 0.25 s
                    lv_o, bits = lv_p.copy(), 0
                    for a in range(0, m, seg):
                        b = min(a + seg, m)
                        loud = loud_mask(t_orig[:m])[a:b]
                        d = np.where(loud, t_orig[a:b] - lv_p[a:b], 0).sum(0) / np.maximum(loud.sum(0), 1)
                        lv_o[a:b] += np.clip(np.rint(d), -32, 31)
                        bits += 6 * X.BANDS
                    lv_o = np.clip(lv_o, 0, X.LEVELS - 1)
                    yo = extend_with(c["none"], lv_o.T, nz_p.T, sr, mr)
                    row[f"env_{name}-off{seg}"] = env_err_db(t_orig[:m], band_steps(yo, lay)[0][:m])
                    row[f"{name}-off{seg}_kbps"] = bits / dur / 1000
                    np.save(cache / f"{kind}-{name}-off{seg}-{len(rows)}.npy", yo)
            # the control for the offsets: no predictor, the original's mean level per segment and band (6 bits each)
            # and its majority noise flag (1 bit each)
            m = min(frame_count(n_x, lay.hop), len(t_orig))
            flags_orig = band_steps(c["x"], lay)[1]
            for seg in OFFSET_SEGMENTS:
                lv_m, nz_m, bits = np.zeros((m, X.BANDS)), np.zeros((m, X.BANDS), np.int32), 0
                for a in range(0, m, seg):
                    b = min(a + seg, m)
                    loud = loud_mask(t_orig[:m])[a:b]
                    lv_m[a:b] = np.rint(np.where(loud, t_orig[a:b], 0).sum(0) / np.maximum(loud.sum(0), 1))
                    nz_m[a:b] = flags_orig[a:b].mean(0) > 0.5
                    bits += 7 * X.BANDS
                ym = extend_with(c["none"], lv_m.T, nz_m.T, sr, mr)
                row[f"env_mean-off{seg}"] = env_err_db(t_orig[:m], band_steps(ym, lay)[0][:m])
                row[f"mean-off{seg}_kbps"] = bits / dur / 1000
                np.save(cache / f"{kind}-mean-off{seg}-{len(rows)}.npy", ym)
            # the parametric coder at coarser spans (real bytes), on the no-extend file's low band
            for span in (2, 4, 8):
                X.SPAN = span
                try:
                    blobs = [X.encode(lv[:, :, a:b], nz[:, :, a:b]) for a, b in chunked(lv[0], c["chunks"])]
                finally:
                    X.SPAN = 1
                dec = [X.decode(bl, 1, 10 ** 6) for bl in blobs]
                ys = extend_with(c["none"], np.concatenate([d[0] for d in dec], -1)[0],
                                 np.concatenate([d[1] for d in dec], -1)[0], sr, mr)
                row[f"span{span}_kbps"] = sum(4 + len(bl) for bl in blobs) * 8 / dur / 1000
                tt = band_steps(ys, lay)[0]
                m = min(len(tt), len(t_orig))
                row[f"env_span{span}"] = env_err_db(t_orig[:m], tt[:m])
                np.save(cache / f"{kind}-span{span}-{len(rows)}.npy", ys)
            # predictive: the file's own envelope, coded against the decoder's prediction (from the file's low band)
            t0 = time.thread_time()
            f = features(c["low"], lay)
            pa = np.clip(ridge(f)[:, :8], 0, X.LEVELS - 1)
            n = lv_file.shape[1]
            pa = np.vstack([pa, np.repeat(pa[-1:], max(0, n - len(pa)), 0)])[:n]
            f = np.vstack([f, np.repeat(f[-1:], max(0, n - len(f)), 0)])[:n]
            L = lv_file.T.astype(np.float64)
            g = np.vstack([np.zeros((1, 8)), stepper(step_features(f[1:], L[:-1], pa[1:], pa[:-1]))])
            row["pred_extra_ms"] = (time.thread_time() - t0) * 1000 / dur
            row["pred_bits_kbps"] = predictive_bits(lv_file, nz_file, c["chunks"], g.T, theta) / dur / 1000
            sym, c0, c1 = contexts(lv_file.T, pa, c["chunks"])
            row["steps_coder_kbps"] = coder_level_bits(lv_file, c["chunks"]) / dur / 1000
            row["steps_static_kbps"] = table0.bits(sym, c0) / dur / 1000
            row["steps_learned_kbps"] = table1.bits(sym, c1) / dur / 1000
            rows.append(row)
            print(kind, row, flush=True)
        results[kind] = {"rows": rows, "selection": {f"{k[0]} {k[1]}": v for k, v in sel.items()},
                         "chosen": chosen, "theta": theta,
                         "winner": min(sel, key=sel.get)[0],
                         "fit_s": fit_s,
                         "train": {"clips": len(train), "seconds": sum(len(c["x"]) for c in train) / SR,
                                   "sources": sorted(set(c["source"] for c in train))}}
    (cache / "learn.json").write_text(json.dumps(results, indent=1))


def visqol(cache: Path, conditions, tag):
    path = cache / f"visqol-{tag}.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    tests = {kind: load(cache, kind, "test") for kind in SETUPS}
    winners = json.loads((cache / "learn.json").read_text()) if (cache / "learn.json").exists() else {}
    for cond in conditions:
        for kind, test in tests.items():
            for i, c in enumerate(test):
                name = cond.replace("WINNER", winners.get(kind, {}).get("winner", ""))
                key = f"{kind}/{i}/{name}"
                if key in done:
                    continue
                y = c[name] if name in ("none", "param") else np.load(cache / f"{kind}-{name}-{i}.npy")
                done[key] = metrics.visqol(c["x"], y[: len(c["x"])], SR, "audio")
                path.write_text(json.dumps(done, indent=1))
                print(key, done[key], flush=True)


def table(cache: Path):
    res = json.loads((cache / "learn.json").read_text())
    vq = {k: v for p in sorted(cache.glob("visqol*.json")) for k, v in json.loads(p.read_text()).items()}
    lines = []
    for kind, r in res.items():
        rows, win = r["rows"], r["winner"]

        def mean(k, rows=rows):
            return float(np.mean([x[k] for x in rows]))

        def v(cond, kind=kind, rows=rows):
            vals = [vq.get(f"{kind}/{i}/{cond}") for i in range(len(rows))]
            return f"{np.mean(vals):.2f}" if all(x is not None for x in vals) else "-"

        ext, none, dec = mean("ext_kbps"), mean("kbps_none"), mean("decode_ms_per_s")
        enc_pred = mean("param_enc_ms") + mean(f"{win}_dec_ms") + dec
        model, kbps = SETUPS[kind]
        lines += [f"### {kind}: {model} `--kbps {kbps:g}`, {len(rows)} unseen clips", "",
                  "| condition | total kbps | of it extension | ViSQOL audio | envelope error dB | "
                  "CPU ms/s encoder | CPU ms/s decoder |", "|---|---|---|---|---|---|---|",
                  f"| none (`--no-extend`) | {none:.2f} | 0 | {v('none')} | {mean('env_none'):.1f} | 0 | 0 |",
                  f"| parametric, shipped (span 1, real file) | {mean('kbps_param'):.2f} | {ext:.3f} | {v('param')} | "
                  f"{mean('env_param'):.2f} | {mean('param_enc_ms'):.1f} | {mean('param_dec_ms'):.1f} |"]
        for span in (2, 4, 8):
            k = mean(f"span{span}_kbps")
            lines.append(f"| parametric, span {span} (real bytes) | {none + k:.2f} | {k:.3f} | {v(f'span{span}')} | "
                         f"{mean(f'env_span{span}'):.2f} | {mean('param_enc_ms'):.1f} | {mean('param_dec_ms'):.1f} |")
        for name in r["chosen"]:
            tag = " (chosen)" if name == win else ""
            lines.append(f"| learned blind, {name}{tag} | {none:.2f} | 0 | {v(name)} | {mean(f'env_{name}'):.2f} | 0 | "
                         f"{mean(f'{name}_dec_ms'):.1f} |")
        for seg in OFFSET_SEGMENTS:
            k = mean(f"{win}-off{seg}_kbps")
            lines.append(f"| learned ({win}) + 8 offsets per {seg / X.FRAME_RATE:g} s (6 bits each) | {none + k:.2f} | "
                         f"{k:.3f} | {v(f'{win}-off{seg}')} | {mean(f'env_{win}-off{seg}'):.2f} | {enc_pred:.1f} | "
                         f"{mean(f'{win}_dec_ms'):.1f} |")
        for seg in OFFSET_SEGMENTS:
            k = mean(f"mean-off{seg}_kbps")
            lines.append(f"| control, no predictor: the original's mean level (6 bits) and noise flag (1 bit) per band "
                         f"and "
                         f"{seg / X.FRAME_RATE:g} s | {none + k:.2f} | {k:.3f} | {v(f'mean-off{seg}')} | "
                         f"{mean(f'env_mean-off{seg}'):.2f} | {mean('param_enc_ms'):.1f} | "
                         f"{mean('param_dec_ms'):.1f} |")
        for label, key, extra in (("parametric envelope, its steps coded with a static table trained on the training "
                                   "clips (no predictor)", "steps_static_kbps", 0.0),
                                  ("learned predictive: the same, the decoder's blind prediction (ridge) as the "
                                   "table's context", "steps_learned_kbps", mean("pred_extra_ms"))):
            k = ext - (mean("steps_coder_kbps") - mean(key))
            enc = mean("param_enc_ms") + (extra + dec if extra else 0.0)
            lines.append(f"| {label} | {mean('kbps_param') - ext + k:.2f} | {k:.3f} (estimate) | {v('param')} (same "
                         f"audio) | {mean('env_param'):.2f} | {enc:.1f} | {mean('param_dec_ms') + extra:.1f} |")
        lines += ["", "Bits of the parametric envelope's level steps (frames after a chunk's first; header, first "
                  "frames "
                  "and flags unchanged), kbps:", "",
                  "| coding of the steps | kbps |", "|---|---|",
                  f"| extend.py's per-chunk, per-band logistic tables (the shipped coder, cost model) | "
                  f"{mean('steps_coder_kbps'):.3f} |",
                  "| a static table counted on the training clips, no prediction (context: band group, band left "
                  f"out) | "
                  f"{mean('steps_static_kbps'):.3f} |",
                  f"| the same plus the decoder's blind prediction as context (ridge; P_t - L_t-1 and P's own step) | "
                  f"{mean('steps_learned_kbps'):.3f} |",
                  f"| extend.py's tables on the residual of a ridge step predictor (dead zone {r['theta']:g}; whole "
                  f"envelope incl. header and flags: {mean('pred_bits_kbps'):.3f} vs {mean('param_bits_est_kbps'):.3f} "
                  f"estimated for the shipped coding, {ext:.3f} real bytes) | - |",
                  "", f"Checks: the decoder's Extender replayed on the recorded low band and envelope reproduces the "
                  f"decoded file (max |diff| {max(x['param_replay_max_diff'] for x in rows):.1e}); the cost model "
                  f"gives {mean('param_bits_est_kbps'):.3f} kbps for the shipped envelope against {ext:.3f} kbps of "
                  "real "
                  f"bytes. Whole decoder {dec:.1f} CPU ms/s. Predictor choice on the held-out training source "
                  f"(envelope error dB of the predicted levels): "
                  + ", ".join(f"{k} {x:.2f}" for k, x in r["selection"].items())
                  + f". Training: {r['train']['clips']} clips, {r['train']['seconds'] / 60:.1f} min "
                  f"({', '.join(r['train']['sources'])}); fits (CPU s): "
                  + ", ".join(f"{k} {x:.2f}" for k, x in r["fit_s"].items()) + ".", ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=("prep", "latents", "visqol-base", "learn", "visqol-learned", "table", "all"))
    p.add_argument("--cache", type=Path, default=Path("/tmp/bwe-learned-cache"))
    a = p.parse_args()
    a.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if a.stage in ("prep", "all"):
        prep(a.cache)
    if a.stage in ("latents", "all"):
        latents(a.cache)
    if a.stage in ("visqol-base", "all"):
        visqol(a.cache, ("none", "param"), "base")
    if a.stage in ("learn", "all"):
        learn(a.cache, a.cache)
    if a.stage in ("visqol-learned", "all"):
        visqol(a.cache, ("WINNER", "WINNER-off200", "mean-off200", "span8"), "learned")
    if a.stage in ("table", "all"):
        print(table(a.cache))


if __name__ == "__main__":
    sys.exit(main())
