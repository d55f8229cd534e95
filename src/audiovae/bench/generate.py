"""``audiovae bench generate``: how close generated clips come to real ones, and whether they carry the
requested label.

Fréchet distance (FD) between Gaussians fitted to clip features of held-out test clips and of: clips
sampled from the learned prior (labels and lengths of the test clips), latents drawn from the VAE's
N(0, I) prior, and real train clips (the floor). Features: our embeddings (classify.embed) and MFCC
statistics (classify.mfcc_features). Conditional accuracy: a probe fitted on real train embeddings (or on real
clips of another split: ``probe_split="unseen"``, sources no model trained on) names the label of clips generated
per label, next to its accuracy on real test clips; a probe on MFCC statistics does the same as a check that does
not depend on the model's own embedding.
"""

from __future__ import annotations

import base64
import html
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.linalg import sqrtm

from audiovae import audio
from audiovae.classify import DEFAULT_POOLING, best_pooling, embed, features, fit, mfcc_features
from audiovae.data.manifest import Entry, read_manifest, spread
from audiovae.errors import AudioVAEError
from audiovae.files import write_text
from audiovae.generate import Generator, transfer
from audiovae.inference import decode_frames, reconstruct
from audiovae.plots import save_spectrogram

MIN_SECONDS, MAX_CLIP_SECONDS = 0.5, 10.0


def frechet_gaussians(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))."""
    root = sqrtm(cov1 @ cov2)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * root))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """FD between Gaussians fitted to the rows of ``x`` and of ``y``."""
    return frechet_gaussians(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


def _features(model, clips: list[np.ndarray], sr: int) -> dict[str, np.ndarray]:
    """The Fréchet distances' spaces: the hand-made ``all`` pooling (as the published figures) and MFCC."""
    return {"vae": np.stack([embed(model, c, sr, pooling=DEFAULT_POOLING) for c in clips]).astype(np.float64),
            "mfcc": np.stack([mfcc_features(c, sr) for c in clips]).astype(np.float64)}


def load_clips(entries: list[Entry], root: Path, sr: int) -> list[np.ndarray]:
    return [audio.load(e.audio_path(root), sample_rate=sr, mono=True, offset=e.offset,
                       duration=min(e.duration, MAX_CLIP_SECONDS))[0] for e in entries]


def progress_each(progress: Callable[[str, int, int], None] | None) -> Callable:
    """each(what, items, fn): [fn(i, item)], reporting (what, done, total) to ``progress`` after each item."""
    def each(what: str, items: list, fn: Callable) -> list:
        out = []
        for i, it in enumerate(items):
            out.append(fn(i, it))
            if progress:
                progress(what, i + 1, len(items))
        return out
    return each


def _seconds(e: Entry) -> float:
    return float(np.clip(e.duration, MIN_SECONDS, MAX_CLIP_SECONDS))


def evaluate(gen: Generator, manifest: str | Path, clips: int = 100, per_label: int = 10,
             guidance: float | None = None, temperature: float = 1.0,
             progress: Callable[[str, int, int], None] | None = None,
             classifier_guidance: float | None = None, split: str = "test", probe_split: str = "train") -> dict:
    """FD rows, per-label accuracy rows and the audio behind them (for the listening page). The FD's reference
    clips come from ``split`` ("unseen": sources no model trained on); the probes are fitted on real clips of
    ``probe_split`` and scored on real test clips (the probes need the prior's labels)."""
    manifest = Path(manifest)
    sr, model, key = gen.sample_rate, gen.model, gen.label_key
    kw = {"temperature": temperature, "guidance": guidance, "classifier_guidance": classifier_guidance}
    tests, trains = (spread([e for e in read_manifest(manifest, split=s)[0] if e.duration >= MIN_SECONDS], clips)
                     for s in (split, "train"))
    if len(tests) < 2 or len(trains) < 2:
        raise AudioVAEError(f"{manifest}: need at least two {split} and two train clips of {MIN_SECONDS} s or more")

    def label_of(e: Entry) -> str | None:
        value = None if key is None else e.labels.get(key)
        return str(value) if value is not None and str(value) in gen.labels else None

    each = progress_each(progress)
    real_test, real_train = load_clips(tests, manifest.parent, sr), load_clips(trains, manifest.parent, sr)
    learned = each("sampling (learned prior)", tests,
                   lambda i, e: gen.sample(_seconds(e), label_of(e), seed=i, **kw))

    def standard_normal(i: int, e: Entry) -> np.ndarray:
        z = torch.randn(1, model.latent_dim, gen.frames(_seconds(e)), generator=torch.Generator().manual_seed(i))
        return decode_frames(model, z, z.shape[-1] * model.hop_length).numpy()

    normal = each("sampling (N(0, I))", tests, standard_normal)
    sets = {"real test": real_test, "learned prior": learned, "N(0, I) prior": normal, "real train (floor)": real_train}
    feats = {name: _features(model, x, sr) for name, x in sets.items()}
    fd_rows = [{"samples": name, "clips": len(sets[name]),
                "fd_embedding": frechet_distance(feats[name]["vae"], feats["real test"]["vae"]),
                "fd_mfcc": frechet_distance(feats[name]["mfcc"], feats["real test"]["mfcc"])}
               for name in ("learned prior", "N(0, I) prior", "real train (floor)")]
    result = {"fd": fd_rows, "accuracy": [], "sets": sets, "tests": tests, "per_label": {}, "speed": speed(gen)}
    if gen.labels:
        result |= _conditional(gen, manifest, per_label, kw, label_of, each, probe_split)
    return result


def speed(gen: Generator, seconds: float = 10.0) -> dict:
    """Wall-clock seconds to sample (with the first label, when the prior has labels) and decode ``seconds`` of
    audio on one thread (best of two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best = math.inf
    for seed in range(2):
        t0 = time.perf_counter()
        gen.sample(seconds, gen.labels[0] if gen.labels else None, seed=seed)
        best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return {"audio_seconds": seconds, "wall_seconds": best, "x_realtime": seconds / best}


def labelled_entries(manifest: Path, split: str, key: str, labels, n: int) -> list[Entry]:
    """Up to ``n`` clips (of MIN_SECONDS or more) of each of ``labels`` (values of ``key``) in a manifest split."""
    entries = [e for e in read_manifest(manifest, split=split)[0] if e.duration >= MIN_SECONDS]
    return [e for lab in labels for e in spread([e for e in entries if str(e.labels.get(key)) == lab], n)]


def fit_probes(model, manifest: Path, key: str, labels, each, kinds: tuple[str, ...], per_label: int = 100,
               split: str = "train"):
    """({kind: (classifier, featurize(what, clips))}, pooling, labels fitted): probes of ``key`` fitted on up to
    ``per_label`` real ``split`` clips of each of ``labels`` the split has (at least two), on features of each
    kind: "vae" (the model's best embedding: its learned head when it has one) or "mfcc" (the classification
    baseline, which does not depend on the model)."""
    sr, pooling = model.sample_rate, best_pooling(model)

    def featurizer(kind: str) -> Callable:
        return lambda what, clips: np.stack(each(f"{what} ({kind})", clips,
                                                 lambda i, c: features(kind, model, c, sr, pooling=pooling)))

    train = labelled_entries(manifest, split, key, labels, per_label)
    names = [str(e.labels[key]) for e in train]
    fitted = [lab for lab in labels if lab in set(names)]
    if len(fitted) < 2:
        raise AudioVAEError(f"{manifest}: split '{split}' has clips of {len(fitted)} of the {len(labels)} values of "
                            f"'{key}' to probe; a probe needs two")
    clips = load_clips(train, manifest.parent, sr)
    probes = {}
    for kind in kinds:
        featurize = featurizer(kind)
        probes[kind] = (fit(featurize(f"embedding {split} clips", clips), names)[0], featurize)
    return probes, pooling, fitted


def _conditional(gen: Generator, manifest: Path, per_label: int, kw: dict, label_of, each, probe_split: str,
                 test_per_label: int = 20) -> dict:
    """Accuracy per label of probes (``fit_probes`` on ``probe_split``: on the model's embedding, and on MFCC
    statistics as a check independent of the model) on generated clips, on up to ``test_per_label`` real test
    clips per label and on the model's posterior-mean reconstructions of them (what a decoded clip can reach: the
    MFCC probe also hears recording chains the decoder does not render), for the labels the probes know."""
    probes, pooling, labels = fit_probes(gen.model, manifest, gen.label_key, gen.labels, each, ("vae", "mfcc"),
                                         split=probe_split)
    test = labelled_entries(manifest, "test", gen.label_key, labels, test_per_label)
    real_clips = load_clips(test, manifest.parent, gen.sample_rate)
    decoded = each("reconstructing test clips", real_clips,
                   lambda i, x: reconstruct(gen.model, x.reshape(1, -1), gen.sample_rate).reshape(x.shape))
    requests = [(lab, j) for lab in labels for j in range(per_label)]
    made = each("sampling per label", requests, lambda i, r: gen.sample(3.0, r[0], seed=1000 + i, **kw))
    asked, truth = np.array([r[0] for r in requests]), np.array([label_of(e) for e in test], dtype=object)
    hits = {}  # (kind, "generated" / "real_test" / "decoded_test") -> per clip, whether the probe names its label
    for kind, (clf, featurize) in probes.items():
        hits[kind, "generated"] = np.asarray(clf.predict(featurize("embedding generated clips", made))) == asked
        for what, clips in (("real_test", real_clips), ("decoded_test", decoded)):
            hits[kind, what] = np.asarray(clf.predict(featurize(f"embedding {what} clips", clips))) == truth \
                if test else np.zeros(0, bool)

    def row(label: str, gen_rows: np.ndarray, test_rows: np.ndarray) -> dict:
        def acc(kind: str, what: str, rows: np.ndarray) -> float:
            return float(np.mean(hits[kind, what][rows])) if rows.any() else float("nan")

        return {"label": label,
                "generated": int(gen_rows.sum()), "generated_accuracy": acc("vae", "generated", gen_rows),
                "real_test": int(test_rows.sum()), "real_test_accuracy": acc("vae", "real_test", test_rows),
                "decoded_test_accuracy": acc("vae", "decoded_test", test_rows),
                "generated_accuracy_mfcc": acc("mfcc", "generated", gen_rows),
                "real_test_accuracy_mfcc": acc("mfcc", "real_test", test_rows),
                "decoded_test_accuracy_mfcc": acc("mfcc", "decoded_test", test_rows)}

    rows = [row(lab, asked == lab, truth == lab) for lab in labels]
    rows.append(row("mean", np.ones(len(asked), bool), np.ones(len(truth), bool)))
    per = {lab: [c for c, r in zip(made, requests, strict=True) if r[0] == lab][:2] for lab in labels}
    return {"accuracy": rows, "per_label": per, "probe": pooling, "probe_split": probe_split}


def arithmetic(gen: Generator, manifest: str | Path, key: str, triples: int = 40, seed: int = 0,
               progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """Latent arithmetic on test clips, scored by a probe (``_probe``) of the manifest label ``key`` (e.g. the
    speaker): A - B + C, with A and B two clips of one value and C a clip of another (values with at least a fifth
    as many test clips as the most frequent one). Rows: the share of A, of A - B + C and of C that the probe
    assigns to C's value (as_target) and to A's (as_source)."""
    manifest, sr = Path(manifest), gen.sample_rate
    by: dict[str, list[Entry]] = {}
    for e in read_manifest(manifest, split="test")[0]:
        if e.duration >= MIN_SECONDS and e.labels.get(key) is not None:
            by.setdefault(str(e.labels[key]), []).append(e)
    most = max(map(len, by.values()), default=0)
    values = sorted(v for v, es in by.items() if len(es) >= max(2, most / 5))  # rare values: too few to probe
    if len(values) < 2:
        raise AudioVAEError(f"{manifest}: latent arithmetic on '{key}' needs two values with two test clips each")
    each = progress_each(progress)
    probes, _, _ = fit_probes(gen.model, manifest, key, values, each, ("vae",))
    clf, embedded = probes["vae"]
    rng = np.random.default_rng(seed)
    picks = []
    for _ in range(triples):
        v, w = rng.choice(values, 2, replace=False)
        a, b = rng.choice(len(by[v]), 2, replace=False)
        picks.append((v, w, *load_clips([by[v][a], by[v][b], by[w][rng.integers(len(by[w]))]], manifest.parent, sr)))
    moved = each("latent arithmetic", picks, lambda i, p: gen.arithmetic(p[2], sr, minus=(p[3], sr), plus=(p[4], sr)))
    source, target = np.array([p[0] for p in picks]), np.array([p[1] for p in picks])
    return [{"clips": name, "n": len(picks), "as_target": float(np.mean(pred == target)),
             "as_source": float(np.mean(pred == source))}
            for name, pred in (("A (unchanged)", clf.predict(embedded("embedding A", [p[2] for p in picks]))),
                               ("A - B + C", clf.predict(embedded("embedding A - B + C", moved))),
                               ("C (the target's clip)", clf.predict(embedded("embedding C", [p[4] for p in picks]))))]


def _opus_b64(x: np.ndarray, sr: int) -> str:
    return base64.b64encode(audio.wav_bytes(x, sr, "OGG")).decode("ascii")


def _jpeg_b64(x: np.ndarray, sr: int, title: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_spectrogram(Path(tmp) / "s.jpg", x, sr, title=title, width=5.2)
        return base64.b64encode(path.read_bytes()).decode("ascii")


def _table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v) -> str:
        return f"{v:.3g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(k, ''))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def listening_page(path: Path, title: str, tables: list[tuple[str, list[dict]]],
                   sections: list[tuple[str, list[tuple[str, np.ndarray, int]]]]) -> Path:
    """A self-contained HTML page: tables, then per section audio players (base64 Ogg Opus, small enough to
    commit) and spectrograms (JPEG)."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px}.clip{display:inline-block;margin:6px;width:520px}"
             "img{width:520px}</style>", f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<h2>{html.escape(t)}</h2>{_table(rows)}" for t, rows in tables if rows]
    for name, clips in sections:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        for caption, x, sr in clips:
            parts.append(f"<div class='clip'><b>{html.escape(caption)}</b><br>"
                         f"<audio controls src='data:audio/ogg;base64,{_opus_b64(x, sr)}'></audio><br>"
                         f"<img alt='spectrogram' src='data:image/jpeg;base64,{_jpeg_b64(x, sr, caption)}'></div>")
    write_text(path, "\n".join(parts) + "\n")
    return path


def report_sections(gen: Generator, result: dict, target: Generator | None = None
                    ) -> list[tuple[str, list[tuple[str, np.ndarray, int]]]]:
    """Listening examples: two samples per label, unconditional ones, N(0, I), an interpolation, a continuation
    and (with a ``target``) a timbre transfer, from the clips of an ``evaluate`` result."""
    sr, sets, tests = gen.sample_rate, result["sets"], result["tests"]
    sections = [(f"Samples per label ({gen.label_key})",
                 [(f"{lab} #{i}", c, sr) for lab, cs in result["per_label"].items() for i, c in enumerate(cs)]),
                ("Learned prior (labels and lengths of test clips)",
                 [(f"like {e.id}", c, sr) for e, c in zip(tests[:4], sets["learned prior"][:4], strict=False)]),
                ("N(0, I) prior", [(f"#{i}", c, sr) for i, c in enumerate(sets["N(0, I) prior"][:2])])]
    a, b = sets["real test"][0], sets["real test"][-1]
    morph = gen.interpolate(a, sr, b, sr, steps=5)
    sections.append((f"Interpolation {tests[0].id} -> {tests[-1].id}",
                     [(f"step {i}/4", c, sr) for i, c in enumerate(morph)]))
    prompt = a[:, : int(2 * sr)]
    sections.append(("Continuation (2 s prompt + 4 s)", [("prompt", prompt, sr),
                                                          ("continued", gen.continue_audio(prompt, sr, 4.0), sr)]))
    if target is not None:
        sections.append((f"Transfer {gen.model.name} -> {target.model.name}",
                         [("content", a, sr), ("transferred", transfer(a, sr, gen, target), target.sample_rate)]))
    return sections
