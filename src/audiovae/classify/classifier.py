"""Probes on embeddings (logistic regression, linear SVM, kNN, chosen by cross-validation) and their files.

A fitted classifier is saved without pickle: ``classifier.json`` (classes, estimator and parameters,
model name, its sha256 and encoder_sha256, feature kind, pooling, dimension) and ``classifier.npz`` (scaler
and estimator arrays), plus ``head.safetensors`` for a fine-tuned head (its sha256 in the JSON); ``Classifier``
predicts from those arrays with numpy alone (and the head in torch), and ``check_model`` refuses a model with
another encoder (registry.py). A kNN stores its (scaled) training set; a linear probe stores one weight vector
per class.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from audiovae.classify.embed import LEARNED, ClassifyError, embed_many, embedding_dim, mfcc_features
from audiovae.config import ConfigError, from_dict, to_dict
from audiovae.files import replaced, write_text
from audiovae.models.embedder import Embedder, EmbedderConfig
from audiovae.plots import save_figure
from audiovae.registry import PRETRAINED_DIR, latents_mismatch, restore_state, sha256, stored_state

HEAD_FILE = "head.safetensors"  # a fine-tuned head in a classifier folder


def check_classes(y: np.ndarray, minimum: int = 2) -> None:
    counts = Counter(y.tolist())
    if len(counts) < 2:
        raise ClassifyError(f"need at least two classes, found {len(counts)} ({', '.join(map(str, counts))})")
    few = sorted(c for c, n in counts.items() if n < minimum)
    if few:
        raise ClassifyError(f"class '{few[0]}' has {counts[few[0]]} example(s); each class needs at least {minimum}"
                            + (f" ({len(few)} such classes)" if len(few) > 1 else ""))


ESTIMATORS = ("logreg", "svm", "knn")


def check_estimators(estimators) -> None:
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown or not estimators:
        raise ClassifyError(f"unknown estimator '{(unknown or [''])[0]}' (use {', '.join(ESTIMATORS)})")


def probe_search(n_min: int, n: int, seed: int, estimators=ESTIMATORS, folds: int = 5):
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

    def known(self, items: list) -> tuple[list, Counter]:
        """The labelled ``items`` whose label is one of the classes, and the count of each other label (the
        classifier can never predict those: an evaluation leaves them out)."""
        return [it for it in items if it.label in self.classes], \
            Counter(it.label for it in items if it.label not in self.classes)

    def save(self, out: str | os.PathLike) -> Path:
        """Write OUT/classifier.npz (and the head), then OUT/classifier.json, each replaced at once; returns the
        JSON path."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        with replaced(d / "classifier.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, **self.arrays)
        if self.head is not None:
            with replaced(d / HEAD_FILE) as tmp:
                save_file(stored_state(self.head), tmp)
            self.meta |= {"head_sha256": sha256(d / HEAD_FILE), "head_config": to_dict(self.head.config)}
        path = d / "classifier.json"
        write_text(path, json.dumps(self.meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Classifier:
        """A classifier from its folder, or a shipped one by name (e.g. speech16k-language)."""
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
    search = probe_search(n_min, len(y), seed, estimators, folds)
    with warnings.catch_warnings():  # a tiny fold may miss a class
        warnings.filterwarnings("ignore", category=UserWarning)
        search.fit(x, y)
    clf = Classifier.from_pipeline(search.best_estimator_, x, y, dict(meta or {}))
    clf.meta["cv_macro_f1"] = float(search.best_score_)
    return clf, {"cv_macro_f1": float(search.best_score_), "estimator": clf.meta["estimator"],
                 "params": clf.meta["params"]}


def evaluate(y_true: list[str], y_pred: list[str]) -> dict:
    """Accuracy, macro-F1 and the confusion matrix over the sorted union of labels; ``per_class``, for each true
    label: its clips, recall, and the label they are most often taken for (None when never) and how often;
    ``confusions``: (true, predicted, clips) of every mistake made, most frequent first."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    labels = sorted(set(y_true) | set(y_pred))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    wrong = cm - np.diag(np.diag(cm))
    per_class = [{"label": lab, "clips": int(cm[i].sum()), "recall": float(cm[i, i] / cm[i].sum()),
                  "taken_for": labels[wrong[i].argmax()] if wrong[i].any() else None, "taken": int(wrong[i].max())}
                 for i, lab in enumerate(labels) if cm[i].sum()]
    confusions = sorted(((labels[i], labels[j], int(wrong[i, j])) for i, j in zip(*np.nonzero(wrong), strict=True)),
                        key=lambda c: (-c[2], c[0], c[1]))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0)),
            "labels": labels, "confusion": cm, "per_class": per_class, "confusions": confusions}


def plot_confusion(result: dict, path: Path, title: str) -> Path:
    """Confusion matrix PNG (rows: true labels, columns: predicted)."""
    from matplotlib.figure import Figure

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
