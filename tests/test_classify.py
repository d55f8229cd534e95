"""Embeddings, the embed / classify CLI, the pickle-free classifier and few-label evaluation."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from audiovae import classify
from audiovae.cli import app
from audiovae.config import ModelConfig
from audiovae.errors import AudioVAEError
from audiovae.models.vae import VAE
from audiovae.registry import load, save

torch.set_num_threads(1)
SR = 16000


def tiny_dir(root: Path, latent_dim: int = 4) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(enc_channels=8, enc_blocks=1, dec_channels=8, dec_blocks=1, latent_dim=latent_dim)
    save(cfg, VAE(cfg).state_dict(), root, "tiny")
    return root


def tone(freq: float, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    t = np.arange(round(SR * seconds)) / SR
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.01
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)[None]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    """Two classes of tones, 6 files each: low (200-260 Hz) and high (2-2.6 kHz)."""
    root = tmp_path_factory.mktemp("tones")
    for name, base in (("low", 200.0), ("high", 2000.0)):
        (root / name).mkdir()
        for i in range(6):
            sf.write(root / name / f"{i}.wav", tone(base * (1 + 0.05 * i), seed=i)[0], SR)
    return root


def cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "1000"})


def assert_error(result, *needles: str) -> str:
    assert isinstance(result.exception, AudioVAEError), (result.output, result.exception)
    msg = str(result.exception)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_embed_shape_determinism_and_channels(model_dir):
    m = load(model_dir)
    x = tone(440.0, 1.0)
    e = classify.embed(m, x, SR)
    assert e.shape == (2 * m.latent_dim,) and e.dtype == np.float32
    assert np.array_equal(e, classify.embed(m, x, SR))
    stereo = np.concatenate([x, x])
    assert np.allclose(classify.embed(m, stereo, SR), e, atol=1e-5)  # channels are averaged
    assert np.isfinite(classify.embed(m, np.zeros((1, SR), np.float32), SR)).all()  # silence is fine
    assert classify.embed(m, tone(440.0, 1.0)[:, ::2].copy(), SR // 2).shape == e.shape  # any rate
    f = classify.mfcc_features(x, SR)
    assert f.shape == (80,) and np.isfinite(f).all()


def test_file_shorter_than_one_frame_is_refused(model_dir):
    m = load(model_dir)
    with pytest.raises(classify.ClassifyError, match="clip.wav: shorter than one latent frame"):
        classify.embed(m, np.zeros((1, 100), np.float32), SR, name="clip.wav")


def test_embed_cli_round_trip_skips_unreadable(model_dir, tones, tmp_path):
    bad = tmp_path / "in" / "bad.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "emb.npz"
    r = cli("embed", tones / "low", bad, "--model", model_dir, "--out", out)
    assert r.exit_code == 0, r.output
    assert "6 embeddings" in r.output and "1 file(s) skipped" in r.output and "bad.wav" in r.output
    with np.load(out, allow_pickle=False) as f:
        paths, emb = f["paths"], f["embeddings"]
    assert emb.shape == (6, 8) and emb.dtype == np.float32 and len(paths) == 6
    m = load(model_dir)
    x, _ = sf.read(paths[0], dtype="float32")
    assert np.allclose(emb[0], classify.embed(m, x[None], SR), atol=1e-6)


@pytest.mark.parametrize("estimator", ["logreg", "logreg-binary", "svc", "knn"])
def test_numpy_predictions_equal_sklearn(estimator, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    n_classes = 2 if estimator == "logreg-binary" else 3
    y = np.repeat([f"c{i}" for i in range(n_classes)], 20)
    x = rng.standard_normal((len(y), 5)) + np.repeat(np.arange(n_classes), 20)[:, None]
    est = {"logreg": LogisticRegression(), "logreg-binary": LogisticRegression(), "svc": LinearSVC(C=0.1),
           "knn": KNeighborsClassifier(5)}[estimator]
    pipe = Pipeline([("scale", StandardScaler()), ("clf", est)]).fit(x, y)
    clf = classify.Classifier.from_pipeline(pipe, x, y, {"features": "mfcc"})
    xt = rng.standard_normal((30, 5)) + 1
    assert clf.predict(xt) == pipe.predict(xt).tolist()
    if hasattr(pipe, "predict_proba"):
        assert np.allclose(clf.predict_proba(xt), pipe.predict_proba(xt), atol=1e-8)
    clf.save(tmp_path)
    loaded = classify.Classifier.load(tmp_path)
    assert np.array_equal(loaded.predict_proba(xt), clf.predict_proba(xt))


def test_fit_save_load_predict_eval_round_trip(model_dir, tones, tmp_path):
    out = tmp_path / "clf"
    r = cli("classify", "fit", "--data", tones, "--label", "parent-dir", "--model", model_dir, "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".npz"]  # no pickle anywhere
    loaded = classify.Classifier.load(out)
    assert loaded.classes == ["high", "low"] and loaded.dim == 8 and loaded.meta["model_name"] == "tiny"

    items = classify.labelled_items(tones, "parent-dir")
    m = load(model_dir)
    x, kept, failed = classify.embed_items(items, "vae", m)
    assert len(kept) == 12 and not failed
    in_memory, _ = classify.fit(x, [it.label for it in items], {"features": "vae"})
    assert np.allclose(in_memory.predict_proba(x), loaded.predict_proba(x))

    r = cli("classify", "predict", out, tones)  # the model is the one recorded in the classifier
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["label"] for row in rows] == in_memory.predict(x)
    assert all(0.0 < float(row["probability"]) <= 1.0 for row in rows)
    json_out = tmp_path / "pred.json"
    assert cli("classify", "predict", out, tones / "low", "--out", json_out).exit_code == 0
    assert json_out.read_text().count('"label"') == 6

    png = tmp_path / "cm.png"
    r = cli("classify", "eval", out, "--data", tones, "--plot", png)
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "macro-F1" in r.output and png.stat().st_size > 0


def test_mfcc_classifier_on_a_manifest_separates_tones(tones, tmp_path):
    import json

    manifest = tmp_path / "manifest.jsonl"
    lines = []
    for f in sorted(tones.rglob("*.wav")):
        split = "test" if f.stem in ("0", "5") else "train"
        lines.append(json.dumps({"id": str(f), "path": str(f), "offset": 0.0, "duration": 0.5, "sample_rate": SR,
                                 "split": split, "source": "t", "license": "x", "labels": {"pitch": f.parent.name}}))
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "clf"
    r = cli("classify", "fit", "--data", manifest, "--label", "pitch", "--features", "mfcc", "--out", out)
    assert r.exit_code == 0, r.output
    r = cli("classify", "eval", out, "--data", manifest, "--split", "test")
    assert r.exit_code == 0, r.output
    assert "4 clips" in r.output and "accuracy 1.000" in r.output
    assert (out / "confusion_test.png").exists()


def test_few_label_eval_on_separable_features():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 10)) * 5

    def blobs(n):
        y = np.repeat(["a", "b", "c"], n)
        return centers[np.repeat(np.arange(3), n)] + rng.standard_normal((3 * n, 10)), y

    xtr, ytr = blobs(30)
    xte, yte = blobs(20)
    for k in (1, 5, None):
        r = classify.few_label_eval(xtr, ytr, xte, yte, k=k, draws=3)
        assert r["accuracy_mean"] > 0.9 and r["macro_f1_mean"] > 0.9
        assert r["draws"] == (1 if k is None else 3)
    semi = classify.few_label_eval(xtr, ytr, xte, yte, k=1, draws=3, semi_supervised=True)
    assert semi["accuracy_mean"] > 0.9
    assert classify.few_label_eval(xtr, ytr, xte, yte, k=2, seed=1) == classify.few_label_eval(
        xtr, ytr, xte, yte, k=2, seed=1)


def test_bad_inputs_give_one_line_errors(model_dir, tones, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(cli("classify", "fit", "--data", empty, "--label", "parent-dir", "--model", model_dir,
                     "--out", tmp_path / "c0"), "no labelled audio")
    assert_error(cli("classify", "fit", "--data", tones, "--label", "language", "--out", tmp_path / "c0"),
                 "--label parent-dir")

    one = tmp_path / "one"
    for name, n in (("many", 3), ("single", 1)):
        (one / name).mkdir(parents=True)
        for i in range(n):
            sf.write(one / name / f"{i}.wav", tone(300.0 * (i + 1))[0], SR)
    assert_error(cli("classify", "fit", "--data", one, "--label", "parent-dir", "--features", "mfcc",
                     "--out", tmp_path / "c1"), "class 'single' has 1 example")

    clf = tmp_path / "clf"
    assert cli("classify", "fit", "--data", tones, "--label", "parent-dir", "--model", model_dir,
               "--out", clf).exit_code == 0
    other = tiny_dir(tmp_path / "other", latent_dim=6)
    assert_error(cli("classify", "predict", clf, tones, "--model", other),
                 "expects 8-dim embeddings of model 'tiny'", "model 'tiny' gives 12")

    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(50, np.float32), SR)
    assert_error(cli("classify", "predict", clf, short), "short.wav: shorter than one latent frame")
    assert_error(cli("embed", empty, "--model", model_dir, "--out", tmp_path / "e.npz"), "no audio files")
