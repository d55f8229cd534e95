"""Family (or language) recognition of generated clips under sampling settings of a shipped prior: guidance (also
within a range of flow times only), the weight of its label guide (classifier guidance), a style scale (the
style's deviation from its label's mean, multiplied by s; s = 1 is what the prior samples), the best of K
candidates by a second probe, the temperature, the number of flow steps, and an ensemble of label guides.

Same requests, seeds and probes as `audiovae bench generate` (8 clips of 3 s per label, probes fitted on up to
100 real train clips per label): python experiments/prior-sampling/sweep.py music24k corpora/music24k/manifest.jsonl
--guidance 3 --guidance 5 --style-scale 1 --style-scale 0.5 --out runs/eval/sweep.csv
"""

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np
import torch

from audiovae.bench.generate import fit_probes, labelled_entries, load_clips, progress_each
from audiovae.classify import embed
from audiovae.generate import Generator
from audiovae.inference import reconstruct
from audiovae.registry import load, load_prior


def guided_within(prior, forward, lo: float, hi: float):
    """``forward`` of a prior whose guided calls (labels, then as many null labels) answer the conditional
    velocity for both halves outside flow times [lo, hi): guidance 1 there."""
    def guided(x, t, labels, mask=None, style=None):
        v = forward(x, t, labels, mask, style)
        b = labels.shape[0] // 2
        if b and bool((labels[b:] == prior.null_label).all()) and not lo <= float(t[0]) < hi:
            v = torch.cat([v[:b], v[:b]])
        return v
    return guided


class Ensemble(torch.nn.Module):
    """Label guides acting as one: the mean of their log-probabilities."""

    def __init__(self, guides):
        super().__init__()
        self.guides = torch.nn.ModuleList(guides)

    def forward(self, x, t, mask=None):
        return torch.stack([torch.log_softmax(g(x, t, mask), -1) for g in self.guides]).mean(0)


def guide_agreement(gen: Generator, made: list[np.ndarray], asked: np.ndarray, frames: list[torch.Tensor]) -> dict:
    """How often the prior's guide names the requested label on the sampled frames at flow time 1, and on the
    frames of the decoded clips encoded again."""
    def named(x):
        with torch.no_grad():
            return gen.labels[int(gen.prior.guide(x, torch.ones(1)).argmax())]
    return {"guide_on_frames": float(np.mean([named(x) for x in frames] == asked)),
            "guide_on_reencoded": float(np.mean([named(gen.encode(c, gen.sample_rate)) for c in made] == asked))}


def best(gen: Generator, ranker, label: str, seeds: list[int], guidance: float | None,
         classifier_guidance: float | None, temperature: float) -> tuple[np.ndarray, torch.Tensor]:
    """(clip, its frames): the candidate (one per seed) to which ``ranker`` gives the highest probability of
    ``label``."""
    frames = [gen._sample(gen.frames(3.0), label, None, temperature, guidance, seed, classifier_guidance)
              for seed in seeds]
    made = [gen.decode(x) for x in frames]
    if ranker is None:
        return made[0], frames[0]
    column = list(ranker.classes_).index(label)
    probs = ranker.predict_proba(np.stack([embed(gen.model, c, gen.sample_rate) for c in made]))[:, column]
    k = int(np.argmax(probs))
    return made[k], frames[k]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--guidance", type=float, action="append")
    ap.add_argument("--style-scale", type=float, action="append")
    ap.add_argument("--classifier-guidance", type=float, action="append",
                    help="weight of the prior's label guide (default: the prior's)")
    ap.add_argument("--steps", type=int, action="append", help="Euler steps of the flow (default: the prior's)")
    ap.add_argument("--temperature", type=float, action="append", help="scale of the initial noise (default 1)")
    ap.add_argument("--per-label", type=int, default=8)
    ap.add_argument("--seed", type=int, action="append", help="seed of the first request (default: the bench's, "
                    "1000); another draws new samples for the same requests, a check that a lead is not the seeds'")
    ap.add_argument("--reconstructions", action="store_true",
                    help="also score real test clips (20 per label, as the bench) and their reconstructions")
    ap.add_argument("--rerank", type=int, default=1,
                    help="keep the best of K candidates per request by a probe on the `all` pooling (not the "
                    "recognizer's learned head)")
    ap.add_argument("--interval", type=float, nargs=2, action="append", metavar=("LO", "HI"),
                    help="apply the guidance only at flow times LO <= t < HI (plain conditional elsewhere)")
    ap.add_argument("--extra-guide", action="append", default=[], metavar="MODEL",
                    help="guide with the mean log-probability of the prior's guide and that of MODEL's prior")
    ap.add_argument("--guide-agreement", action="store_true",
                    help="also report how often the guide names the requested label on the sampled frames (flow "
                    "time 1) and on the decoded clips encoded again")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = Generator(args.model)
    if args.extra_guide:
        gen.prior.guide = Ensemble([gen.prior.guide] + [load_prior(load(m))[0].guide for m in args.extra_guide])
    each = progress_each(None)
    probes, _, _ = fit_probes(gen.model, args.manifest, gen.label_key, gen.labels, each, ("vae", "mfcc"))
    requests = [(lab, j) for lab in gen.labels for j in range(args.per_label)]
    asked = np.array([r[0] for r in requests])
    root = gen.prior.style_scale.clone() if gen.prior.config.style else None
    ranker = None
    if args.rerank > 1:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        train = labelled_entries(args.manifest, "train", gen.label_key, gen.labels, 100)
        clips = load_clips(train, args.manifest.parent, gen.sample_rate)
        x = np.stack([embed(gen.model, c, gen.sample_rate) for c in clips])
        ranker = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)).fit(
            x, [str(e.labels[gen.label_key]) for e in train])
    rows = []
    if args.reconstructions:
        test = labelled_entries(args.manifest, "test", gen.label_key, gen.labels, 20)
        real = load_clips(test, args.manifest.parent, gen.sample_rate)
        truth = np.array([str(e.labels[gen.label_key]) for e in test])
        recon = [reconstruct(gen.model, x, gen.sample_rate) for x in real]
        for name, clips in (("real test", real), ("reconstructions", recon)):
            row = {"guidance": name, "style_scale": ""}
            for kind, (clf, featurize) in probes.items():
                row[f"recognized_{kind}"] = float(np.mean(np.asarray(clf.predict(featurize("", clips))) == truth))
            print(row, flush=True)
            rows.append(row)
    forward = gen.prior.forward
    steps = gen.prior.config.steps
    for seed, g, s, span, w, temp, n in itertools.product(args.seed or [1000], args.guidance or [None],
                                                          args.style_scale or [1.0], args.interval or [None],
                                                          args.classifier_guidance or [None], args.temperature or [1.0],
                                                          args.steps or [steps]):
        gen.prior.config.steps = n
        if root is not None:
            gen.prior.style_scale.copy_(root * s)
        gen.prior.forward = forward if span is None else guided_within(gen.prior, forward, *span)
        picked = [best(gen, ranker, lab, [seed + i + 100_000 * j for j in range(args.rerank)], g, w, temp)
                  for i, (lab, _) in enumerate(requests)]
        made, frames = [c for c, _ in picked], [x for _, x in picked]
        row = {"seed": seed, "guidance": g if g is not None else gen.prior.config.guidance, "style_scale": s,
               "classifier_guidance": w if w is not None else gen.prior.config.classifier_guidance,
               "temperature": temp, "steps": n, "rerank": args.rerank,
               "interval": "" if span is None else f"{span[0]:g}-{span[1]:g}"}
        for kind, (clf, featurize) in probes.items():
            row[f"recognized_{kind}"] = float(np.mean(np.asarray(clf.predict(featurize("", made))) == asked))
        if args.guide_agreement:
            row.update(guide_agreement(gen, made, asked, frames))
        print(row, flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
