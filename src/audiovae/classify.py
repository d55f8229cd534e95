"""Embeddings, linear / kNN probes and few-label learning on VAE posterior means (and an MFCC baseline).

An embedding is the time mean and standard deviation of the posterior means, averaged over channels.
Silence is embedded like any other signal (it has a well-defined, nearly constant latent). A file
shorter than one latent frame is refused with an error naming it.

A fitted classifier is saved without pickle: ``classifier.json`` (classes, estimator and parameters,
model name and sha256, feature kind, dimension) and ``classifier.npz`` (scaler and estimator arrays);
``Classifier`` predicts from those arrays with numpy alone.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiovae import audio
from audiovae.errors import AudioVAEError

FEATURE_KINDS = ("vae", "mfcc")
PARENT_DIR = "parent-dir"
MFCC_RATE, MFCC_FFT, MFCC_HOP, MFCC_MELS, MFCC_COEFFS = 16000, 512, 160, 40, 20


class ClassifyError(AudioVAEError):
    """Bad input to embedding or classification: short file, empty data, too few examples, wrong dimension."""


def embed(model, wave: np.ndarray, sample_rate: int, name: str = "audio") -> np.ndarray:
    """(channels, samples) float32 -> (2 * latent_dim,) float32: mean and std over frames of the posterior
    means, averaged over channels."""
    from audiovae.inference import encode_means, to_model_rate

    x = to_model_rate(model, wave, sample_rate)
    if x.shape[-1] < model.hop_length:
        raise ClassifyError(f"{name}: shorter than one latent frame ({x.shape[-1]} samples at {model.sample_rate} Hz, "
                            f"need {model.hop_length})")
    mu = encode_means(model, x).numpy().astype(np.float64)
    return np.concatenate([mu.mean(-1), mu.std(-1)], axis=-1).mean(0).astype(np.float32)


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


def features(kind: str, model, wave: np.ndarray, sample_rate: int, name: str = "audio") -> np.ndarray:
    """Embedding of one signal: ``vae`` (needs ``model``) or ``mfcc``."""
    if kind == "vae":
        return embed(model, wave, sample_rate, name)
    if kind == "mfcc":
        return mfcc_features(wave, sample_rate)
    raise ClassifyError(f"unknown feature kind '{kind}' (use {' or '.join(FEATURE_KINDS)})")


@dataclass
class Item:
    """One clip to embed: a file, optionally a segment of it, and its label (None when unknown)."""

    path: Path
    offset: float = 0.0
    duration: float | None = None
    label: str | None = None


def labelled_items(data: str | os.PathLike, label: str, split: str = "train") -> list[Item]:
    """Clips with labels: a manifest's ``split`` entries having ``label``, or a folder's audio files
    labelled by their parent folder's name (``label`` must then be ``parent-dir``)."""
    from audiovae.data.manifest import read_manifest

    p = Path(data)
    if p.is_dir():
        if label != PARENT_DIR:
            raise ClassifyError(f"{p}: a folder gives labels from folder names: use --label {PARENT_DIR}")
        items = [Item(f, label=f.parent.name) for f in audio.find_audio_files(p)]
    else:
        entries, _ = read_manifest(p, split=split)
        items = [Item(e.audio_path(p.parent), e.offset, e.duration, str(e.labels[label]))
                 for e in entries if e.labels.get(label) is not None]
    if not items:
        raise ClassifyError(f"{p}: no labelled audio (label '{label}', split '{split}')")
    return items


def embed_items(items: list[Item], kind: str, model=None, progress: Callable[[int, int], None] | None = None,
                skip_errors: bool = True) -> tuple[np.ndarray, list[int], list[str]]:
    """(features (N, D) float32, indices of the embedded items, one-line messages of the skipped ones).

    With ``skip_errors`` False the first unreadable or too-short file raises its error."""
    rows, kept, failed = [], [], []
    for i, it in enumerate(items):
        try:
            x, sr = audio.load(it.path, offset=it.offset, duration=it.duration)
            rows.append(features(kind, model, x, sr, name=str(it.path)))
            kept.append(i)
        except AudioVAEError as e:
            if not skip_errors:
                raise
            failed.append(str(e))
        if progress is not None:
            progress(i + 1, len(items))
    dim = rows[0].shape[0] if rows else 0
    return (np.stack(rows) if rows else np.zeros((0, dim), np.float32)), kept, failed


def _check_classes(y: np.ndarray, minimum: int = 2) -> None:
    counts = Counter(y.tolist())
    if len(counts) < 2:
        raise ClassifyError(f"need at least two classes, found {len(counts)} ({', '.join(map(str, counts))})")
    few = sorted(c for c, n in counts.items() if n < minimum)
    if few:
        raise ClassifyError(f"class '{few[0]}' has {counts[few[0]]} example(s); each class needs at least {minimum}"
                            + (f" ({len(few)} such classes)" if len(few) > 1 else ""))


def _search(n_min: int, n: int, seed: int):
    """GridSearchCV over StandardScaler + (logistic regression | linear SVM | kNN)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    folds = min(5, n_min)
    grid = [
        {"clf": [LogisticRegression(max_iter=2000)], "clf__C": [0.1, 1.0, 10.0]},
        {"clf": [LinearSVC(max_iter=5000, random_state=seed)], "clf__C": [0.01, 0.1, 1.0]},
        {"clf": [KNeighborsClassifier(algorithm="brute")],
         "clf__n_neighbors": sorted({1, min(5, n - -(-n // folds))})},
    ]
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    return GridSearchCV(pipe, grid, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), scoring="f1_macro")


class Classifier:
    """A fitted probe as plain arrays: predicts with numpy, saved as JSON + .npz (no pickle)."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray]):
        self.meta, self.arrays = meta, arrays

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
        """Write OUT/classifier.json and OUT/classifier.npz; returns the JSON path."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "classifier.npz", **self.arrays)
        path = d / "classifier.json"
        path.write_text(json.dumps(self.meta, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Classifier:
        d = Path(folder)
        try:
            meta = json.loads((d / "classifier.json").read_text(encoding="utf-8"))
            with np.load(d / "classifier.npz", allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise ClassifyError(f"{d}: not a saved classifier ({str(e).splitlines()[0]})") from None
        return cls(meta, arrays)

    def check_model(self, model, folder: str | os.PathLike = "classifier") -> None:
        """Refuse a model whose embeddings have another dimension than the classifier's."""
        if self.meta["features"] == "vae" and 2 * model.latent_dim != self.dim:
            raise ClassifyError(f"{folder}: classifier expects {self.dim}-dim embeddings of model "
                                f"'{self.meta.get('model_name')}', model '{model.name}' gives {2 * model.latent_dim}")


def fit(x: np.ndarray, y: list[str] | np.ndarray, meta: dict | None = None, seed: int = 0) -> tuple[Classifier, dict]:
    """Choose and fit the probe by stratified cross-validation (macro-F1); returns it and the CV summary."""
    y = np.asarray(y).astype(str)
    _check_classes(y)
    n_min = min(Counter(y.tolist()).values())
    search = _search(n_min, len(y), seed).fit(x, y)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, cm = result["labels"], result["confusion"]
    size = max(4.0, 0.35 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _draw(y: np.ndarray, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to k examples per class (all when k is None), stratified and random."""
    idx = [np.flatnonzero(y == c) for c in np.unique(y)]
    return np.sort(np.concatenate([i if k is None else rng.choice(i, min(k, len(i)), replace=False) for i in idx]))


def few_label_eval(x_train: np.ndarray, y_train, x_test: np.ndarray, y_test, k: int | None, draws: int = 5,
                   seed: int = 0, semi_supervised: bool = False) -> dict:
    """Accuracy and macro-F1 (mean and std over ``draws``) of StandardScaler + logistic regression fitted on
    k random labels per class (k=None: all labels, one draw). ``semi_supervised`` adds the rest of the
    train set unlabelled, through self-training (same as supervised for k=None)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.semi_supervised import SelfTrainingClassifier

    classes, y_tr = np.unique(np.asarray(y_train).astype(str), return_inverse=True)
    y_te = np.searchsorted(classes, np.asarray(y_test).astype(str))
    known = np.isin(np.asarray(y_test).astype(str), classes)
    y_te = np.where(known, y_te, -1)
    rng = np.random.default_rng(seed)
    acc, f1 = [], []
    for _ in range(1 if k is None else draws):
        chosen = _draw(y_tr, k, rng)
        base = LogisticRegression(max_iter=2000)
        if semi_supervised and k is not None:
            y_semi = np.full(len(y_tr), -1)
            y_semi[chosen] = y_tr[chosen]
            model = make_pipeline(StandardScaler(), SelfTrainingClassifier(base, threshold=0.9))
            fit_args = (x_train, y_semi)
        else:
            model = make_pipeline(StandardScaler(), base)
            fit_args = (x_train[chosen], y_tr[chosen])
        with warnings.catch_warnings():  # one label per class looks like regression targets to sklearn
            warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
            model.fit(*fit_args)
        pred = model.predict(x_test)
        acc.append(accuracy_score(y_te, pred))
        f1.append(f1_score(y_te, pred, labels=np.unique(y_te[known]), average="macro", zero_division=0))
    return {"k": "all" if k is None else k, "draws": len(acc), "accuracy_mean": float(np.mean(acc)),
            "accuracy_std": float(np.std(acc)), "macro_f1_mean": float(np.mean(f1)), "macro_f1_std": float(np.std(f1))}


def balanced_subset(items: list[Item], per_class: int, seed: int = 0) -> list[Item]:
    """Up to ``per_class`` random items of each label, in a stable order."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by.setdefault(it.label, []).append(i)
    keep = sorted(j for idx in by.values() for j in rng.permutation(idx)[:per_class].tolist())
    return [items[j] for j in keep]


def benchmark(model, manifest: Path, label: str, max_per_class: int = 40, ks=(1, 5, 20, None), draws: int = 5,
              min_train: int = 20, min_test: int = 3, semi_supervised: bool = False,
              progress: Callable[[str, int, int], None] | None = None) -> tuple[list[dict], dict]:
    """Few-label accuracy of VAE embeddings and the MFCC baseline on a class-balanced subset of a corpus.

    Classes with >= ``min_train`` train and >= ``min_test`` test clips are kept; up to ``max_per_class``
    clips per class are embedded from each split. Returns (rows, subset summary)."""
    train_all = labelled_items(manifest, label, "train")
    test_all = labelled_items(manifest, label, "test")
    n_tr, n_te = Counter(it.label for it in train_all), Counter(it.label for it in test_all)
    classes = sorted(c for c in n_tr if n_tr[c] >= min_train and n_te[c] >= min_test)
    if len(classes) < 2:
        raise ClassifyError(f"{manifest}: fewer than two '{label}' classes with >= {min_train} train and "
                            f">= {min_test} test clips")
    train = balanced_subset([it for it in train_all if it.label in classes], max_per_class)
    test = balanced_subset([it for it in test_all if it.label in classes], max_per_class)
    rows = []
    for kind in FEATURE_KINDS:
        sets = []
        for split, items in (("train", train), ("test", test)):
            report = None if progress is None else (lambda i, n, s=f"{kind} {split}": progress(s, i, n))
            x, kept, _ = embed_items(items, kind, model, report)
            sets += [x, [items[i].label for i in kept]]
        for semi in (False, True) if semi_supervised else (False,):
            for k in [k for k in ks if not (semi and k is None)]:  # all labels: nothing left unlabelled
                r = few_label_eval(*sets, k=k, draws=draws, semi_supervised=semi)
                rows.append({"features": kind + ("+self-training" if semi else ""), **r,
                             "train_clips": len(sets[0]), "test_clips": len(sets[2])})
    return rows, {"classes": classes, "train_clips": len(train), "test_clips": len(test)}


def plot_few_label(rows: list[dict], path: Path, title: str, all_at: int) -> Path:
    """Accuracy (mean ± std) against labels per class, one line per feature kind; 'all' is drawn at ``all_at``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in dict.fromkeys(r["features"] for r in rows):
        rs = [r for r in rows if r["features"] == kind]
        ks = [all_at if r["k"] == "all" else r["k"] for r in rs]
        ax.errorbar(ks, [r["accuracy_mean"] for r in rs], yerr=[r["accuracy_std"] for r in rs], marker="o",
                    capsize=3, label=kind)
    ax.set_xscale("log")
    ax.set_xlabel("labels per class (last point: all)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
