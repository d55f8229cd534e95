"""What caps a speech model's codec at high rates: on the clips of `audiovae bench codec` (test split, 2 s or
longer, spread over the sources), each model's posterior information (KL in kbps), its posterior-mean
reconstruction quality (the codec's ceiling: PESQ, ViSQOL), the same after an edit of the reconstruction
(--edit) or of its latents (--latents sample: a posterior sample instead of the mean; --latent-noise STD),
and the frame-rate comb (power at multiples of the latent frame rate over power halfway between,
2.5-7.5 kHz; 0 dB for a smooth spectrum).

    PYTHONPATH=src .venv/bin/python experiments/decoder-limits/probe.py speech16k runs/X/checkpoints/last.ckpt \
        --manifest corpora/speech16k/manifest.jsonl --edit band-eq --edit random-phase

A model is a shipped name, an exported folder or a training checkpoint.
"""

import argparse
import functools
import itertools
from pathlib import Path

import numpy as np
import torch
from scipy.signal import istft, stft, welch

from audiovae import audio, metrics
from audiovae.config import ModelConfig, from_dict
from audiovae.data.manifest import read_manifest, spread
from audiovae.inference import reconstruct
from audiovae.models.vae import VAE
from audiovae.registry import load, read_checkpoint

BAND_EDGES = (0, 250, 500, 750, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8001)


def get_model(spec: str) -> VAE:
    if spec.endswith(".ckpt"):
        config, state, _ = read_checkpoint(spec)
        model = VAE(from_dict(ModelConfig, config["model"]))
        model.load_state_dict(state)
        return model.eval()
    return load(spec).eval()


def band_eq(ref: np.ndarray, y: np.ndarray, sr: int, rng, per_frame: bool = False) -> np.ndarray:
    """The reconstruction with each band's energy set to the original's (an oracle equalizer): over the whole
    clip, or ``per_frame`` in each 10 ms STFT frame (an oracle of the spectral envelope)."""
    nperseg = sr // 50 if per_frame else 512
    f, _, r = stft(ref, sr, nperseg=nperseg)
    _, _, s = stft(y, sr, nperseg=nperseg)
    axis = 0 if per_frame else None
    gain = np.ones(s.shape)
    for a, b in itertools.pairwise(BAND_EDGES):
        m = (f >= a) & (f < b)
        gain[m] = np.sqrt((np.abs(r[m]) ** 2).mean(axis) / ((np.abs(s[m]) ** 2).mean(axis) + 1e-12))
    return istft(s * gain, sr, nperseg=nperseg)[1][: len(y)].astype(np.float32)


def random_phase(ref: np.ndarray, y: np.ndarray, sr: int, rng, above: float = 2500.0) -> np.ndarray:
    """The reconstruction with random STFT phases above ``above`` Hz (its magnitudes kept)."""
    f, _, s = stft(y, sr, nperseg=640, noverlap=480)
    m = f >= above
    s[m] = np.abs(s[m]) * np.exp(2j * np.pi * rng.random(s[m].shape))
    return istft(s, sr, nperseg=640, noverlap=480)[1][: len(y)].astype(np.float32)


EDITS = {"band-eq": band_eq, "band-eq-frames": functools.partial(band_eq, per_frame=True), "random-phase": random_phase}


@torch.no_grad()
def posterior(model: VAE, x: np.ndarray):
    """The posterior of (1, samples), padded so that decoding its frames completes every sample."""
    n = x.shape[1]
    return model.encode(torch.nn.functional.pad(torch.from_numpy(x), (0, model.padded_length(n) - n)))


@torch.no_grad()
def decode_changed(model: VAE, post, n: int, what) -> np.ndarray:
    """``n`` samples decoded from a posterior sample ("sample") or from the mean plus N(0, what^2) noise, seeded
    per clip."""
    g = torch.Generator().manual_seed(0)
    z = post.sample(g) if what == "sample" else post.mean + what * torch.randn(post.mean.shape, generator=g)
    return model.decode(z)[0, :n].numpy()


def comb_db(x: np.ndarray, sr: int, spacing: float) -> float:
    f, p = welch(x, sr, nperseg=sr // 2)  # 2 Hz bins
    lines = np.arange(2500, 7500, spacing)
    at = p[np.searchsorted(f, lines)]
    between = p[np.searchsorted(f, lines + spacing / 2)]
    return float(10 * np.log10(at.mean() / between.mean()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--split", default="test", help="manifest split (choose fine-tunings on valid)")
    ap.add_argument("--edit", action="append", default=[], choices=sorted(EDITS))
    ap.add_argument("--latents", action="append", default=[], choices=["sample"])
    ap.add_argument("--latent-noise", action="append", default=[], type=float)
    ap.add_argument("--plot", type=Path, help="PNG: spectrograms and zoomed spectra of the clip with the largest "
                    "comb in the first model's reconstructions")
    args = ap.parse_args()
    torch.set_num_threads(1)
    entries = [e for e in read_manifest(args.manifest, split=args.split)[0] if e.duration >= 2.0]
    chosen = spread(entries, args.clips)
    root = Path(args.manifest).parent
    clips = [audio.load(e.audio_path(root), mono=True, offset=e.offset, duration=e.duration) for e in chosen]
    decoded = {}
    for spec in ["original", *args.models]:
        model = None if spec == "original" else get_model(spec)
        spacing = 50.0 if model is None else model.sample_rate / model.hop_length
        rng = np.random.default_rng(0)
        rows = []
        for (x, sr), e in zip(clips, chosen, strict=True):
            if model is None:
                rows.append({"source": e.source, "comb_db": comb_db(x[0], sr, spacing)})
                continue
            post = posterior(model, x)  # the encoder is causal: its first samples // hop frames are the signal's
            kbps = float(post.kl()[..., : x.shape[1] // model.hop_length].sum(1).mean()) / np.log(2) * spacing / 1000
            y = reconstruct(model, x, sr)[0][: x.shape[1]]
            decoded.setdefault(spec, []).append(y)
            row = {"source": e.source, "kbps": kbps, "comb_db": comb_db(y, sr, spacing),
                   "pesq": metrics.pesq_wb(x[0], y, sr), "visqol": metrics.visqol(x[0], y, sr, "speech")}
            for what in [*args.latents, *args.latent_noise]:
                z = decode_changed(model, post, x.shape[1], what)
                row[f"pesq z {what}"] = metrics.pesq_wb(x[0], z, sr)
                row[f"visqol z {what}"] = metrics.visqol(x[0], z, sr, "speech")
            for edit in args.edit:
                z = EDITS[edit](x[0], y, sr, rng)
                row[f"pesq {edit}"] = metrics.pesq_wb(x[0], z, sr)
                row[f"visqol {edit}"] = metrics.visqol(x[0], z, sr, "speech")
            rows.append(row)
        keys = [k for k in rows[0] if k != "source"]
        print(f"{spec} ({len(rows)} clips): " + ", ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in keys))
        for source in dict.fromkeys(r["source"] for r in rows):
            rs = [r for r in rows if r["source"] == source]
            print(f"  {source} ({len(rs)}): " + ", ".join(f"{k} {np.mean([r[k] for r in rs]):.2f}" for k in keys))
        if spec == args.models[0]:
            worst, first_spacing = int(np.argmax([r["comb_db"] for r in rows])), spacing
    if args.plot:
        x, sr = clips[worst]
        plot(args.plot, chosen[worst].id, sr, first_spacing,
             {"original": x[0]} | {s: d[worst] for s, d in decoded.items()})


def plot(path: Path, title: str, sr: int, spacing: float, waves: dict[str, np.ndarray]) -> None:
    from matplotlib.figure import Figure

    from audiovae.plots import log_spectrogram

    fig = Figure(figsize=(12, 2.6 * len(waves)))
    axes = fig.subplots(len(waves), 2, gridspec_kw={"width_ratios": [3, 2]}, squeeze=False)
    for (name, w), (left, right) in zip(waves.items(), axes, strict=True):
        db, hop_s = log_spectrogram(w, sr)
        left.imshow(db, origin="lower", aspect="auto", extent=(0, db.shape[1] * hop_s, 0, sr / 2000), cmap="magma",
                    vmin=db.max() - 90, vmax=db.max())
        left.set_title(f"{Path(name).parent.parent.name or name}: {name.split('/')[-1]}", fontsize=9)
        left.set_ylabel("kHz")
        f, p = welch(w, sr, nperseg=sr // 2)
        band = (f >= 3000) & (f <= 3500)
        right.plot(f[band], 10 * np.log10(p[band] + 1e-20), lw=0.8)
        right.set_title(f"spectrum 3-3.5 kHz, comb {comb_db(w, sr, spacing):.1f} dB", fontsize=9)
        right.set_ylabel("dB")
    axes[-1, 0].set_xlabel("seconds")
    axes[-1, 1].set_xlabel("Hz")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
