"""Embeddings, linear / kNN probes, few-label learning and the classification benchmark on VAE posteriors
(and an MFCC baseline).

An embedding is a set of statistics over time of the posterior (``POOLINGS``: mean and std of the means,
optionally of log sigma, quantiles, a short-window max / min), or the output of the model's learned embedding
head (pooling ``learned``: ``models/embedder.py``, stored with the model by ``audiovae train-embedder``),
averaged over channels. Silence is embedded like any other signal (it has a well-defined, nearly constant
latent) and gets a label like any other clip. A file shorter than one latent frame is refused with an error
naming it. Intermediate encoder layers are not used: callers see the VAE only through ``encode`` (DESIGN.md),
and their statistics did no better than the posterior's (experiments/encoder-layers/probe.py). A probe can
also sit on a copy of the learned head fine-tuned with its labels (``finetuned_embeddings``,
``train/head.py``); the classifier folder then holds that head.

A fitted classifier is saved without pickle: ``classifier.json`` (classes, estimator and parameters,
model name, its sha256 and encoder_sha256, feature kind, pooling, dimension) and ``classifier.npz`` (scaler
and estimator arrays), plus ``head.safetensors`` for a fine-tuned head (its sha256 in the JSON); ``Classifier``
predicts from those arrays with numpy alone (and the head in torch), and ``check_model`` refuses a model with
another encoder (registry.py). A kNN stores its (scaled) training set; a linear probe stores one weight vector
per class.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiovae import audio
from audiovae.errors import AudioVAEError
from audiovae.files import replaced, write_text

FEATURE_KINDS = ("vae", "mfcc")
PARENT_DIR = "parent-dir"
# Poolings over time of the posterior, per latent dim: mean / std of the means (mu), mean / std of log sigma,
# quantiles of mu, max / min of a MAX_WINDOW_S moving average of mu. The default was chosen on the valid
# split by `audiovae bench classify` (docs/bench/classify_pooling_valid.md).
POOLINGS = {
    "mean-std": ("mean", "std"),
    "mean-std-sigma": ("mean", "std", "sigma", "sigma_std"),
    "quantiles": ("mean", "std", "q10", "q50", "q90"),
    "mean-std-max": ("mean", "std", "max", "min"),
    "all": ("mean", "std", "sigma", "sigma_std", "q10", "q50", "q90", "max", "min"),
}
DEFAULT_POOLING = "all"
LEARNED = "learned"  # the model's learned embedding head, when it has one
_EMBEDDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loaded heads, per model object
MAX_WINDOW_S = 0.2
HEAD_FILE = "head.safetensors"  # a fine-tuned head in a classifier folder
MFCC_RATE, MFCC_FFT, MFCC_HOP, MFCC_MELS, MFCC_COEFFS = 16000, 512, 160, 40, 20


class ClassifyError(AudioVAEError):
    """Bad input to embedding or classification: short file, empty data, too few examples, wrong dimension."""


def posterior_frames(model, x) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log standard deviations, each (channels, latent_dim, frames) float64, of
    (channels, samples) at the model's rate: streamed in blocks (bounded memory) and padded like
    ``inference.encode_means``, so the means are the codec's frames."""
    from torch.nn import functional as F

    from audiovae.inference import BLOCK_SECONDS

    n = x.shape[-1]
    total = model.padded_length(n)
    x = F.pad(x, (0, total - n))
    enc, block = model.stream_encoder(), int(BLOCK_SECONDS * model.sample_rate)
    posts = [enc.posterior(x[:, i : i + block]) for i in range(0, total, block)]
    mu = np.concatenate([p.mean.double().numpy() for p in posts], axis=-1)
    return mu, np.concatenate([p.std.clamp_min(1e-8).log().double().numpy() for p in posts], axis=-1)


def _smoothed_max(mu: np.ndarray, width: int) -> np.ndarray:
    """Max over time of a ``width``-frame moving average, (channels, dims, frames) -> (channels, dims)."""
    width = max(1, min(width, mu.shape[-1]))
    c = np.cumsum(np.pad(mu, ((0, 0), (0, 0), (1, 0))), axis=-1)
    return ((c[..., width:] - c[..., :-width]) / width).max(-1)


def _pool(mu: np.ndarray, logsig: np.ndarray, pooling: str, frame_rate: float) -> np.ndarray:
    parts = {
        "mean": lambda: mu.mean(-1), "std": lambda: mu.std(-1),
        "sigma": lambda: logsig.mean(-1), "sigma_std": lambda: logsig.std(-1),
        "q10": lambda: np.quantile(mu, 0.1, axis=-1), "q50": lambda: np.quantile(mu, 0.5, axis=-1),
        "q90": lambda: np.quantile(mu, 0.9, axis=-1),
        "max": lambda: _smoothed_max(mu, round(MAX_WINDOW_S * frame_rate)),
        "min": lambda: -_smoothed_max(-mu, round(MAX_WINDOW_S * frame_rate)),
    }
    return np.concatenate([parts[p]() for p in POOLINGS[pooling]], axis=-1).mean(0).astype(np.float32)


def learned_embedder(model):
    """``model``'s learned embedding head, loaded once per model object; an error naming how to train one
    when it has none."""
    if model not in _EMBEDDERS:
        from audiovae.registry import load_embedder

        _EMBEDDERS[model] = load_embedder(model)[0]
    return _EMBEDDERS[model]


def model_poolings(model) -> tuple[str, ...]:
    """The poolings ``model`` offers: every hand-made one, and ``learned`` when it has an embedding head."""
    return (*POOLINGS, LEARNED) if model.card.get("embed") else tuple(POOLINGS)


def best_pooling(model) -> str:
    """The model's best embedding: its learned head when it has one, else ``DEFAULT_POOLING``."""
    return LEARNED if LEARNED in model_poolings(model) else DEFAULT_POOLING


def embedding_dim(model, pooling: str = DEFAULT_POOLING) -> int:
    check_pooling(pooling, model)
    return learned_embedder(model).config.dim if pooling == LEARNED else len(POOLINGS[pooling]) * model.latent_dim


def check_pooling(pooling: str, model=None) -> None:
    """Refuse an unknown pooling, and ``learned`` for a ``model`` without an embedding head."""
    if pooling not in (*POOLINGS, LEARNED):
        raise ClassifyError(f"unknown pooling '{pooling}' (use one of {', '.join((*POOLINGS, LEARNED))})")
    if pooling == LEARNED and model is not None:
        learned_embedder(model)


def pooling_meta(model, pooling: str) -> dict:
    """What a classifier records about its pooling: its name and, for ``learned``, the head's sha256."""
    return {"pooling": pooling} | ({"embed_sha256": model.card["embed"]["sha256"]} if pooling == LEARNED else {})


def _learned(embedder, mu: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return embedder(torch.from_numpy(mu).float()).mean(0).numpy()


def posterior(model, wave: np.ndarray, sample_rate: int, name: str = "audio") -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log sigmas (channels, latent_dim, frames) of a signal at any rate; an error naming
    ``name`` when it is shorter than one latent frame."""
    from audiovae.inference import to_model_rate

    x = to_model_rate(model, wave, sample_rate)
    if x.shape[-1] < model.hop_length:
        raise ClassifyError(f"{name}: shorter than one latent frame ({x.shape[-1]} samples at {model.sample_rate} Hz, "
                            f"need {model.hop_length})")
    return posterior_frames(model, x)


def embed_many(model, wave: np.ndarray, sample_rate: int, poolings, name: str = "audio",
               embedder=None) -> dict[str, np.ndarray]:
    """Embeddings of one signal under several poolings, from one pass of the encoder; ``embedder`` replaces the
    model's learned head for ``learned`` (a fine-tuned classifier's own head)."""
    for p in poolings:
        check_pooling(p, model if embedder is None else None)
    return _pooled(model, *posterior(model, wave, sample_rate, name), poolings, embedder)


def _pooled(model, mu: np.ndarray, logsig: np.ndarray, poolings, embedder=None) -> dict[str, np.ndarray]:
    rate = model.sample_rate / model.hop_length
    head = (learned_embedder(model) if embedder is None else embedder) if LEARNED in poolings else None
    return {p: _learned(head, mu) if p == LEARNED else _pool(mu, logsig, p, rate) for p in poolings}


def embed(model, wave: np.ndarray, sample_rate: int, name: str = "audio", pooling: str = DEFAULT_POOLING) -> np.ndarray:
    """(channels, samples) float32 -> (``embedding_dim``,) float32: statistics over frames of the posterior (see
    ``POOLINGS``) or the learned head's embedding, averaged over channels."""
    return embed_many(model, wave, sample_rate, (pooling,), name)[pooling]


def finetuned_embeddings(model, means: list[np.ndarray], labels, cfg=None, progress: bool = False,
                         **trainer) -> tuple[object, np.ndarray]:
    """Fine-tune ``model``'s learned head with a linear layer on labelled clips (``train/head.py``): ``means``
    are each clip's posterior means (channels, latent_dim, frames), every channel a training clip. Returns the
    head, rounded to its stored precision (fp16 weights), and the clips' embeddings (N, dim) by it. ``trainer``:
    accelerator, devices."""
    import torch

    from audiovae.registry import stored_state
    from audiovae.train.head import finetune_head

    _, idx = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    clips = [torch.from_numpy(ch.T).float() for mu in means for ch in mu]
    targets = [int(c) for mu, c in zip(means, idx, strict=True) for _ in mu]
    head = finetune_head(learned_embedder(model), clips, targets, model.sample_rate / model.hop_length, cfg,
                         progress=progress, **trainer)
    head.load_state_dict(stored_state(head))
    return head, np.stack([_learned(head, mu) for mu in means])


def mfcc_features(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """The MFCC baseline: 20 MFCCs and their deltas at 16 kHz (mono mix), mean and std over time -> (80,)."""
    from scipy.fft import dct

    from audiovae.models.blocks import mel_filterbank

    audio.validate(wave)
    x = audio.resample(wave.mean(0, keepdims=True).astype(np.float32), sample_rate, MFCC_RATE)[0]
    x = np.pad(x, (0, max(0, MFCC_FFT - len(x))))
    n = 1 + (len(x) - MFCC_FFT) // MFCC_HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, MFCC_FFT)[:: MFCC_HOP][:n] * np.hanning(MFCC_FFT)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    mel = power @ mel_filterbank(MFCC_RATE, MFCC_FFT, MFCC_MELS).numpy().T
    c = dct(np.log(mel + 1e-10), type=2, norm="ortho", axis=-1)[:, :MFCC_COEFFS]
    d = np.gradient(c, axis=0) if len(c) > 1 else np.zeros_like(c)
    f = np.concatenate([c, d], axis=1)
    return np.concatenate([f.mean(0), f.std(0)]).astype(np.float32)


def features(kind: str, model, wave: np.ndarray, sample_rate: int, name: str = "audio",
             pooling: str = DEFAULT_POOLING) -> np.ndarray:
    """Embedding of one signal: ``vae`` (needs ``model``) or ``mfcc``."""
    if kind == "vae":
        return embed(model, wave, sample_rate, name, pooling)
    if kind == "mfcc":
        return mfcc_features(wave, sample_rate)
    raise ClassifyError(f"unknown feature kind '{kind}' (use {' or '.join(FEATURE_KINDS)})")


@dataclass
class Item:
    """One clip to embed: a file, optionally a segment of it, and its label (None when unknown).

    ``rate``: resample to this rate before any feature (a benchmark uses it to remove a sample-rate cue)."""

    path: Path
    offset: float = 0.0
    duration: float | None = None
    label: str | None = None
    rate: int | None = None

    def load(self) -> tuple[np.ndarray, int]:
        """(channels, samples) float32 and its rate (``rate`` when set)."""
        x, sr = audio.load(self.path, offset=self.offset, duration=self.duration)
        if self.rate is not None and self.rate != sr:
            x, sr = audio.resample(x, sr, self.rate), self.rate
        return x, sr


def manifest_items(manifest: str | os.PathLike, label: str, split: str, source: str | None = None,
                   fixed: str | None = None) -> list[Item]:
    """A manifest's ``split`` clips having the label key ``label`` (all clips when ``fixed`` is given: they are
    all labelled ``fixed``), optionally only those whose source starts with ``source``."""
    from audiovae.data.manifest import read_manifest

    p = Path(manifest)
    entries, _ = read_manifest(p, split=split)
    return [Item(e.audio_path(p.parent), e.offset, e.duration, fixed if fixed is not None else str(e.labels[label]))
            for e in entries if (fixed is not None or e.labels.get(label) is not None)
            and (source is None or e.source.startswith(source))]


def labelled_items(data: str | os.PathLike, label: str, split: str = "train") -> list[Item]:
    """Clips with labels: a manifest's ``split`` entries having ``label``, or a folder's audio files
    labelled by their parent folder's name (``label`` must then be ``parent-dir``)."""
    p = Path(data)
    if p.is_dir():
        if label != PARENT_DIR:
            raise ClassifyError(f"{p}: a folder gives labels from folder names: use --label {PARENT_DIR}")
        items = [Item(f, label=f.parent.name) for f in audio.find_audio_files(p)]
    else:
        items = manifest_items(p, label, split)
    if not items:
        raise ClassifyError(f"{p}: no labelled audio (label '{label}', split '{split}')")
    return items


MEANS = "means"  # embed_items_multi's key for each clip's posterior means (a list: their lengths differ)


def embed_items_multi(items: list[Item], model, poolings=(), mfcc: bool = False,
                      progress: Callable[[int, int], None] | None = None, skip_errors: bool = True,
                      embedder=None, means: bool = False) -> tuple[dict, list[int], list[str]]:
    """Features of many clips in one pass: {"vae:POOLING": (N, D), "mfcc": (N, 80)} for each pooling asked
    (needs ``model``; ``embedder``: see ``embed_many``) and MFCC when ``mfcc``, and with ``means`` each clip's
    posterior means under ``MEANS``; the indices of the embedded items; messages of the skipped ones.

    With ``skip_errors`` False the first unreadable or too-short file raises its error."""
    for p in poolings:
        check_pooling(p, model if embedder is None else None)
    rows: dict[str, list[np.ndarray]] = {f"vae:{p}": [] for p in poolings} | ({"mfcc": []} if mfcc else {}) \
        | ({MEANS: []} if means else {})
    kept, failed = [], []
    for i, it in enumerate(items):
        try:
            x, sr = it.load()
            got = {}
            if poolings or means:
                mu, logsig = posterior(model, x, sr, str(it.path))
                got = {f"vae:{p}": v for p, v in _pooled(model, mu, logsig, poolings, embedder).items()}
                got |= {MEANS: mu.astype(np.float32)} if means else {}
            if mfcc:
                got["mfcc"] = mfcc_features(x, sr)
        except AudioVAEError as e:
            if not skip_errors:
                raise
            failed.append(str(e))
        else:
            for key, v in got.items():
                rows[key].append(v)
            kept.append(i)
        if progress is not None:
            progress(i + 1, len(items))
    return {k: v if k == MEANS else np.stack(v) if v else np.zeros((0, 0), np.float32) for k, v in rows.items()}, \
        kept, failed


def embed_items(items: list[Item], kind: str, model=None, progress: Callable[[int, int], None] | None = None,
                skip_errors: bool = True, pooling: str = DEFAULT_POOLING, embedder=None
                ) -> tuple[np.ndarray, list[int], list[str]]:
    """(features (N, D) float32, indices of the embedded items, one-line messages of the skipped ones)
    for ``kind`` vae (with ``pooling``; ``embedder``: see ``embed_many``) or mfcc; for ``MEANS`` a list of
    posterior means instead of features. With ``skip_errors`` False the first bad file raises."""
    if kind not in (*FEATURE_KINDS, MEANS):
        raise ClassifyError(f"unknown feature kind '{kind}' (use {' or '.join(FEATURE_KINDS)})")
    vae = kind == "vae"
    out, kept, failed = embed_items_multi(items, model, (pooling,) if vae else (), mfcc=kind == "mfcc",
                                          progress=progress, skip_errors=skip_errors, embedder=embedder,
                                          means=kind == MEANS)
    return out[f"vae:{pooling}" if vae else kind], kept, failed


def check_classes(y: np.ndarray, minimum: int = 2) -> None:
    counts = Counter(y.tolist())
    if len(counts) < 2:
        raise ClassifyError(f"need at least two classes, found {len(counts)} ({', '.join(map(str, counts))})")
    few = sorted(c for c, n in counts.items() if n < minimum)
    if few:
        raise ClassifyError(f"class '{few[0]}' has {counts[few[0]]} example(s); each class needs at least {minimum}"
                            + (f" ({len(few)} such classes)" if len(few) > 1 else ""))


ESTIMATORS = ("logreg", "svm", "knn")
DRAWS = 20  # random draws of the labelled examples per k: standard errors of 1-2 points at k = 5 (5 draws: 2-4)


def check_estimators(estimators) -> None:
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown or not estimators:
        raise ClassifyError(f"unknown estimator '{(unknown or [''])[0]}' (use {', '.join(ESTIMATORS)})")


def _search(n_min: int, n: int, seed: int, estimators=ESTIMATORS, folds: int = 5):
    """GridSearchCV over StandardScaler + (logistic regression | linear SVM | kNN), macro-F1, stratified folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    check_estimators(estimators)
    folds = min(folds, n_min)
    grid = {
        "logreg": {"clf": [LogisticRegression(max_iter=2000)], "clf__C": [0.01, 0.1, 1.0]},
        "svm": {"clf": [LinearSVC(max_iter=5000, random_state=seed)], "clf__C": [0.001, 0.01, 0.1]},
        "knn": {"clf": [KNeighborsClassifier(algorithm="brute")],
                "clf__n_neighbors": sorted({1, min(5, n - -(-n // folds))})},
    }
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    return GridSearchCV(pipe, [grid[e] for e in dict.fromkeys(estimators)],
                        cv=StratifiedKFold(folds, shuffle=True, random_state=seed), scoring="f1_macro")


class Classifier:
    """A fitted probe as plain arrays: predicts with numpy, saved as JSON + .npz (no pickle). A probe fitted on
    a fine-tuned head's embeddings (``classify fit --finetune``) holds that ``head`` too (``HEAD_FILE``, its
    sha256 and config in the JSON, verified on load)."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], head=None):
        self.meta, self.arrays, self.head = meta, arrays, head

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @classmethod
    def from_pipeline(cls, pipe, x: np.ndarray, y: np.ndarray, meta: dict) -> Classifier:
        """Arrays of a Pipeline(StandardScaler, LogisticRegression | LinearSVC | kNN) fitted on (x, y)."""
        scale, clf = pipe.named_steps["scale"], pipe.named_steps["clf"]
        arrays = {"mean": scale.mean_, "scale": scale.scale_}
        kind = type(clf).__name__
        if kind == "KNeighborsClassifier":
            arrays |= {"train_x": scale.transform(x), "train_y": np.searchsorted(clf.classes_, y)}
            params = {"n_neighbors": int(clf.n_neighbors)}
        else:
            arrays |= {"coef": clf.coef_, "intercept": clf.intercept_}
            params = {"C": float(clf.C)}
        meta = meta | {"classes": [str(c) for c in clf.classes_], "estimator": kind, "params": params,
                       "dim": int(scale.mean_.shape[0])}
        return cls(meta, {k: np.asarray(v, np.int64 if k == "train_y" else np.float64) for k, v in arrays.items()})

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, classes): class probabilities (kNN: neighbour votes; linear SVM: softmax of margins)."""
        a = self.arrays
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ClassifyError(f"classifier expects {self.dim}-dim features, got shape {tuple(x.shape)}")
        z = (x.astype(np.float64) - a["mean"]) / a["scale"]
        n_classes = len(self.classes)
        if self.meta["estimator"] == "KNeighborsClassifier":
            k = self.meta["params"]["n_neighbors"]
            d = ((z[:, None, :] - a["train_x"][None]) ** 2).sum(-1)
            nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
            votes = np.zeros((len(x), n_classes))
            np.add.at(votes, (np.arange(len(x))[:, None], a["train_y"][nearest]), 1.0)
            return votes / k
        s = z @ a["coef"].T + a["intercept"]
        if s.shape[1] == 1:  # binary: one margin for the second class
            s = np.concatenate([np.zeros_like(s), s], axis=1)
        s = np.exp(s - s.max(1, keepdims=True))
        return s / s.sum(1, keepdims=True)

    def predict(self, x: np.ndarray) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(x).argmax(1)]

    def save(self, out: str | os.PathLike) -> Path:
        """Write OUT/classifier.npz (and the head), then OUT/classifier.json, each replaced at once; returns the
        JSON path."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        with replaced(d / "classifier.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, **self.arrays)
        if self.head is not None:
            from safetensors.torch import save_file

            from audiovae.config import to_dict
            from audiovae.registry import sha256, stored_state

            with replaced(d / HEAD_FILE) as tmp:
                save_file(stored_state(self.head), tmp)
            self.meta |= {"head_sha256": sha256(d / HEAD_FILE), "head_config": to_dict(self.head.config)}
        path = d / "classifier.json"
        write_text(path, json.dumps(self.meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Classifier:
        """A classifier from its folder, or a shipped one by name (e.g. speech16k-language)."""
        from audiovae.registry import PRETRAINED_DIR

        d = Path(folder)
        if not d.exists() and len(d.parts) == 1 and (PRETRAINED_DIR / d.name / "classifier.json").is_file():
            d = PRETRAINED_DIR / d.name
        try:
            meta = json.loads((d / "classifier.json").read_text(encoding="utf-8"))
            with np.load(d / "classifier.npz", allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise ClassifyError(f"{d}: not a saved classifier ({str(e).splitlines()[0]})") from None
        return cls(meta, arrays, _load_head(d, meta) if "head_sha256" in meta else None)

    @property
    def pooling(self) -> str:
        """The pooling of the embeddings it was fitted on (classifiers saved before poolings: mean-std)."""
        return self.meta.get("pooling", "mean-std")

    def embed(self, model, wave: np.ndarray, sample_rate: int, name: str = "audio") -> np.ndarray:
        """The features this classifier takes of one signal: its pooling, with its own head when it has one (MFCC
        for an MFCC classifier; ``model`` is then unused)."""
        if self.meta["features"] == "mfcc":
            return mfcc_features(wave, sample_rate)
        return embed_many(model, wave, sample_rate, (self.pooling,), name, self.head)[self.pooling]

    def check_model(self, model, folder: str | os.PathLike = "classifier") -> None:
        """Refuse a model whose embeddings have another dimension than the classifier's, come from another
        encoder (the recorded ``encoder_sha256`` must be the model's; a classifier saved before it: its
        ``model_sha256`` must be the model's whole weights' sha256; one with neither is not checked), or from
        another learned head than the one it was fitted on."""
        from audiovae.registry import latents_mismatch

        if self.meta["features"] != "vae":
            return
        own = self.head is not None  # a fine-tuned head: the model's own head is not used
        got = self.head.config.dim if own else embedding_dim(model, self.pooling)
        if not own and self.pooling == LEARNED and model.card["embed"]["sha256"] != self.meta.get("embed_sha256"):
            raise ClassifyError(f"{folder}: classifier was fitted on another learned embedding head than model "
                                f"'{model.name}' holds (refit it)")
        if got != self.dim:
            raise ClassifyError(f"{folder}: classifier expects {self.dim}-dim embeddings of model "
                                f"'{self.meta.get('model_name')}', model '{model.name}' gives {got} "
                                f"({self.pooling} pooling)")
        bad = latents_mismatch(model, self.meta, legacy_key="model_sha256", required=False)
        if bad:
            raise ClassifyError(f"{folder}: classifier was fitted on the embeddings of model "
                                f"'{self.meta.get('model_name')}', model '{model.name}' has {bad}")

    def record_encoder(self, model, folder: str | os.PathLike) -> Path:
        """Add ``model``'s encoder_sha256 to FOLDER/classifier.json (a classifier saved before the encoder
        hash, checked against ``model`` first), so that it keeps working with a model whose decoder alone
        changed; classifier.npz is left as it is. Returns the JSON path."""
        self.check_model(model, folder)
        meta = {k: v for k, v in self.meta.items() if k != "encoder_sha256"}
        at = list(meta).index("model_sha256") + 1 if "model_sha256" in meta else len(meta)
        items = list(meta.items())
        self.meta = dict(items[:at] + [("encoder_sha256", model.card["encoder_sha256"])] + items[at:])
        path = Path(folder) / "classifier.json"
        write_text(path, json.dumps(self.meta, indent=2) + "\n")
        return path


def _load_head(folder: Path, meta: dict):
    """The fine-tuned head of a classifier folder, its file checked against the recorded sha256."""
    from safetensors.torch import load_file

    from audiovae.config import ConfigError, from_dict
    from audiovae.models.embedder import Embedder, EmbedderConfig
    from audiovae.registry import restore_state, sha256

    path = folder / HEAD_FILE
    if not path.is_file() or sha256(path) != meta["head_sha256"]:
        raise ClassifyError(f"{path}: missing, or not the head this classifier was fitted with (sha256 differs)")
    try:
        head = Embedder(from_dict(EmbedderConfig, meta["head_config"]))
    except (KeyError, TypeError, ConfigError) as e:
        raise ClassifyError(f"{path}: not a valid head config in classifier.json ({e})") from None
    return restore_state(head, load_file(path), str(path))


def fit(x: np.ndarray, y: list[str] | np.ndarray, meta: dict | None = None, seed: int = 0,
        estimators=ESTIMATORS, folds: int = 5) -> tuple[Classifier, dict]:
    """Choose and fit the probe by stratified cross-validation (macro-F1) among ``estimators``; returns it and
    the CV summary. Every class needs two examples (one to train, one to validate)."""
    y = np.asarray(y).astype(str)
    check_classes(y)
    n_min = min(Counter(y.tolist()).values())
    search = _search(n_min, len(y), seed, estimators, folds)
    with warnings.catch_warnings():  # a tiny fold may miss a class
        warnings.filterwarnings("ignore", category=UserWarning)
        search.fit(x, y)
    clf = Classifier.from_pipeline(search.best_estimator_, x, y, dict(meta or {}))
    clf.meta["cv_macro_f1"] = float(search.best_score_)
    return clf, {"cv_macro_f1": float(search.best_score_), "estimator": clf.meta["estimator"],
                 "params": clf.meta["params"]}


def evaluate(y_true: list[str], y_pred: list[str]) -> dict:
    """Accuracy, macro-F1 and the confusion matrix over the sorted union of labels."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    labels = sorted(set(y_true) | set(y_pred))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0)),
            "labels": labels, "confusion": confusion_matrix(y_true, y_pred, labels=labels)}


def plot_confusion(result: dict, path: Path, title: str) -> Path:
    """Confusion matrix PNG (rows: true labels, columns: predicted)."""
    from matplotlib.figure import Figure

    from audiovae.plots import save_figure

    labels, cm = result["labels"], result["confusion"]
    size = max(4.0, 0.35 * len(labels) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}")
    return save_figure(fig, Path(path))


def _draw(y: np.ndarray, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to k examples per class (all when k is None), stratified and random."""
    idx = [np.flatnonzero(y == c) for c in np.unique(y)]
    return np.sort(np.concatenate([i if k is None else rng.choice(i, min(k, len(i)), replace=False) for i in idx]))


SEMI_METHODS = ("self-training", "label-spreading")
SUGGESTED = "suggested"  # bench rows whose labelled clips `suggest` picked instead of a draw per class


def suggest(x: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` clips of ``x`` worth labelling first, chosen without labels (TypiClust, Hacohen et al. 2022):
    k-means into ``n`` clusters of the standardized embeddings, and from each its most typical clip (the least
    mean distance to its 20 nearest neighbours in the cluster). Their indices, largest cluster first, and the
    size of the cluster each stands for (fewer than ``n`` when ``x`` has fewer distinct rows)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    if not 1 <= n <= len(x):
        raise ClassifyError(f"cannot suggest {n} of {len(x)} clips (use 1..{len(x)})")
    z = StandardScaler().fit_transform(x)
    with warnings.catch_warnings():  # fewer distinct rows than n: fewer clusters, as documented
        warnings.filterwarnings("ignore", "Number of distinct clusters", ConvergenceWarning)
        clusters = KMeans(n, random_state=seed).fit_predict(z)
    sizes = np.bincount(clusters, minlength=n)
    order = np.argsort(-sizes, kind="stable")[: np.count_nonzero(sizes)]
    picks = []
    for c in order:
        members = np.flatnonzero(clusters == c)
        if len(members) == 1:
            picks.append(members[0])
            continue
        dist, _ = NearestNeighbors(n_neighbors=min(20, len(members) - 1)).fit(z[members]).kneighbors()
        picks.append(members[np.argmin(dist.mean(axis=1))])
    return np.array(picks), sizes[order]


def _supervised(x: np.ndarray, y: np.ndarray, seed: int, estimators, folds: int):
    """The probe for a few-label draw: chosen by cross-validation among ``estimators`` when every class has two
    examples, else (a class with one label) scaler + logistic regression; the one class when there is one."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = Counter(y.tolist())
    if len(counts) == 1:
        return DummyClassifier(strategy="most_frequent").fit(x, y)
    n_min = min(counts.values())
    if n_min < 2 or (len(estimators) == 1 and estimators[0] == "logreg"):
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    return _search(n_min, len(y), seed, estimators, folds).fit(x, y).best_estimator_


def _semi_supervised(x: np.ndarray, y_semi: np.ndarray, method: str):
    """Fitted on all of x, labelled where y_semi >= 0: self-training of a logistic regression, or label
    spreading over a 10-nearest-neighbour graph of the standardized features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

    if method == "self-training":
        model = SelfTrainingClassifier(LogisticRegression(max_iter=2000), threshold=0.9)
    elif method == "label-spreading":
        model = LabelSpreading(kernel="knn", n_neighbors=min(10, len(x) - 1), alpha=0.2, max_iter=100)
    else:
        raise ClassifyError(f"unknown semi-supervised method '{method}' (use {' or '.join(SEMI_METHODS)})")
    with np.errstate(divide="ignore", invalid="ignore"):  # label spreading: a point with no labelled neighbour
        return make_pipeline(StandardScaler(), model).fit(x, y_semi)


def few_label_eval(x_train: np.ndarray | None, y_train, x_test: np.ndarray | None, y_test, k: int | None,
                   draws: int = DRAWS, seed: int = 0, semi: str | None = None, estimators=ESTIMATORS, folds: int = 3,
                   refit: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                   suggested: bool = False, keep: bool = False) -> dict:
    """Accuracy and macro-F1 on (x_test, y_test), mean and std over ``draws`` random stratified draws of k labelled
    train examples per class (k=None: all of them, one draw). The probe is chosen per draw by cross-validation
    among ``estimators`` (one label per class: logistic regression). ``semi`` ("self-training" or
    "label-spreading") also uses the rest of the train set, unlabelled (same as supervised for k=None).
    ``refit(chosen)`` instead gives each draw's features (of the chosen train examples, of the test set), from a
    head fine-tuned on that draw (supervised only). ``suggested`` labels the k x classes train clips that ``suggest``
    picks (seeded per draw) instead of k per class: they need not cover every class. ``keep`` adds each draw's
    labelled train indices (``chosen``) and predicted test labels (``predicted``)."""
    from sklearn.metrics import accuracy_score, f1_score

    classes, y_tr = np.unique(np.asarray(y_train).astype(str), return_inverse=True)
    y_te = np.searchsorted(classes, np.asarray(y_test).astype(str))
    known = np.isin(np.asarray(y_test).astype(str), classes)
    y_te = np.where(known, y_te, -1)
    rng = np.random.default_rng(seed)
    acc, f1, kept = [], [], {"chosen": [], "predicted": []}
    for draw in range(1 if k is None else draws):
        if suggested and k is not None:
            chosen = suggest(x_train, min(k * len(classes), len(x_train)), seed + draw)[0]
        else:
            chosen = _draw(y_tr, k, rng)
        with warnings.catch_warnings():  # one label per class looks like regression targets to sklearn
            warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
            warnings.filterwarnings("ignore", "y contains no unlabeled samples", UserWarning)  # k >= class size
            x_eval = x_test
            if semi is not None and k is not None:
                y_semi = np.full(len(y_tr), -1)
                y_semi[chosen] = y_tr[chosen]
                model = _semi_supervised(x_train, y_semi, semi)
            else:
                x_chosen, x_eval = refit(chosen) if refit is not None else (x_train[chosen], x_test)
                model = _supervised(x_chosen, y_tr[chosen], seed + draw, estimators, folds)
        with np.errstate(divide="ignore", invalid="ignore"):
            pred = model.predict(x_eval)
        acc.append(accuracy_score(y_te, pred))
        f1.append(f1_score(y_te, pred, labels=np.unique(y_te[known]), average="macro", zero_division=0))
        kept["chosen"].append(chosen)
        kept["predicted"].append(classes[pred])
    return {"k": "all" if k is None else k, "draws": len(acc), "accuracy_mean": float(np.mean(acc)),
            "accuracy_std": float(np.std(acc)), "macro_f1_mean": float(np.mean(f1)), "macro_f1_std": float(np.std(f1))
            } | (kept if keep else {})


def balanced_subset(items: list[Item], per_class: int, seed: int = 0) -> list[Item]:
    """Up to ``per_class`` random items of each label, in a stable order."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by.setdefault(it.label, []).append(i)
    keep = sorted(j for idx in by.values() for j in rng.permutation(idx)[:per_class].tolist())
    return [items[j] for j in keep]


@dataclass(frozen=True)
class Part:
    """Clips of one corpus: label key (or a ``fixed`` label for all of them), optionally one source prefix."""

    corpus: str
    label: str | None
    source: str | None = None
    fixed: str | None = None


@dataclass(frozen=True)
class Task:
    """A classification task over the corpora: the model whose embeddings it uses, the clips it trains on
    (train split) and the clips it is evaluated on (valid and test splits; by default the same parts)."""

    name: str
    model: str
    description: str
    train: tuple[Part, ...]
    eval_parts: tuple[Part, ...] = ()
    rate: int | None = None


TASKS = (
    Task("language", "speech16k", "spoken language, all speech16k sources", (Part("speech16k", "language"),)),
    Task("speaker", "speech16k", "speaker, Fish Fillets NG voice actors (cs and nl)",
         (Part("speech16k", "speaker", "fillets-ng-data"),)),
    Task("instrument-family", "music24k", "instrument family, fluidsynth renders and sample packages",
         (Part("music24k", "family"),)),
    Task("source-type", "music24k", "music vs sound effects (music24k kind) vs speech (speech16k), "
         "every clip band-limited to 16 kHz sampling first",
         (Part("music24k", "kind"), Part("speech16k", None, fixed="speech")), rate=16000),
    Task("language-cross-source", "speech16k", "spoken language, trained on Tux Paint stamps, tested on Asterisk "
         "prompts", (Part("speech16k", "language", "tuxpaint"),), (Part("speech16k", "language", "asterisk"),)),
)


def task_manifest(part: Part, corpora: Path) -> Path:
    manifest = Path(corpora) / part.corpus / "manifest.jsonl"
    if not manifest.exists():
        raise ClassifyError(f"{manifest}: corpus not built (audiovae data build {part.corpus})")
    return manifest


def task_items(task: Task, corpora: Path, split: str) -> list[Item]:
    parts = task.train if split == "train" or not task.eval_parts else task.eval_parts
    items = []
    for part in parts:
        for it in manifest_items(task_manifest(part, corpora), part.label, split, part.source, part.fixed):
            it.rate = task.rate
            items.append(it)
    return items


def task_classes(task: Task, corpora: Path, min_train: int = 20, min_test: int = 3
                 ) -> tuple[dict[str, list[Item]], list[str]]:
    """Each split's items of ``task`` and the classes it keeps: those with >= ``min_train`` train and >=
    ``min_test`` test clips (an error when fewer than two)."""
    items = {s: task_items(task, corpora, s) for s in ("train", "valid", "test")}
    n_tr, n_te = Counter(it.label for it in items["train"]), Counter(it.label for it in items["test"])
    classes = sorted(c for c in n_tr if n_tr[c] >= min_train and n_te[c] >= min_test)
    if len(classes) < 2:
        raise ClassifyError(f"task {task.name}: fewer than two classes with >= {min_train} train and "
                            f">= {min_test} test clips")
    return items, classes


def task_subsets(task: Task, corpora: Path, max_train: int = 100, max_eval: int = 50, min_train: int = 20,
                 min_test: int = 3) -> tuple[dict[str, list[Item]], list[str]]:
    """The clips ``task_features`` embeds: up to ``max_train`` per kept class of the train split and ``max_eval``
    of valid and test, and the kept classes (``task_classes``)."""
    items, classes = task_classes(task, corpora, min_train, min_test)
    caps = {"train": max_train, "valid": max_eval, "test": max_eval}
    return {s: balanced_subset([it for it in items[s] if it.label in classes], cap) for s, cap in caps.items()}, classes


def task_features(task: Task, corpora: Path, model, poolings=tuple(POOLINGS), max_train: int = 100,
                  max_eval: int = 50, min_train: int = 20, min_test: int = 3,
                  progress: Callable[[str, int, int], None] | None = None, means: bool = False) -> tuple[dict, dict]:
    """Features of ``task``'s clips: {split: ({"vae:POOLING" | "mfcc": (N, D)}, labels (N,))} for train, valid
    and test, and a summary; with ``means``, each clip's posterior means too (under ``MEANS``). Classes with >=
    ``min_train`` train and >= ``min_test`` test clips are kept; up to ``max_train`` clips per class of the
    train split and ``max_eval`` of valid and test are embedded."""
    subsets, classes = task_subsets(task, corpora, max_train, max_eval, min_train, min_test)
    feats = {}
    for split, subset in subsets.items():
        report = None if progress is None else (lambda i, n, s=f"{task.name} {split}": progress(s, i, n))
        x, kept, _ = embed_items_multi(subset, model, poolings, mfcc=True, progress=report, means=means)
        feats[split] = (x, np.array([subset[i].label for i in kept]))
    summary = {"task": task.name, "model": model.name, "classes": len(classes),
               **{f"{s}_clips": len(feats[s][1]) for s in feats}, "description": task.description}
    return feats, summary


def pooling_rows(task: str, feats: dict, draws: int = DRAWS, ks=(5, None)) -> list[dict]:
    """Valid-split accuracy of every feature set in ``feats`` (each pooling and MFCC), to choose a pooling."""
    (x_tr, y_tr), (x_va, y_va) = feats["train"], feats["valid"]
    return [{"task": task, "features": key} | few_label_eval(x_tr[key], y_tr, x_va[key], y_va, k=k, draws=draws)
            | {"valid_clips": len(y_va)} for key in x_tr if key != MEANS for k in ks]


def choose_pooling(rows: list[dict], among=None) -> str | None:
    """The pooling with the best valid accuracy, averaged over tasks and label counts, among those measured on
    every task (``learned`` only where every task's model has an embedding head), optionally only ``among``
    these; None when there is none."""
    scores: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r["features"].startswith("vae:") and (among is None or r["features"][4:] in among):
            scores.setdefault(r["features"][4:], {}).setdefault(r["task"], []).append(r["accuracy_mean"])
    tasks = {r["task"] for r in rows}
    everywhere = [p for p, by_task in scores.items() if set(by_task) == tasks]
    return max(everywhere, key=lambda p: float(np.mean([a for accs in scores[p].values() for a in accs])),
               default=None)


def compared_pooling(rows: list[dict], chosen: str) -> str | None:
    """The pooling the test table compares ``chosen`` with: the best hand-made one on valid when ``chosen`` is
    ``learned``, else ``learned`` when it was measured on every task."""
    return choose_pooling(rows, tuple(POOLINGS) if chosen == LEARNED else (LEARNED,))


def test_rows(task: str, feats: dict, pooling: str, ks=(1, 5, 20, None), draws: int = DRAWS,
              methods=(*SEMI_METHODS, SUGGESTED), compared: str | None = None) -> list[dict]:
    """Test-split accuracy of VAE embeddings (``pooling``) and MFCC at each k, supervised and with each of
    ``methods``: the semi-supervised ones, and ``SUGGESTED`` (the clips that ``suggest`` picks labelled), all
    trained on the train split; with ``compared``, that pooling's embeddings too (``vae:POOLING``, supervised
    only)."""
    (x_tr, y_tr), (x_te, y_te) = feats["train"], feats["test"]
    sets = [(f"vae:{pooling}", "vae", methods), ("mfcc", "mfcc", methods)]
    sets += [(f"vae:{compared}", f"vae:{compared}", ())] if compared else []
    rows = []
    for key, name, methods in sets:
        for method in (None, *methods):
            for k in ks:
                if method is not None and k is None:  # all labels: nothing left unlabelled, nothing to pick
                    continue
                r = few_label_eval(x_tr[key], y_tr, x_te[key], y_te, k=k, draws=draws,
                                   semi=None if method == SUGGESTED else method, suggested=method == SUGGESTED)
                rows.append({"task": task, "features": name + (f"+{method}" if method else "")} | r
                            | {"train_clips": len(y_tr), "test_clips": len(y_te)})
    return rows


FINETUNED = "vae+finetune"  # test rows of probes on a head fine-tuned with each draw's labels


def finetune_rows(task: str, feats: dict, model, cfg=None, ks=(None,), draws: int = DRAWS) -> list[dict]:
    """Test accuracy at each k of probes on ``model``'s learned head fine-tuned with that draw's labels
    (``finetuned_embeddings``); ``feats`` from ``task_features(..., means=True)``."""
    (x_tr, y_tr), (x_te, y_te) = feats["train"], feats["test"]

    def refit(chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        head, x = finetuned_embeddings(model, [x_tr[MEANS][i] for i in chosen], y_tr[chosen], cfg)
        return x, np.stack([_learned(head, mu) for mu in x_te[MEANS]])

    return [{"task": task, "features": FINETUNED} | few_label_eval(None, y_tr, None, y_te, k, draws, refit=refit)
            | {"train_clips": len(y_tr), "test_clips": len(y_te)} for k in ks]


def wide_table(rows: list[dict], ks=(1, 5, 20, "all")) -> list[dict]:
    """One row per (task, features): accuracy and macro-F1 at each k, mean over draws."""
    out: dict[tuple, dict] = {}
    for r in rows:
        row = out.setdefault((r["task"], r["features"]), {"task": r["task"], "features": r["features"]})
        row[f"acc@{r['k']}"] = r["accuracy_mean"]
        row[f"f1@{r['k']}"] = r["macro_f1_mean"]
    keys = [f"{m}@{k}" for m in ("acc", "f1") for k in ks]
    return [{"task": r["task"], "features": r["features"]} | {k: r.get(k, "") for k in keys} for r in out.values()]


def _mean_se(row: dict) -> str:
    """Mean accuracy of a row, with its standard error over draws when there were several."""
    n = row["draws"]
    return f"{row['accuracy_mean']:.3f}" + (f" ± {row['accuracy_std'] / math.sqrt(n - 1):.3f}" if n > 1 else "")


def floors(rows: list[dict]) -> list[str]:
    """The issue's floors, checked on benchmark rows: VAE beats MFCC at every k, and VAE accuracy with 5
    labels per class is within 10 points of its all-labels accuracy. One line per failure, with the standard
    errors over draws (both feature sets see the same draws)."""
    by = {(r["task"], r["features"], r["k"]): r for r in rows}
    fails = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for k in dict.fromkeys(r["k"] for r in rows if r["task"] == task and r["features"] == "vae"):
            v, m = by[(task, "vae", k)], by.get((task, "mfcc", k))
            if m is not None and v["accuracy_mean"] <= m["accuracy_mean"]:
                fails.append(f"{task}: k={k}, vae {_mean_se(v)} <= mfcc {_mean_se(m)}")
        five, every = by.get((task, "vae", 5)), by.get((task, "vae", "all"))
        if five and every and every["accuracy_mean"] - five["accuracy_mean"] > 0.10:
            fails.append(f"{task}: k=5 accuracy {five['accuracy_mean']:.3f} more than 10 points below "
                         f"all labels {every['accuracy_mean']:.3f}")
    return fails


def plot_few_label(rows: list[dict], path: Path, all_at: int, titles: dict[str, str] | None = None) -> Path:
    """Test accuracy (mean ± std over draws) against labels per class, one panel per task, one line per
    feature kind; 'all' is drawn at ``all_at``."""
    from matplotlib.figure import Figure

    from audiovae.plots import save_figure

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cols = min(3, len(tasks))
    nrows = -(-len(tasks) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        rs = [r for r in rows if r["task"] == task]
        for kind in dict.fromkeys(r["features"] for r in rs):
            kr = [r for r in rs if r["features"] == kind]
            ks = [all_at if r["k"] == "all" else r["k"] for r in kr]
            style = "-" if "+" not in kind else ":"
            ax.errorbar(ks, [r["accuracy_mean"] for r in kr], yerr=[r["accuracy_std"] for r in kr], marker="o",
                        ms=3, capsize=2, linestyle=style, label=kind)
        ax.set_xscale("log")
        ax.set_title((titles or {}).get(task, task), fontsize=9)
        ax.set_xlabel(f"labels per class (last point: all, <= {all_at})", fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return save_figure(fig, Path(path))
