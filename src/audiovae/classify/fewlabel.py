"""Few-label learning: accuracy of probes trained on k labelled examples per class (supervised, or
semi-supervised with the rest unlabelled), and ``suggest``, the clips worth labelling first."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable

import numpy as np

from audiovae.classify.classifier import ESTIMATORS, probe_search
from audiovae.classify.embed import ClassifyError

DRAWS = 20  # random draws of the labelled examples per k: standard errors of 1-2 points at k = 5 (5 draws: 2-4)

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
    return probe_search(n_min, len(y), seed, estimators, folds).fit(x, y).best_estimator_


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
