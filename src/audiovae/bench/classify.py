"""The classification benchmark (``audiovae bench classify``, ``run``): tasks over the corpora, their clips'
features, and the tables and floors of few-label accuracy."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiovae.bench.measure import write_table
from audiovae.classify.embed import (
    LEARNED,
    MEANS,
    POOLINGS,
    ClassifyError,
    Item,
    balanced_subset,
    check_pooling,
    embed_items_multi,
    head_embedding,
    manifest_items,
    model_poolings,
)
from audiovae.classify.fewlabel import DRAWS, SEMI_METHODS, SUGGESTED, few_label_eval
from audiovae.data.manifest import UNSEEN
from audiovae.plots import save_figure
from audiovae.registry import load


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
    (train split) and the clips it is evaluated on (valid and test splits; by default the same parts). The
    test clips come from the manifests' ``test_split``; with ``within``, all three splits are cut from that
    split's clips by a hash of their source file (a probe fitted and tested on sources no model trained on)."""

    name: str
    model: str
    description: str
    train: tuple[Part, ...]
    eval_parts: tuple[Part, ...] = ()
    rate: int | None = None
    test_split: str = "test"
    within: bool = False
    min_train: int = 20  # clips a class needs in the train split to be kept


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
    Task("speaker-unseen", "speech16k", "speaker, the voices of the unseen split (OpenArena, 0 A.D. Meroitic and "
         "Persian, Warzone 2100 taunts): probes fitted on half of their files, tested on a quarter",
         (Part("speech16k", "speaker"),), test_split=UNSEEN, within=True, min_train=5),
    Task("source-type-unseen", "music24k", "music vs sound effects vs speech, trained on our sources, tested on "
         "the unseen split's (FreedroidRPG, Warzone 2100, OpenArena, 0 A.D. voices); 16 kHz sampling first",
         (Part("music24k", "kind"), Part("speech16k", None, fixed="speech")), rate=16000, test_split=UNSEEN),
    Task("instrument-family-unseen", "music24k", "instrument family, trained on our fluidsynth renders and sample "
         "packages, tested on the unseen split's FreePats renders (another synthesizer and instrument set)",
         (Part("music24k", "family"),), test_split=UNSEEN),
)
WITHIN = {0: "train", 1: "train", 2: "valid", 3: "test"}  # a within task's split by its file's hash, mod 4


def task_manifest(part: Part, corpora: Path) -> Path:
    manifest = Path(corpora) / part.corpus / "manifest.jsonl"
    if not manifest.exists():
        raise ClassifyError(f"{manifest}: corpus not built (audiovae data build {part.corpus})")
    return manifest


def task_items(task: Task, corpora: Path, split: str) -> list[Item]:
    parts = task.train if split == "train" or not task.eval_parts else task.eval_parts
    source_split = task.test_split if split == "test" or task.within else split
    items = []
    for part in parts:
        for it in manifest_items(task_manifest(part, corpora), part.label, source_split, part.source, part.fixed):
            it.rate = task.rate
            if not task.within or WITHIN[int(hashlib.sha1(str(it.path).encode()).hexdigest(), 16) % 4] == split:
                items.append(it)
    return items


def task_classes(task: Task, corpora: Path, min_train: int | None = None, min_test: int = 3
                 ) -> tuple[dict[str, list[Item]], list[str]]:
    """Each split's items of ``task`` and the classes it keeps: those with >= ``min_train`` (default: the
    task's) train and >= ``min_test`` test clips (an error when fewer than two)."""
    min_train = task.min_train if min_train is None else min_train
    items = {s: task_items(task, corpora, s) for s in ("train", "valid", "test")}
    n_tr, n_te = Counter(it.label for it in items["train"]), Counter(it.label for it in items["test"])
    classes = sorted(c for c in n_tr if n_tr[c] >= min_train and n_te[c] >= min_test)
    if len(classes) < 2:
        raise ClassifyError(f"task {task.name}: fewer than two classes with >= {min_train} train and "
                            f">= {min_test} test clips")
    return items, classes


def task_subsets(task: Task, corpora: Path, max_train: int = 100, max_eval: int = 50, min_train: int | None = None,
                 min_test: int = 3) -> tuple[dict[str, list[Item]], list[str]]:
    """The clips ``task_features`` embeds: up to ``max_train`` per kept class of the train split and ``max_eval``
    of valid and test, and the kept classes (``task_classes``)."""
    items, classes = task_classes(task, corpora, min_train, min_test)
    caps = {"train": max_train, "valid": max_eval, "test": max_eval}
    return {s: balanced_subset([it for it in items[s] if it.label in classes], cap) for s, cap in caps.items()}, classes


def task_features(task: Task, corpora: Path, model, poolings=tuple(POOLINGS), max_train: int = 100,
                  max_eval: int = 50, min_train: int | None = None, min_test: int = 3,
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
    (``train.head.finetuned_embeddings``); ``feats`` from ``task_features(..., means=True)``."""
    from audiovae.train.head import finetuned_embeddings  # the train extra (lightning)

    (x_tr, y_tr), (x_te, y_te) = feats["train"], feats["test"]

    def refit(chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        head, x = finetuned_embeddings(model, [x_tr[MEANS][i] for i in chosen], y_tr[chosen], cfg)
        return x, np.stack([head_embedding(head, mu) for mu in x_te[MEANS]])

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


def tasks_named(names) -> list[Task]:
    """The tasks called ``names`` (all of them when there are none); an error naming an unknown one."""
    known = {t.name: t for t in TASKS}
    bad = [n for n in names or [] if n not in known]
    if bad:
        raise ClassifyError(f"unknown task '{bad[0]}' (use {', '.join(known)})")
    return [known[n] for n in names] if names else list(TASKS)


def run(tasks: list[Task], corpora: Path, out: Path, overrides: dict[str, str] | None = None, pooling: str = "auto",
        max_train: int = 100, max_eval: int = 50, draws: int = DRAWS, semi_supervised: bool = True,
        finetune: int = 2000, progress: Callable[[str, int, int | None], None] | None = None) -> dict:
    """``audiovae bench classify``: embed each task's clips with its model (``overrides``: model name -> another
    name or folder), choose the pooling on valid (``auto``) and write the test tables, floors and plot:
    OUT/classify.{md,csv,png}, OUT/classify_long, OUT/classify_pooling_valid and OUT/classify_tasks (.md, .csv).
    Returns the chosen and compared poolings and the paths written (``md``, ``csv`` (the long table), ``plot``).
    ``progress(what, done, total)``; ``finetune``: steps of the fine-tuned head's probe (0: none)."""
    report = progress or (lambda what, done, total: None)
    if pooling != "auto":
        check_pooling(pooling)
    for t in tasks:
        for part in t.train + t.eval_parts:
            task_manifest(part, corpora)
    models = {name: load((overrides or {}).get(name, name)) for name in dict.fromkeys(t.model for t in tasks)}
    if pooling != "auto":
        for m in models.values():
            check_pooling(pooling, m)
    feats, summaries, valid = {}, [], []
    for t in tasks:
        poolings = model_poolings(models[t.model])
        feats[t.name], summary = task_features(t, corpora, models[t.model], poolings, max_train=max_train,
                                               max_eval=max_eval, means=bool(finetune) and LEARNED in poolings,
                                               progress=report)
        summaries.append(summary)
        report(f"{t.name}: poolings on valid", 0, None)
        valid += pooling_rows(t.name, feats[t.name], draws)
    chosen = choose_pooling(valid) if pooling == "auto" else pooling
    compared = compared_pooling(valid, chosen)
    rows = []
    for t in tasks:
        report(f"{t.name}: test", 0, None)
        rows += test_rows(t.name, feats[t.name], chosen, draws=draws,
                          methods=(*SEMI_METHODS, SUGGESTED) if semi_supervised else (), compared=compared)
        if MEANS in feats[t.name]["train"][0]:
            from audiovae.train.head import FinetuneConfig  # the train extra (lightning)

            report(f"{t.name}: fine-tuning the head", 0, None)
            rows += finetune_rows(t.name, feats[t.name], models[t.model], FinetuneConfig(steps=finetune))
    write_table(summaries, out, "classify_tasks", "Classification tasks (clips embedded per split)")
    write_table(valid, out, "classify_pooling_valid", "Poolings on the valid split (accuracy, macro-F1)")
    csv_path, _ = write_table(rows, out, "classify_long", "Few-label classification, test split")
    title = (f"Test accuracy / macro-F1 at k labels per class (k=all: <= {max_train} per class); VAE pooling "
             f"'{chosen}'" + (f" (and '{compared}': vae:{compared})" if compared else "") + f"; {draws} draws")
    _, md = write_table(wide_table(rows), out, "classify", title)
    fails = floors(rows)
    with md.open("a") as f:
        f.write("\nFloors not met:\n" + "".join(f"- {x}\n" for x in fails) if fails else "\nAll floors met.\n")
    plot = plot_few_label(rows, out / "classify.png", all_at=max_train)
    return {"chosen": chosen, "compared": compared, "md": md, "csv": csv_path, "plot": plot}
