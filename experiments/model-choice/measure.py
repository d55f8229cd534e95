"""The music-or-speech check of ``compress`` (src/audiovae/codec/content.py): fits its logistic regression on train
clips of the shipped corpora (800 of each, music kind only) and measures the package's ``music_probability`` on
the unseen split (and on the test split, music cut to 1.5 s, and unseen speech clips joined into longer files).

    PYTHONPATH=src .venv/bin/python experiments/model-choice/measure.py [--fit]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from audiovae import audio
from audiovae.codec import content

CORPORA = Path("corpora")


def clips(corpus: str, split: str, kind: str | None = None, limit: int | None = None) -> list[tuple[np.ndarray, int]]:
    """(mono wave, rate) of a split's clips (of one label kind), at most ``limit`` of them, spread at random."""
    manifest = CORPORA / corpus / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.open()]
    rows = [r for r in rows if r["split"] == split and kind in (None, r["labels"].get("kind"))]
    if limit and len(rows) > limit:
        rows = [rows[i] for i in sorted(np.random.default_rng(0).choice(len(rows), limit, replace=False))]
    return [audio.load(manifest.parent / r["path"], mono=True, offset=r["offset"], duration=r["duration"])
            for r in rows]


def fit() -> None:
    """Print the standardization and weights to paste into content.py."""
    from sklearn.linear_model import LogisticRegression

    def feats(waves):
        return np.array([content.features(audio.resample(x[:, : round(content.SECONDS * sr)], sr, content.RATE)[0])
                         for x, sr in waves])

    speech, music = feats(clips("speech16k", "train", limit=800)), feats(clips("music24k", "train", "music", 800))
    x = np.concatenate([speech, music])
    y = np.r_[np.zeros(len(speech)), np.ones(len(music))]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    clf = LogisticRegression().fit((x - mean) / scale, y)
    print(f"_MEAN = {mean.round(4).tolist()}\n_SCALE = {scale.round(4).tolist()}\n"
          f"_WEIGHTS = {clf.coef_[0].round(4).tolist()}\n_BIAS = {clf.intercept_[0]:.4f}")


def measure() -> None:
    """The share of each set called music, at three thresholds."""
    sets = {
        "unseen speech": clips("speech16k", "unseen"),
        "unseen music": clips("music24k", "unseen", "music"),
        "unseen sfx": clips("music24k", "unseen", "sfx"),
        "test speech": clips("speech16k", "test"),
        "test music": clips("music24k", "test", "music"),
    }
    sets["unseen music, first 1.5 s"] = [(x[:, : round(1.5 * sr)], sr) for x, sr in sets["unseen music"]]
    speech = sets["unseen speech"]
    sets["unseen speech, 7 clips joined"] = [(np.concatenate([x for x, _ in speech[i : i + 7]], axis=1), speech[i][1])
                                            for i in range(0, len(speech) - 6, 7)]
    print("| set | clips | called music at p >= 0.5 | 0.7 | 0.9 |\n|---|---:|---:|---:|---:|")
    for name, waves in sets.items():
        p = np.array([content.music_probability(x, sr) for x, sr in waves])
        print(f"| {name} | {len(p)} | " + " | ".join(f"{np.mean(p >= t):.3f}" for t in (0.5, 0.7, 0.9)) + " |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="fit the weights instead of measuring the shipped ones")
    fit() if ap.parse_args().fit else measure()
