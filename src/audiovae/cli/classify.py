"""``embed`` and ``classify fit / predict / eval / suggest``."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import typer

from audiovae.cli.common import app, classify_app, console, output, refuse_existing, say, warn
from audiovae.cli.progress import bars
from audiovae.errors import AudioVAEError, shown


def _embed_with_progress(items, kind: str, model, what: str, skip_errors: bool = True, pooling: str | None = None,
                         embedder=None):
    """``classify.embed_items`` under a bar named ``what``; each skipped file is a warning."""
    from audiovae.classify import embed_items

    with bars() as b, b.task(what) as progress:
        out = embed_items(items, kind, model, progress, skip_errors=skip_errors, pooling=pooling, embedder=embedder)
    for msg in out[2]:
        warn(f"skipped {msg}")
    return out


def _audio_items(paths: list[Path]) -> list:
    from audiovae import audio
    from audiovae.classify import Item

    items = [Item(f) for p in paths for f in audio.find_audio_files(p)]
    if not items:
        raise AudioVAEError(f"no audio files in {', '.join(map(str, paths))}")
    return items


@app.command()
def embed(
    files: list[Path] = typer.Argument(..., help="Audio files and/or folders (walked recursively)."),
    out: Path = typer.Option(..., "--out", help="The .npz to write (arrays: paths, embeddings)."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder."),
    pooling: str = typer.Option(None, "--pooling", help="Statistics over time of the posterior: mean-std, "
                                "mean-std-sigma, quantiles, mean-std-max or all, or learned (the model's embedding "
                                "head, `audiovae train-embedder`). Default: learned where the model has a head (the "
                                "shipped models do), else all: the best on the classification bench."),
) -> None:
    """Embed audio files: statistics over time of the VAE posterior (or its learned head), one row per file."""
    import numpy as np

    from audiovae import classify as cl
    from audiovae.files import replaced
    from audiovae.registry import load

    if pooling is not None:
        cl.check_pooling(pooling)
    if not out.parent.is_dir():
        raise AudioVAEError(f"{out}: folder {out.parent} does not exist")
    items = _audio_items(files)
    refuse_existing(out, True, *(it.path for it in items))
    m = load(model)
    pooling = pooling or cl.best_pooling(m)
    x, kept, failed = _embed_with_progress(items, "vae", m, f"embedding with {m.name}", pooling=pooling)
    if not kept:
        raise AudioVAEError(f"none of the {len(items)} files could be embedded")
    with replaced(out) as tmp, tmp.open("wb") as f:
        np.savez(f, paths=np.array([str(items[i].path) for i in kept]), embeddings=x)
    say(f"wrote {len(kept)} embeddings ({x.shape[1]} dims, {pooling} pooling) to {out}; {len(failed)} file(s) "
        "skipped")


def _classifier_model(clf, folder: Path, model: str | None):
    """The model a classifier's features need (None for MFCC), checked against the classifier: ``--model``, else
    the shipped model the classifier names. A path in a classifier file is never opened."""
    from audiovae.registry import list_models, load, load_shipped

    if clf.meta["features"] != "vae":
        return None
    if model is None and clf.meta.get("model") not in list_models():
        raise AudioVAEError(f"{folder}: classifier was fitted on a model folder (model "
                            f"{shown(clf.meta.get('model_name'))}, encoder {shown(clf.meta.get('encoder_sha256'), 20)}"
                            "), not a shipped model: give that folder with --model FOLDER")
    m = load(model) if model is not None else load_shipped(clf.meta["model"])
    clf.check_model(m, folder)  # same embedding dimension and encoder (the decoder may differ)
    return m


@classify_app.command("fit")
def classify_fit(
    data: Path = typer.Option(..., "--data", help="A manifest (its train split is used) or a folder of class folders."),
    label: str = typer.Option(..., "--label", help="Manifest label key, or parent-dir for a folder."),
    out: Path = typer.Option(..., "--out", help="Folder for classifier.json + classifier.npz."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (for --features vae)."),
    features: str = typer.Option("vae", "--features", help="vae (posterior embeddings) or mfcc (baseline)."),
    pooling: str = typer.Option(None, "--pooling", help="VAE pooling (default: the one `embed` uses for the model)."),
    estimator: list[str] = typer.Option(None, "--estimator", help="Candidates for cross-validation: logreg, svm, "
                                        "knn (repeat; default: all three). A kNN stores its training set."),
    max_per_class: int = typer.Option(None, "--max-per-class", min=2, help="Use at most this many clips per class."),
    finetune: int = typer.Option(0, "--finetune", min=0, metavar="STEPS", help="First fine-tune the model's learned "
                                 "head with the labels for this many steps (the probe then uses its embeddings; "
                                 "stored in OUT/head.safetensors). Pays off with many labels per class."),
    accelerator: str = typer.Option("cpu", "--accelerator", help="Lightning accelerator for --finetune."),
) -> None:
    """Fit a probe (scaler + logistic regression / linear SVM / kNN, chosen by 5-fold cross-validation)."""
    import numpy as np

    from audiovae import classify as cl
    from audiovae.config import to_dict
    from audiovae.registry import load
    from audiovae.train.head import FinetuneConfig, finetuned_embeddings

    if features not in cl.FEATURE_KINDS:
        raise AudioVAEError(f"unknown --features '{features}' (use {' or '.join(cl.FEATURE_KINDS)})")
    if finetune and (features != "vae" or pooling not in (None, cl.LEARNED)):
        raise AudioVAEError("--finetune fine-tunes the learned head: use it with --features vae and --pooling learned")
    pooling = cl.LEARNED if finetune else pooling
    if pooling is not None:
        cl.check_pooling(pooling)
    estimators = tuple(estimator or cl.ESTIMATORS)
    cl.check_estimators(estimators)
    items = cl.labelled_items(data, label, "train")
    if max_per_class is not None:
        items = cl.balanced_subset(items, max_per_class)
    m = load(model) if features == "vae" else None
    pooling = pooling or (cl.best_pooling(m) if m is not None else None)
    tune = FinetuneConfig(steps=finetune)
    if finetune:
        cl.check_pooling(pooling, m)
        means, kept, failed = _embed_with_progress(items, cl.MEANS, m, f"posteriors of {len(items)} clips")
        y = np.array([items[i].label for i in kept])
        cl.check_classes(y)
        head, x = finetuned_embeddings(m, means, y, tune, progress=output.level >= 0, accelerator=accelerator)
    else:
        x, kept, failed = _embed_with_progress(items, features, m, f"{features} features of {len(items)} clips",
                                               pooling=pooling)
        head = None
    meta = {"features": features, "label": label, "data": str(data), "train_clips": len(kept)}
    if m is not None:
        meta |= cl.model_meta(m, model, pooling) | ({"finetune": to_dict(tune)} if finetune else {})
    clf, cv = cl.fit(x, np.array([items[i].label for i in kept]), meta, estimators=estimators)
    clf.head = head
    clf.save(out)
    console.print(f"{len(clf.classes)} classes, {len(kept)} clips ({len(failed)} skipped): {cv['estimator']} "
                  f"{cv['params']}, cross-validated macro-F1 {cv['cv_macro_f1']:.3f}"
                  + (" (optimistic: the head was fine-tuned on these clips)" if finetune else "")
                  + f"; saved to {out}", soft_wrap=True)


def _write_csv(out: Path | None, rows: list[dict]) -> None:
    """``rows`` as CSV (a header of their keys) into ``out`` at once, or on stdout when ``out`` is None."""
    import csv

    from audiovae.files import write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        write_text(out, buf.getvalue())


@classify_app.command("predict")
def classify_predict(
    folder: Path = typer.Argument(..., help="A classifier folder written by `classify fit`, or a shipped "
                                            "classifier's name (speech16k-language)."),
    files: list[Path] = typer.Argument(..., help="Audio files and/or folders."),
    out: Path | None = typer.Option(None, "--out", help="Write .csv or .json here (default: CSV on stdout)."),
    model: str | None = typer.Option(None, "--model", help="Model name or folder (default: the shipped model "
                                      "the classifier was fitted on; one fitted on a folder needs it)."),
) -> None:
    """Label and probability per file."""
    import json

    from audiovae import classify as cl
    from audiovae.files import write_text

    clf = cl.Classifier.load(folder)
    m = _classifier_model(clf, folder, model)
    items = _audio_items(files)
    if out is not None:
        refuse_existing(out, True, *(it.path for it in items))
    x, _, _ = _embed_with_progress(items, clf.meta["features"], m, "classifying", skip_errors=False,
                                   pooling=clf.pooling, embedder=clf.head)
    proba = clf.predict_proba(x)
    rows = [{"path": str(it.path), "label": clf.classes[p.argmax()], "probability": round(float(p.max()), 4)}
            for it, p in zip(items, proba, strict=True)]
    if out is not None and out.suffix == ".json":
        write_text(out, json.dumps(rows, indent=2) + "\n")
    else:
        _write_csv(out, rows)
    if out is not None:
        say(f"wrote {len(rows)} predictions to {out}")


@classify_app.command("eval")
def classify_eval(
    folder: Path = typer.Argument(..., help="A classifier folder written by `classify fit`, or a shipped "
                                            "classifier's name (speech16k-language)."),
    data_arg: Path | None = typer.Argument(None, metavar="DATA", help="A folder of class folders (labels from "
                                           "folder names) or a manifest; or --data."),
    data: Path | None = typer.Option(None, "--data", help="The same as DATA."),
    label: str | None = typer.Option(None, "--label", help="parent-dir (a folder's labels: its class folders' "
                                     "names) or a manifest label key; default: parent-dir for a folder, else the "
                                     "classifier's key."),
    split: str = typer.Option("test", "--split", help="Manifest split to evaluate."),
    model: str | None = typer.Option(None, "--model", help="Model name or folder (default: the shipped model "
                                      "the classifier was fitted on; one fitted on a folder needs it)."),
    plot: Path | None = typer.Option(None, "--plot", help="Confusion matrix PNG (default: FOLDER/confusion_SPLIT.png, "
                                     "or confusion_DATA.png for a folder; none for a shipped classifier)."),
) -> None:
    """Accuracy, macro-F1, recall per class and the most frequent confusions on labelled data. Clips whose label
    the classifier does not know are left out and counted."""
    from audiovae import classify as cl

    if (data is None) == (data_arg is None):
        raise AudioVAEError("give the labelled data once: DATA or --data")
    data = data or data_arg
    clf = cl.Classifier.load(folder)
    m = _classifier_model(clf, folder, model)
    items, unknown = clf.known(cl.labelled_items(data, label or (cl.PARENT_DIR if data.is_dir() else
                                                                 clf.meta["label"]), split))
    other = ", ".join(f"{k} ({n})" for k, n in sorted(unknown.items()))
    if not items:
        raise AudioVAEError(f"{data}: none of its labels ({other}) is a class of the classifier "
                            f"({', '.join(clf.classes)})")
    what = data.name if data.is_dir() else split
    x, kept, failed = _embed_with_progress(items, clf.meta["features"], m, f"evaluating on {what}",
                                           pooling=clf.pooling, embedder=clf.head)
    if not kept:
        raise AudioVAEError(f"{data}: none of the {len(items)} clips could be read")
    result = cl.evaluate([items[i].label for i in kept], clf.predict(x))
    console.print(f"{what}: {len(kept)} clips ({len(failed)} skipped), accuracy {result['accuracy']:.3f}, "
                  f"macro-F1 {result['macro_f1']:.3f}", soft_wrap=True, highlight=False)
    width = max(len(row["label"]) for row in result["per_class"])
    for row in result["per_class"]:
        taken = f", most often taken for {row['taken_for']} ({row['taken']})" if row["taken_for"] else ""
        console.print(f"  {row['label']:<{width}}  recall {row['recall']:.3f} of {row['clips']}{taken}",
                      soft_wrap=True, highlight=False, markup=False)
    if result["confusions"]:
        console.print("most frequent confusions (true -> predicted): " + ", ".join(
            f"{t} -> {p} ({n})" for t, p, n in result["confusions"][:5]), soft_wrap=True, highlight=False,
                      markup=False)
    if unknown:
        console.print(f"left out {sum(unknown.values())} clip(s) with labels the classifier does not know: {other}",
                      soft_wrap=True, highlight=False, markup=False)
    if plot is None and Path(folder).is_dir():
        plot = folder / f"confusion_{what}.png"
    if plot is not None:
        console.print(f"confusion matrix: {cl.plot_confusion(result, plot, f'{folder.name} on {what}')}",
                      soft_wrap=True, highlight=False)


@classify_app.command("suggest")
def classify_suggest(
    files: list[Path] = typer.Argument(..., help="Unlabelled audio files and/or folders, or one .npz written by "
                                       "`audiovae embed`."),
    n: int = typer.Option(..., "--n", min=1, help="How many clips to suggest."),
    out: Path | None = typer.Option(None, "--out", help="Write the CSV here (default: stdout)."),
    model: str = typer.Option("speech16k", "--model", help="Model name or folder (for audio files)."),
    pooling: str = typer.Option(None, "--pooling", help="VAE pooling (default: learned where the model has a head, "
                                "else the one `embed` uses)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the clustering."),
) -> None:
    """The clips to label first: one typical clip per cluster of the embeddings (TypiClust), largest first."""
    import zipfile

    import numpy as np

    from audiovae import classify as cl
    from audiovae.registry import load

    if out is not None:
        refuse_existing(out, True, *files)
    if len(files) == 1 and files[0].suffix == ".npz":
        try:
            with open(files[0], "rb") as fh, np.load(fh, allow_pickle=False) as f:  # fh: closed on a bad zip too
                paths, x = f["paths"].astype(str), f["embeddings"].astype(np.float32)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:  # TypeError: a .npy
            raise AudioVAEError(f"{files[0]}: not an `audiovae embed` file ({e})") from None
        if x.ndim != 2 or paths.shape != (len(x),):
            raise AudioVAEError(f"{files[0]}: embeddings {x.shape} do not match paths {paths.shape}")
    else:
        m = load(model)
        pooling = pooling or cl.best_pooling(m)
        cl.check_pooling(pooling, m)
        items = _audio_items(files)
        x, kept, _ = _embed_with_progress(items, "vae", m, f"embedding with {m.name}", pooling=pooling)
        paths = [str(items[i].path) for i in kept]
    picks, sizes = cl.suggest(x, n, seed)
    _write_csv(out, [{"rank": r, "path": paths[i], "cluster_size": int(s)}
                     for r, (i, s) in enumerate(zip(picks, sizes, strict=True), 1)])
    if out is not None:
        say(f"wrote {len(picks)} suggestions out of {len(paths)} clips to {out}")
