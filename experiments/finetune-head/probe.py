"""The learned head fine-tuned with the labels (`classify fit --finetune`) against the probe on the frozen head,
on `audiovae bench classify`'s tasks and clips, at k labels per class (k = 0: all labels), on the valid or the
test split, with the same draws for both.

PYTHONPATH=src .venv/bin/python experiments/finetune-head/probe.py instrument-family --k 0 --k 5 --draws 3
"""

import argparse
import warnings
from pathlib import Path

import torch

from audiovae import classify as cl
from audiovae.bench import classify as bt
from audiovae.registry import load
from audiovae.train.head import FinetuneConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tasks", nargs="+", choices=[t.name for t in bt.TASKS])
    ap.add_argument("--corpora", type=Path, default=Path("corpora"))
    ap.add_argument("--split", choices=("valid", "test"), default="valid")
    ap.add_argument("--k", type=int, action="append", help="labels per class, 0 for all (repeat; default 0)")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    ks = tuple(k or None for k in args.k or [0])
    for name in args.tasks:
        task = next(t for t in bt.TASKS if t.name == name)
        model = load(task.model)
        feats, _ = bt.task_features(task, args.corpora, model, (cl.LEARNED,), means=True)
        feats["test"] = feats[args.split]
        key = f"vae:{cl.LEARNED}"
        tuned = bt.finetune_rows(name, feats, model, FinetuneConfig(steps=args.steps, seed=args.seed), ks,
                                 args.draws)
        for k, row in zip(ks, tuned, strict=True):
            frozen = cl.few_label_eval(feats["train"][0][key], feats["train"][1], feats["test"][0][key],
                                       feats["test"][1], k, args.draws)
            print(f"{name} {args.split} k={row['k']}: fine-tuned {row['accuracy_mean']:.3f} (macro-F1 "
                  f"{row['macro_f1_mean']:.3f}), frozen head {frozen['accuracy_mean']:.3f} "
                  f"({frozen['macro_f1_mean']:.3f}); {row['draws']} draw(s)", flush=True)


if __name__ == "__main__":
    main()
