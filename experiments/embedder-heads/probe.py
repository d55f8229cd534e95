"""Embedding heads compared on `audiovae bench classify`'s tasks and clips: the model's shipped head and heads of
`audiovae train-embedder` runs (their last checkpoints, rounded to fp16 as `--export` stores them), probed at k
labels per class (k = 0: all labels) on the valid or the test split, with the same draws for every head.

PYTHONPATH=src .venv/bin/python experiments/embedder-heads/probe.py instrument-family \
    --run runs/music24k-embedder-speed --means runs/eval/means --k 1 --k 5 --k 20 --k 0

--means DIR caches each task's posterior means (TASK.npz: per split the clips' frames, lengths and labels), so
that comparing other heads later skips the VAE's encoder.

--by-group splits each accuracy by whether the test clip's sub-group (its soundfont preset, drum kit, sample
package instrument, speaker, or else its source package) is among the labelled train clips of its class: what
part of the gap between few labels and all labels is coverage of a class's sub-groups.
"""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from audiovae import classify as cl
from audiovae.bench import classify as bt
from audiovae.models.embedder import Embedder
from audiovae.registry import load, restore_state, stored_state
from audiovae.train.common import read_run_checkpoint
from audiovae.train.embedder import EmbedTrainConfig

SPLITS = ("train", "valid", "test")


def task_means(task: bt.Task, corpora: Path, model, cache: Path | None) -> dict[str, tuple[list, np.ndarray]]:
    """{split: (each clip's posterior means (channels, latent_dim, frames), labels)}, read from / written to
    ``cache`` (one segment per channel, ``owner`` its clip)."""
    path = None if cache is None else cache / f"{task.name}.npz"
    if path is not None and path.exists():
        d = np.load(path)
        out = {}
        for s in SPLITS:
            segments = np.split(d[f"{s}_mu"], np.cumsum(d[f"{s}_len"])[:-1], axis=1)
            owner = d[f"{s}_owner"]
            out[s] = ([np.stack([g for g, o in zip(segments, owner, strict=True) if o == i])
                       for i in range(len(d[f"{s}_y"]))], d[f"{s}_y"])
        return out
    feats, _ = bt.task_features(task, corpora, model, (cl.LEARNED,), means=True)
    out = {s: (feats[s][0][cl.MEANS], feats[s][1]) for s in SPLITS}
    if path is not None:
        arrays = {}
        for s, (mu, y) in out.items():
            arrays |= {f"{s}_mu": np.concatenate([c for m in mu for c in m], axis=1), f"{s}_y": y,
                       f"{s}_len": [m.shape[-1] for m in mu for _ in m],
                       f"{s}_owner": [i for i, m in enumerate(mu) for _ in m]}
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return out


def subgroup(entry: dict) -> str:
    """A manifest entry's sub-group within its class: preset, kit, speaker or instrument, else its source."""
    labels, source = entry["labels"], entry["source"]
    if "soundfont" in labels:
        return f"{labels['soundfont']}:{labels['program']}"
    if "kit" in labels:
        return f"kit:{labels['kit']}"
    for key in ("speaker", "instrument"):
        if key in labels:
            return f"{source}:{labels[key]}"
    return source


def task_subgroups(task: bt.Task, corpora: Path) -> dict[str, np.ndarray]:
    """{split: the sub-group of each clip that `task_means` holds, in its order}."""
    by_clip = {}
    for part in {*task.train, *task.eval_parts}:
        manifest = bt.task_manifest(part, corpora)
        for line in manifest.read_text().splitlines():
            e = json.loads(line)
            by_clip[(str(manifest.parent / e["path"]), round(e["offset"], 3))] = subgroup(e)
    subsets, _ = bt.task_subsets(task, corpora)
    return {s: np.array([by_clip[(str(it.path), round(it.offset, 3))] for it in subsets[s]]) for s in SPLITS}


def by_group(r: dict, y_train: np.ndarray, g_train: np.ndarray, y_test: np.ndarray, g_test: np.ndarray) -> str:
    """Share of test clips whose (class, sub-group) is labelled in a draw, and the accuracy on them and the rest."""
    hits = {True: [], False: []}
    for chosen, pred in zip(r["chosen"], r["predicted"], strict=True):
        seen = set(zip(y_train[chosen], g_train[chosen], strict=True))
        for covered, hit in zip([(c, g) in seen for c, g in zip(y_test, g_test, strict=True)], pred == y_test,
                                strict=True):
            hits[covered].append(hit)
    share = len(hits[True]) / (len(hits[True]) + len(hits[False]))
    acc = {c: f"{np.mean(h):.3f}" if h else "-" for c, h in hits.items()}
    return f" [sub-group labelled: {share:.2f} of clips, acc {acc[True]}; others {acc[False]}]"


def run_head(run: Path, model) -> Embedder:
    cfg, _, state, _, _ = read_run_checkpoint(run / "checkpoints" / "last.ckpt", "embedder", EmbedTrainConfig,
                                              model.name)
    head = Embedder(cfg.embedder)
    head.load_state_dict(state)
    return restore_state(Embedder(cfg.embedder), stored_state(head), str(run))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tasks", nargs="+", choices=[t.name for t in bt.TASKS])
    ap.add_argument("--run", type=Path, action="append", default=[],
                    help="train-embedder run folder of the tasks' model (repeat)")
    ap.add_argument("--corpora", type=Path, default=Path("corpora"))
    ap.add_argument("--means", type=Path, help="folder caching the tasks' posterior means")
    ap.add_argument("--split", choices=("valid", "test"), default="valid")
    ap.add_argument("--k", type=int, action="append", help="labels per class, 0 for all (repeat; default 0)")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--by-group", action="store_true", help="split accuracy by labelled / unlabelled sub-group")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    ks = tuple(k or None for k in args.k or [0])
    for name in args.tasks:
        task = next(t for t in bt.TASKS if t.name == name)
        model = load(task.model)
        means = task_means(task, args.corpora, model, args.means)
        groups = task_subgroups(task, args.corpora) if args.by_group else None
        y = {s: np.asarray(means[s][1]).astype(str) for s in ("train", args.split)}
        if groups is not None and any(len(groups[s]) != len(y[s]) for s in y):
            raise SystemExit(f"{name}: cached means of other clips than the task's ({args.means})")
        heads = {"shipped": cl.learned_embedder(model)}
        heads |= {str(run): run_head(run, model) for run in args.run}
        for label, head in heads.items():
            x = {s: np.stack([cl.head_embedding(head, m) for m in means[s][0]]) for s in ("train", args.split)}
            accs = [cl.few_label_eval(x["train"], y["train"], x[args.split], y[args.split], k, args.draws,
                                      keep=True) for k in ks]
            print(f"{name} {args.split} {label}: " + " | ".join(
                f"k={r['k']} {r['accuracy_mean']:.3f} (F1 {r['macro_f1_mean']:.3f})"
                + (by_group(r, y["train"], groups["train"], y[args.split], groups[args.split]) if groups else "")
                for r in accs), flush=True)


if __name__ == "__main__":
    main()
