"""Intermediate encoder layers as embeddings: mean and std over time of each layer's activations (the input
projection, every ConvNeXt block, the final norm), against the posterior poolings and MFCC, on the valid split
of `audiovae bench classify`'s tasks (same clips, probes and draws: accuracy at 5 labels per class and with
all labels).

PYTHONPATH=src .venv/bin/python experiments/encoder-layers/probe.py instrument-family source-type language
"""

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from audiovae import classify as cl
from audiovae.bench import classify as bt
from audiovae.inference import to_model_rate
from audiovae.models.blocks import compressed, log_magnitude
from audiovae.registry import load


def layer_stats(model, wave: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
    """{layer: mean and std over time of its activations, averaged over channels}."""
    enc = model.encoder
    with torch.no_grad():
        spec, _ = enc.stft(to_model_rate(model, wave, sample_rate))
        h = enc.proj(torch.cat([log_magnitude(spec), compressed(spec)], dim=1))
        layers = {"proj": h}
        for i, block in enumerate(enc.stack.blocks):
            h, _ = block(h)
            layers[f"block{i}"] = h
        layers["norm"] = enc.stack.norm(h.transpose(1, 2)).transpose(1, 2)
    return {k: torch.cat([v.mean(-1), v.std(-1)], -1).mean(0).numpy() for k, v in layers.items()}


def features(model, items: list[cl.Item], classes: list[str], cap: int) -> tuple[dict, np.ndarray]:
    """Layer statistics and the learned / hand-made poolings and MFCC of a task split's clips, with labels."""
    subset = cl.balanced_subset([it for it in items if it.label in classes], cap)
    rows: dict[str, list] = {}
    for it in subset:
        x, sr = it.load()
        got = layer_stats(model, x, sr) | cl.embed_many(model, x, sr, (cl.LEARNED, cl.DEFAULT_POOLING))
        got["mfcc"] = cl.mfcc_features(x, sr)
        for k, v in got.items():
            rows.setdefault(k, []).append(v)
    return {k: np.stack(v) for k, v in rows.items()}, np.array([it.label for it in subset])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tasks", nargs="+", choices=[t.name for t in bt.TASKS])
    ap.add_argument("--corpora", type=Path, default=Path("corpora"))
    ap.add_argument("--draws", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in args.tasks:
        task = next(t for t in bt.TASKS if t.name == name)
        model = load(task.model)
        items, classes = bt.task_classes(task, args.corpora)
        (x_tr, y_tr), (x_va, y_va) = (features(model, items[s], classes, cap) for s, cap in (("train", 100),
                                                                                           ("valid", 50)))
        for key in x_tr:
            five, every = (cl.few_label_eval(x_tr[key], y_tr, x_va[key], y_va, k=k, draws=args.draws)
                           for k in (5, None))
            print(f"{name} valid {key:12s} dim {x_tr[key].shape[1]:4d}  k=5 {five['accuracy_mean']:.3f}  "
                  f"all {every['accuracy_mean']:.3f}", flush=True)


if __name__ == "__main__":
    main()
