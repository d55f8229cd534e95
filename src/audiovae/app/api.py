"""What the web app computes, on arrays and bytes (no HTTP): the codec against the original (and Opus),
classification, generation and 2-D latent maps. Audio and images come back as bytes (WAV, PNG)."""

from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from audiovae import metrics
from audiovae.audio import wav_bytes
from audiovae.errors import AudioVAEError

OPUS_MIN_KBPS = 6.0  # opusenc's lowest bitrate
MIN_METRIC_SECONDS = 0.5  # shorter clips have too few frames for PESQ, STOI and the mel distance


class Unavailable(AudioVAEError):
    """A feature this installation or model lacks (generation without a prior, a missing module)."""


def spectrogram_png(x: np.ndarray, sample_rate: int, title: str, ref: np.ndarray | None = None,
                    top_db: float | None = None) -> bytes:
    """PNG of the dB spectrogram of mono ``x`` (colors from ``top_db``, default its peak, down 90 dB);
    with ``ref``, of the difference x - ref in dB."""
    from matplotlib.figure import Figure

    from audiovae.plots import log_spectrogram

    db, hop_s = log_spectrogram(x, sample_rate)
    if ref is None:
        top = db.max() if top_db is None else top_db
        opts = {"cmap": "magma", "vmin": top - 90, "vmax": top}
    else:
        db = db - log_spectrogram(ref, sample_rate)[0]
        opts = {"cmap": "coolwarm", "vmin": -30, "vmax": 30}
    fig = Figure(figsize=(8, 2.6))
    ax = fig.subplots()
    im = ax.imshow(db, origin="lower", aspect="auto", extent=(0.0, db.shape[1] * hop_s, 0.0, sample_rate / 2000),
                   **opts)
    ax.set(title=title, xlabel="seconds", ylabel="kHz")
    fig.colorbar(im, ax=ax, label="dB")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, format="png")
    return buf.getvalue()


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def scores(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> dict[str, float | None]:
    """PESQ (wideband), STOI, SI-SDR and mel distance of mono signals; None where undefined (all of them
    for clips under MIN_METRIC_SECONDS) or not installed."""
    n = min(len(ref), len(est))
    ref, est = ref[:n].astype(np.float32), est[:n].astype(np.float32)
    out = {"pesq": None, "stoi": None, "si_sdr": None, "mel_distance": None}
    if n < MIN_METRIC_SECONDS * sample_rate:
        return out
    if metrics.has_pesq():
        out["pesq"] = _finite(metrics.pesq_wb(ref, est, sample_rate))
    try:
        out["stoi"] = _finite(metrics.stoi(ref, est, sample_rate))
    except ImportError:
        pass  # pystoi is in the [bench] extra
    out["si_sdr"] = _finite(metrics.si_sdr(ref, est))
    out["mel_distance"] = _finite(metrics.mel_distance(ref, est, sample_rate))
    return out


@lru_cache(maxsize=4)
def codec(model: str):
    from audiovae.codec.stream import Codec

    return Codec(model)


def opus_available() -> bool:
    from audiovae.codec import baselines

    return not baselines.missing_tools(["opus"])


def compare_codec(wave: np.ndarray, sample_rate: int, model: str, kbps: float) -> dict:
    """Compress and decode ``wave`` at ``kbps`` (with the bandwidth extension where the upload's rate is above the
    model's: the decoded audio keeps the upload's rate and band); sizes, real bitrate and the extension's share,
    metrics, audio, spectrograms, and the same for Opus at that bitrate (at least 6 kbps) when opusenc is installed."""
    from audiovae.codec import baselines
    from audiovae.codec.format import Reader, layer_bytes
    from audiovae.plots import log_spectrogram

    data = codec(model).compress(wave, sample_rate, kbps=kbps)
    decoded, _ = codec(model).decompress(data)
    seconds = wave.shape[1] / sample_rate
    ref, est = wave.mean(0), decoded.mean(0)
    pcm_bytes = wave.size * 2
    top = float(log_spectrogram(ref, sample_rate)[0].max())  # one color scale for the three spectrograms
    result = {
        "model": model, "target_kbps": kbps, "quality": int(Reader(io.BytesIO(data)).header.quality),
        "kbps": len(data) * 8 / seconds / 1000, "bytes": len(data), "pcm_bytes": pcm_bytes,
        "size_ratio": pcm_bytes / len(data), "seconds": seconds, "sample_rate": sample_rate,
        "channels": wave.shape[0], "metrics": scores(ref, est, sample_rate),
        "original_wav": wav_bytes(wave, sample_rate), "decoded_wav": wav_bytes(decoded, sample_rate), "avae": data,
        "spectrograms": {"original": spectrogram_png(ref, sample_rate, "original", top_db=top),
                         "decoded": spectrogram_png(est, sample_rate, f"{model} at {kbps:g} kbps", top_db=top),
                         "difference": spectrogram_png(est, sample_rate, "decoded - original", ref=ref)},
        "opus": None,
        "extension_kbps": layer_bytes(data)["extension"] * 8 / seconds / 1000,  # 0: no band above the model's to extend
    }
    if opus_available():
        coded = baselines.roundtrip("opus", ref, sample_rate, max(kbps, OPUS_MIN_KBPS))
        result["opus"] = {"target_kbps": max(kbps, OPUS_MIN_KBPS), "kbps": coded.kbps, "bytes": coded.bytes,
                          "size_ratio": ref.size * 2 / coded.bytes, "metrics": scores(ref, coded.audio, sample_rate),
                          "wav": wav_bytes(coded.audio[None], sample_rate),
                          "spectrogram": spectrogram_png(coded.audio, sample_rate, "Opus (mono)", top_db=top)}
    return result


def list_classifiers() -> list[str]:
    """Shipped classifiers: folders of the pretrained directory holding a classifier.json."""
    from audiovae.registry import PRETRAINED_DIR

    return sorted(p.parent.name for p in PRETRAINED_DIR.glob("*/classifier.json"))


@lru_cache(maxsize=4)
def model(name: str):
    from audiovae.registry import load

    return load(name)


@lru_cache(maxsize=4)
def classifier(name: str):
    from audiovae.classify import Classifier
    from audiovae.registry import PRETRAINED_DIR

    clf = Classifier.load(PRETRAINED_DIR / name)
    clf.check_model(model(clf.meta["model_name"]), name)
    return clf


def classify(clips: list[tuple[str, np.ndarray, int]], name: str, top: int = 5) -> list[dict]:
    """(file name, wave, rate) clips -> per clip the ``top`` labels with their probabilities."""
    clf = classifier(name)
    m = model(clf.meta["model_name"])
    x = np.stack([clf.embed(m, w, sr, n) for n, w, sr in clips])
    out = []
    for (n, _, _), p in zip(clips, clf.predict_proba(x), strict=True):
        best = np.argsort(-p, kind="stable")[:top]
        out.append({"name": n, "labels": [{"label": clf.classes[i], "probability": float(p[i])} for i in best]})
    return out


@lru_cache(maxsize=4)
def generator(name: str):
    """The ``audiovae.generate.Generator`` of a model: ``Unavailable`` without the module (the server's
    lack), ``AudioVAEError`` for a model without a prior (the client's choice)."""
    try:
        from audiovae.generate import Generator
    except ImportError:
        raise Unavailable("generation is not available in this installation (no audiovae.generate)") from None
    try:
        return Generator(model=name)
    except AudioVAEError as e:
        raise AudioVAEError(f"generation with {name} is not available: {e}") from None


def generate(name: str, seconds: float, label: str | None, temperature: float, seed: int) -> dict:
    g = generator(name)
    if label is not None and label not in g.labels:
        raise AudioVAEError(f"unknown label '{label}' for {name} (known: {', '.join(g.labels) or 'none'})")
    y = g.sample(seconds=seconds, label=label, temperature=temperature, seed=seed)
    return {"sample_rate": g.sample_rate, "seconds": y.shape[-1] / g.sample_rate,
            "wav": wav_bytes(y, g.sample_rate), "spectrogram": spectrogram_png(y.mean(0), g.sample_rate, "generated")}


def interpolate(name: str, a: tuple[np.ndarray, int], b: tuple[np.ndarray, int], steps: int) -> dict:
    g = generator(name)
    waves = g.interpolate(a[0], a[1], b[0], b[1], steps=steps)
    return {"sample_rate": g.sample_rate, "wavs": [wav_bytes(w, g.sample_rate) for w in waves]}


def pca2(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """(N, D) -> (N, 2) coordinates on the first two principal axes (signs fixed) and their variance shares."""
    x = x.astype(np.float64) - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:2] * np.sign(vt[:2, [0]] + (vt[:2, [0]] == 0))  # first loading positive: a stable orientation
    xy = np.pad(x @ vt.T, ((0, 0), (0, 2 - vt.shape[0])))
    share = (s**2 / max(float((s**2).sum()), 1e-12))[:2]
    return xy, [float(v) for v in np.pad(share, (0, 2 - len(share)))]


def latent_map(name: str, clips: list[tuple[str, np.ndarray, int]], labels: list[str]) -> dict:
    """PCA of the clips' embeddings under model ``name``: one point (x, y, label, name) per clip."""
    from audiovae.classify import embed

    if len(clips) < 2:
        raise AudioVAEError(f"a latent map needs at least 2 clips, got {len(clips)}")
    m = model(name)
    xy, share = pca2(np.stack([embed(m, w, sr, n) for n, w, sr in clips]))
    points = [{"x": float(p[0]), "y": float(p[1]), "label": lab, "name": n}
              for p, lab, (n, _, _) in zip(xy, labels, clips, strict=True)]
    return {"model": name, "explained_variance": share, "points": points}


class ClipSet:
    """The server's own clips for the latent map: a folder (labels from parent folders) or a manifest's
    test split (labels from ``label``, default language), up to ``max_clips`` balanced over labels."""

    def __init__(self, path: Path, label: str | None = None, max_clips: int = 300):
        from audiovae.classify import PARENT_DIR, balanced_subset, labelled_items

        items = labelled_items(path, label or (PARENT_DIR if path.is_dir() else "language"), split="test")
        per_class = max(1, max_clips // len({it.label for it in items}))
        self.items = balanced_subset(items, per_class)[:max_clips]
        self._maps: dict[str, dict] = {}

    def load(self, index: int) -> tuple[np.ndarray, int]:
        if not 0 <= index < len(self.items):
            raise AudioVAEError(f"no clip {index} (the set has {len(self.items)})")
        return self.items[index].load()

    def latent_map(self, name: str) -> dict:
        if name not in self._maps:
            clips = [(it.path.name, *self.load(i)) for i, it in enumerate(self.items)]
            self._maps[name] = latent_map(name, clips, [str(it.label) for it in self.items])
        return self._maps[name]
