"""Cross-source spoken-language evaluation (``audiovae bench language``): leave-one-source-out (LOSO) over a
speech corpus's recording chains, and the unseen split.

A clip's *family* is its recording chain: its source package, except that packages sharing voices and
production (``FAMILIES``: the Asterisk prompts, one voice for en and es) are one family. Each fold holds out one
family: a probe trains on the train split of every other family and is tested on every clip of the held-out
family (all its splits but ``unseen``) whose language it was trained on; a family whose languages occur nowhere
else tests nothing. Languages the probe cannot know (only in the unseen split) are left out of the unseen figure.
The headline is the mean over languages of each language's accuracy over its held-out clips (a large family
does not outweigh a small one); the clip-pooled accuracy is reported beside it.

Posterior means are cached per clip (``cached_means``), clean or through the training augmentations of
``train/augment.py``, so that a variant never encodes twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from audiovae import audio
from audiovae.bench.measure import write_table
from audiovae.classify.classifier import Classifier, evaluate, plot_confusion
from audiovae.classify.embed import LEARNED, head_embedding, learned_embedder, model_meta
from audiovae.data.manifest import Entry, read_manifest
from audiovae.files import replaced
from audiovae.inference import encode_means
from audiovae.models.embedder import Embedder, EmbedderConfig
from audiovae.registry import stored_state
from audiovae.train.augment import AugmentConfig, augment
from audiovae.train.head import FinetuneConfig, finetune_classifier, finetuned_embeddings

FAMILIES = {"asterisk-core-sounds-": "asterisk"}  # package prefix -> family of packages sharing one chain
SYNTHETIC = "synthetic"  # the family of synthetic clips (never held out: they are training data only)


def family(entry: Entry) -> str:
    """The recording chain of a clip (see ``FAMILIES``); synthetic clips are one family of their own."""
    if entry.labels.get("synthetic"):
        return SYNTHETIC
    package = str(entry.labels.get("package") or entry.source)
    return next((f for prefix, f in FAMILIES.items() if package.startswith(prefix)), package)


@dataclass
class Clips:
    """The language-labelled clips of a corpus, aligned with their posterior means (``means``: (frames, dims))."""

    entries: list[Entry]
    means: list[np.ndarray]

    @property
    def languages(self) -> np.ndarray:
        return np.array([str(e.labels["language"]) for e in self.entries])

    @property
    def families(self) -> np.ndarray:
        return np.array([family(e) for e in self.entries])

    @property
    def splits(self) -> np.ndarray:
        return np.array([e.split for e in self.entries])

    @property
    def speakers(self) -> np.ndarray:
        """The speaker label where the data names one, else the family (one voice group per chain)."""
        return np.array([str(e.labels.get("speaker") or family(e)) for e in self.entries])


def language_entries(manifest: str | Path, label: str = "language") -> list[Entry]:
    """Every clip of a manifest that has the label (all splits), in manifest order."""
    entries, _ = read_manifest(manifest)
    return [e for e in entries if e.labels.get(label) is not None]


def _ids_hash(entries: list[Entry]) -> str:
    return hashlib.sha256("\n".join(e.id for e in entries).encode()).hexdigest()


def cached_means(model, entries: list[Entry], root: Path, path: str | Path, aug: AugmentConfig | None = None,
                 seed: int = 0, progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """Posterior means (frames, latent_dim) float16 of each clip at ``model``'s rate, mono, optionally through
    ``aug`` (clip i drawn from the generator seeded (seed, i)); cached at ``path`` and reused while the encoder,
    the clips and the augmentation are the same. ``root``: the manifest's folder."""
    path = Path(path)
    meta = {"encoder_sha256": str(model.card.get("encoder_sha256", "")), "ids": _ids_hash(entries),
            "augment": json.dumps(asdict(aug) if aug else None, sort_keys=True), "seed": str(seed)}
    if path.exists():
        with safe_open(str(path), "np") as f:
            stored = f.metadata() or {}
        if stored == meta:
            d = load_file(path)
            return np.split(d["frames"], np.cumsum(d["lengths"])[:-1])
    out = []
    for i, e in enumerate(entries):
        x, sr = audio.load(e.audio_path(root), sample_rate=model.sample_rate, mono=True, offset=e.offset,
                           duration=e.duration)
        if aug is not None:
            x = augment(x, sr, aug, np.random.default_rng((seed, i)))
        x = np.pad(x, ((0, 0), (0, max(0, model.hop_length - x.shape[-1]))))
        with torch.no_grad():
            out.append(encode_means(model, torch.from_numpy(x))[0].T.numpy().astype(np.float16))
        if progress is not None:
            progress(i + 1, len(entries))
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as tmp:
        save_file({"frames": np.ascontiguousarray(np.concatenate(out)),  # the clips are transposed views
                   "lengths": np.array([len(m) for m in out], np.int64)}, str(tmp), metadata=meta)
    return out


@dataclass
class Fold:
    """One held-out family: the clips a probe trains on and those it is tested on (indices into ``Clips``)."""

    name: str
    train: np.ndarray
    test: np.ndarray


def loso_folds(clips: Clips) -> list[Fold]:
    """A fold per family (synthetic clips are never held out): train on the train split of every other family,
    test on the held-out family's clips outside the unseen split whose language the training set has."""
    fam, lang, split = clips.families, clips.languages, clips.splits
    folds = []
    for f in sorted(set(fam.tolist()) - {SYNTHETIC}):
        train = np.flatnonzero((fam != f) & (split == "train"))
        test = np.flatnonzero((fam == f) & (split != "unseen") & np.isin(lang, lang[train]))
        if len(test):
            folds.append(Fold(f, train, test))
    return folds


def unseen_fold(clips: Clips) -> tuple[Fold, np.ndarray]:
    """Train on the whole train split, test on the unseen split's clips of a language it has; and the unseen
    clips of languages that no training clip has (no probe can name them: reported apart)."""
    lang, split = clips.languages, clips.splits
    train = np.flatnonzero(split == "train")
    unseen = split == "unseen"
    known = np.isin(lang, lang[train])
    return Fold("unseen", train, np.flatnonzero(unseen & known)), np.flatnonzero(unseen & ~known)


def balance_weights(languages: np.ndarray, families: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Per-clip sampling weights, uniform at each level of language -> family -> speaker -> clip (mean 1): a
    language is drawn as often as any other, and within it every recording chain, and within a chain every
    speaker, whatever their clip counts."""
    w = np.zeros(len(languages))
    for lg in np.unique(languages):
        in_l = languages == lg
        fams = np.unique(families[in_l])
        for f in fams:
            in_f = in_l & (families == f)
            spk = np.unique(speakers[in_f])
            for s in spk:
                in_s = in_f & (speakers == s)
                w[in_s] = 1.0 / (len(fams) * len(spk) * in_s.sum())
    return w * len(w) / w.sum()


@dataclass(frozen=True)
class Variant:
    """A probe recipe under test. ``head``: ``shipped`` fine-tunes the model's learned head with the labels, then
    fits a logistic regression (C = 1) on its embeddings (the recipe of the probe shipped before this bench);
    ``seq`` trains a small head of the same kind from scratch (``SEQ_HEAD``, ``cmvn``) and keeps the linear
    layer trained with it. ``steps`` of 32
    crops of at most ``crop`` seconds. ``balanced``: ``balance_weights`` for drawing crops (and weighing the
    regression); ``augmented``: the train clips also through the audio augmentations (``CHANNEL_AUGMENT``);
    ``synthetic``: the synthetic corpus's train clips too."""

    name: str
    head: str = "seq"
    cmvn: str = "mean"
    balanced: bool = False
    augmented: bool = False
    synthetic: bool = False
    steps: int = 800
    crop: float = 2.0


VARIANTS = {v.name: v for v in (
    Variant("shipped", head="shipped", steps=2000, crop=3.0),
    Variant("seq", cmvn="none"),
    Variant("seq-cmvn"),
    Variant("seq-cmvn-balanced", balanced=True),
    Variant("seq-cmvn-balanced-aug", balanced=True, augmented=True),
    Variant("seq-cmvn-balanced-synth", balanced=True, synthetic=True),
    Variant("seq-cmvn-balanced-aug-synth", balanced=True, augmented=True, synthetic=True),
)}
SEQ_HEAD = {"channels": 64, "blocks": 3, "kernel": 5, "stride": 2, "attention": 32, "dim": 64, "expansion": 2}
# the recording-chain channel augmentation of the cached augmented copies (train/augment.py)
CHANNEL_AUGMENT = AugmentConfig(pitch=0.3, eq=0.6, bandlimit=0.5, telephone=0.25, reverb=0.3, noise=0.5)


@dataclass
class Corpus:
    """Real clips (every split), the augmented copies of their train clips (by index) and synthetic clips."""

    clips: Clips
    augmented: dict[int, np.ndarray]
    synthetic: Clips | None = None


def _training_set(corpus: Corpus, v: Variant, idx: np.ndarray):
    """Means (channels, dims, frames), languages and balancing weights (None unless ``v.balanced``)."""
    c = corpus.clips
    parts = [(c, idx)] + ([(corpus.synthetic, np.flatnonzero(corpus.synthetic.splits == "train"))]
                          if v.synthetic and corpus.synthetic is not None else [])
    means, lang, fam, spk = [], [], [], []
    for clips, ix in parts:
        extra = [i for i in ix if i in corpus.augmented] if v.augmented and clips is c else []
        means += [clips.means[i] for i in ix] + [corpus.augmented[i] for i in extra]
        for values, out in ((clips.languages, lang), (clips.families, fam), (clips.speakers, spk)):
            out += values[ix].tolist() + values[extra].tolist()
    lang, fam, spk = np.array(lang), np.array(fam), np.array(spk)
    means = [m.T[None].astype(np.float32) for m in means]
    return means, lang, balance_weights(lang, fam, spk) if v.balanced else None


def fit_probe(model, v: Variant, corpus: Corpus, idx: np.ndarray, meta: dict | None = None, seed: int = 0):
    """A ``Classifier`` fitted by recipe ``v`` on the real clips ``idx`` (and what ``v`` adds to them)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    means, lang, w = _training_set(corpus, v, idx)
    meta = dict(meta or {}) | {"recipe": asdict(v), "train_clips": len(means)}
    cfg = FinetuneConfig(steps=v.steps, crop=v.crop, seed=seed)
    if v.head == "shipped":
        head, x = finetuned_embeddings(model, means, lang, cfg, weights=w)
        pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=2000))])
        pipe.fit(x, lang, clf__sample_weight=w)
        clf = Classifier.from_pipeline(pipe, x, lang, meta)
        clf.head = head
        return clf
    torch.manual_seed(seed)
    start = Embedder(EmbedderConfig(latent_dim=model.latent_dim, cmvn=v.cmvn, **SEQ_HEAD))
    start.set_stats(torch.from_numpy(np.concatenate([m[0].T for m in means])))
    classes, target = np.unique(lang, return_inverse=True)
    head, linear = finetune_classifier(start, [torch.from_numpy(m[0].T) for m in means], target.tolist(),
                                       model.sample_rate / model.hop_length, replace(cfg, lr=2e-3, lr_linear=2e-3),
                                       progress=False, weights=None if w is None else w.tolist())
    head.load_state_dict(stored_state(head))
    dim = head.config.dim
    arrays = {"mean": np.zeros(dim), "scale": np.ones(dim), "coef": linear.weight.detach().double().numpy(),
              "intercept": linear.bias.detach().double().numpy()}
    return Classifier(meta | {"classes": classes.tolist(), "estimator": "Linear", "params": {}, "dim": dim},
                      arrays, head)


def predict_means(model, clf, means: list[np.ndarray]) -> list[str]:
    """Labels by ``clf`` of clips given as posterior means (frames, dims)."""
    head = clf.head if clf.head is not None else learned_embedder(model)
    return clf.predict(np.stack([head_embedding(head, m.T[None].astype(np.float32)) for m in means]))


def run_variant(model, v: Variant, corpus: Corpus, folds: list[Fold], cache: Path,
                log: Callable[[str], None] = print) -> dict[str, dict]:
    """Each fold's predictions {fold: {"test": indices, "pred": labels}}, cached per fold under CACHE/preds."""
    out = {}
    for f in folds:
        path = Path(cache) / "preds" / v.name / f"{f.name}.json"
        if not path.exists():
            clf = fit_probe(model, v, corpus, f.train)
            pred = predict_means(model, clf, [corpus.clips.means[i] for i in f.test])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"test": f.test.tolist(), "pred": pred}))
            log(f"{v.name} {f.name}: accuracy {np.mean(np.array(pred) == corpus.clips.languages[f.test]):.3f}")
        out[f.name] = json.loads(path.read_text())
    return out


def load_corpus(model, manifest: str | Path, cache: str | Path, synthetic: str | Path | None = None,
                augmented: bool = True, progress: Callable[[str, int, int], None] | None = None) -> Corpus:
    """The clips of ``manifest`` (and of a ``synthetic`` corpus's manifest) with their posterior means, and with
    ``augmented`` a copy of the train clips through ``CHANNEL_AUGMENT``; every encoding cached under CACHE."""
    cache, manifest = Path(cache), Path(manifest)

    def tick(what):
        return None if progress is None else lambda i, n: progress(what, i, n)

    entries = language_entries(manifest)
    clips = Clips(entries, cached_means(model, entries, manifest.parent, cache / "means_clean.safetensors",
                                        progress=tick("clean")))
    train = [i for i, e in enumerate(entries) if e.split == "train"]
    aug = {}
    if augmented:
        copies = cached_means(model, [entries[i] for i in train], manifest.parent, cache / "means_aug1.safetensors",
                              CHANNEL_AUGMENT, seed=1, progress=tick("augmented"))
        aug = dict(zip(train, copies, strict=True))
    synth = None
    if synthetic is not None:
        s = [e for e in language_entries(synthetic) if e.split == "train"]
        synth = Clips(s, cached_means(model, s, Path(synthetic).parent, cache / "means_synthetic.safetensors",
                                      progress=tick("synthetic")))
    return Corpus(clips, aug, synth)


def summarize(clips: Clips, preds: dict[str, dict]) -> tuple[dict, list[dict]]:
    """Headline figures of one variant's fold predictions (``run_variant``): ``loso`` (mean over languages of
    each language's mean accuracy over its held-out families), ``loso_pooled`` (over clips), ``unseen`` (the
    unseen split's known languages), and a row per held-out (language, family)."""
    lang, fam = clips.languages, clips.families
    rows, per_lang, hits = [], {}, []
    for name, p in sorted(preds.items()):
        idx, pred = np.array(p["test"], int), np.array(p["pred"])
        for lg in sorted(set(lang[idx].tolist())):
            for f in sorted(set(fam[idx].tolist())):
                cell = (lang[idx] == lg) & (fam[idx] == f)
                if not cell.any():
                    continue
                acc = float(np.mean(pred[cell] == lg))
                rows.append({"fold": name, "language": lg, "family": f, "clips": int(cell.sum()), "accuracy": acc})
                if name != "unseen":
                    per_lang.setdefault(lg, []).append(acc)
        if name != "unseen":
            hits += (pred == lang[idx]).tolist()
    unseen = preds.get("unseen")
    head = {"loso": float(np.mean([np.mean(v) for v in per_lang.values()])), "loso_pooled": float(np.mean(hits)),
            "languages": len(per_lang), "clips": len(hits)}
    if unseen is not None:
        head["unseen"] = float(np.mean(np.array(unseen["pred"]) == lang[np.array(unseen["test"], int)]))
    return head, rows


def write_report(clips: Clips, results: dict[str, dict], out: Path) -> dict:
    """OUT/language_loso.{md,csv} (a row per variant), OUT/language_loso_cells.{md,csv} (per held-out language
    and family, per variant) and OUT/language_loso.png (the confusion matrix of the best variant's LOSO
    predictions, pooled over folds)."""
    heads, cells = {}, []
    for name, preds in results.items():
        heads[name], rows = summarize(clips, preds)
        cells += [{"variant": name} | r for r in rows]
    table = [{"variant": n} | h for n, h in heads.items()]
    csv_, md = write_table(table, out, "language_loso", "Spoken language across sources: leave-one-source-out "
                           "(loso: mean over languages; loso_pooled: over clips) and the unseen split")
    write_table(cells, out, "language_loso_cells", "Accuracy per held-out language and family")
    best = max(heads, key=lambda n: heads[n]["loso"])
    idx = np.concatenate([np.array(p["test"], int) for k, p in results[best].items() if k != "unseen"])
    pred = [x for k, p in results[best].items() if k != "unseen" for x in p["pred"]]
    png = plot_confusion(evaluate(clips.languages[idx].tolist(), pred), out / "language_loso.png",
                         f"{best}, leave-one-source-out")
    return {"md": md, "csv": csv_, "png": png, "best": best}


def fit_shipped(model, v: Variant, corpus: Corpus, out: Path, data: str, model_ref: str) -> Classifier:
    """Fit recipe ``v`` on every train clip and save it to OUT as a classifier folder (``classify predict``)."""
    meta = {"features": "vae", "label": "language", "data": data} | model_meta(model, model_ref, LEARNED)
    clf = fit_probe(model, v, corpus, unseen_fold(corpus.clips)[0].train, meta)
    clf.save(out)
    return clf
