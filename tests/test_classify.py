"""Embeddings, the embed / classify CLI, the pickle-free classifier and few-label evaluation."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

import audiovae
from audiovae import classify
from audiovae.bench import classify as bench_classify
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
    dim = len(classify.POOLINGS[classify.DEFAULT_POOLING]) * m.latent_dim
    assert e.shape == (dim,) and e.dtype == np.float32
    assert np.array_equal(e, classify.embed(m, x, SR))
    stereo = np.concatenate([x, x])
    assert np.allclose(classify.embed(m, stereo, SR), e, atol=1e-5)  # channels are averaged
    assert np.isfinite(classify.embed(m, np.zeros((1, SR), np.float32), SR)).all()  # silence is fine
    assert classify.embed(m, tone(440.0, 1.0)[:, ::2].copy(), SR // 2).shape == e.shape  # any rate
    f = classify.mfcc_features(x, SR)
    assert f.shape == (80,) and np.isfinite(f).all()


def test_package_embed_is_classify_embed(model_dir):
    m, wave = load(model_dir), tone(440.0)
    assert audiovae.embed is classify.embed and audiovae.embed(m, wave, SR).shape == (classify.embedding_dim(m),)


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
    assert emb.shape == (6, classify.embedding_dim(load(model_dir))) and emb.dtype == np.float32 and len(paths) == 6
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
    assert loaded.classes == ["high", "low"] and loaded.meta["model_name"] == "tiny"
    assert loaded.pooling == classify.DEFAULT_POOLING and loaded.dim == classify.embedding_dim(load(model_dir))

    items = classify.labelled_items(tones, "parent-dir")
    m = load(model_dir)
    x, kept, failed = classify.embed_items(items, "vae", m)
    assert len(kept) == 12 and not failed
    in_memory, _ = classify.fit(x, [it.label for it in items], {"features": "vae"})
    assert np.allclose(in_memory.predict_proba(x), loaded.predict_proba(x))

    r = cli("classify", "predict", out, tones, "--model", model_dir)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["label"] for row in rows] == in_memory.predict(x)
    assert all(0.0 < float(row["probability"]) <= 1.0 for row in rows)
    json_out = tmp_path / "pred.json"
    assert cli("classify", "predict", out, tones / "low", "--out", json_out, "--model", model_dir).exit_code == 0
    assert json_out.read_text().count('"label"') == 6
    assert loaded.meta["model"] is None  # a folder's path is not recorded: no paths in a classifier
    png = tmp_path / "cm.png"
    r = cli("classify", "eval", out, "--data", tones, "--plot", png, "--model", model_dir)
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "macro-F1" in r.output and png.stat().st_size > 0


def test_classifier_never_opens_a_path_it_names(model_dir, tones, tmp_path, monkeypatch):
    """A classifier file is user input: the model it names is a shipped name or nothing, never a folder."""
    from audiovae import registry

    out = tmp_path / "clf"
    assert cli("classify", "fit", "--data", tones, "--label", "parent-dir", "--model", model_dir,
               "--out", out).exit_code == 0
    meta = json.loads((out / "classifier.json").read_text())
    opened = []
    monkeypatch.setattr(registry, "_resolve", lambda p: opened.append(p) or registry.PRETRAINED_DIR / "none.json")
    for named in (None, str(model_dir), "../" + Path(model_dir).name):
        (out / "classifier.json").write_text(json.dumps(meta | {"model": named}))
        for args in (("predict", out, tones), ("eval", out, tones)):
            assert_error(cli("classify", *args), "clf: classifier was fitted on a model folder (model 'tiny'",
                         "not a shipped model: give that folder with --model FOLDER")
    assert not opened


def test_mfcc_classifier_on_a_manifest_separates_tones(tones, tmp_path):
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
    clf, wave = classify.Classifier.load(out), tone(2100.0)
    assert np.array_equal(clf.embed(None, wave, SR), classify.mfcc_features(wave, SR))  # what the app and demo call
    assert clf.predict(clf.embed(None, wave, SR)[None]) == ["high"]


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
    for method in classify.SEMI_METHODS:
        semi = classify.few_label_eval(xtr, ytr, xte, yte, k=1, draws=3, semi=method)
        assert semi["accuracy_mean"] > 0.9, method
    with pytest.raises(classify.ClassifyError, match="unknown semi-supervised method"):
        classify.few_label_eval(xtr, ytr, xte, yte, k=1, semi="magic")
    assert classify.few_label_eval(xtr, ytr, xte, yte, k=2, seed=1) == classify.few_label_eval(
        xtr, ytr, xte, yte, k=2, seed=1)
    kept = classify.few_label_eval(xtr, ytr, xte, yte, k=2, draws=3, keep=True)
    assert len(kept["chosen"]) == len(kept["predicted"]) == 3
    for chosen, predicted in zip(kept["chosen"], kept["predicted"], strict=True):
        assert sorted(ytr[chosen].tolist()) == ["a", "a", "b", "b", "c", "c"]
        assert predicted.shape == yte.shape
    assert np.mean([np.mean(p == yte) for p in kept["predicted"]]) == pytest.approx(kept["accuracy_mean"])


def test_suggest_picks_one_typical_clip_per_cluster():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = (50, 30, 10)
    x = np.concatenate([c + rng.standard_normal((n, 2)) for c, n in zip(centers, sizes, strict=True)])
    picks, counts = classify.suggest(x, 3)
    assert counts.tolist() == list(sizes)  # largest cluster first
    starts = np.cumsum((0, *sizes))
    for p, lo, hi, c in zip(picks, starts[:-1], starts[1:], centers, strict=True):
        assert lo <= p < hi  # one clip from each blob...
        assert np.linalg.norm(x[p] - c) < 1.0  # ...from its dense middle, not an outlier
    assert np.array_equal(classify.suggest(x, 3, seed=0)[0], picks)
    assert len(classify.suggest(np.zeros((5, 2)), 3)[0]) == 1  # one distinct row: one cluster
    for n in (0, len(x) + 1):
        with pytest.raises(classify.ClassifyError, match="cannot suggest"):
            classify.suggest(x, n)


def test_few_label_eval_on_suggested_clips():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 10)) * 5
    y = np.repeat(["a", "b", "c"], [60, 20, 10])
    x = centers[np.searchsorted(["a", "b", "c"], y)] + rng.standard_normal((len(y), 10))
    r = classify.few_label_eval(x, y, x, y, k=1, draws=2, suggested=True, keep=True)
    for chosen in r["chosen"]:
        assert len(chosen) == 3 and sorted(set(y[chosen])) == ["a", "b", "c"]  # 3 clusters, 3 classes
    assert r["accuracy_mean"] > 0.9
    one = classify.few_label_eval(x[:60], y[:60], x, y, k=1, draws=1, suggested=True, keep=True)
    assert (one["predicted"][0] == "a").all()  # every suggestion of one class: that class


def test_suggest_cli(model_dir, tones, tmp_path):
    out = tmp_path / "picks.csv"
    r = cli("classify", "suggest", tones, "--n", 4, "--model", model_dir, "--out", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [int(row["rank"]) for row in rows] == [1, 2, 3, 4]
    assert sum(int(row["cluster_size"]) for row in rows) == 12
    assert len({row["path"] for row in rows}) == 4 and all(Path(row["path"]).parent.parent == tones for row in rows)
    emb = tmp_path / "emb.npz"
    assert cli("embed", tones, "--model", model_dir, "--out", emb).exit_code == 0
    r = cli("classify", "suggest", emb, "--n", 4)
    assert r.exit_code == 0, r.output
    with np.load(emb, allow_pickle=False) as f:
        picks, _ = classify.suggest(f["embeddings"], 4)
        expected = f["paths"][picks].tolist()
    assert [row["path"] for row in csv.DictReader(io.StringIO(r.stdout))] == expected
    assert_error(cli("classify", "suggest", emb, "--n", 13), "cannot suggest 13 of 12")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    assert_error(cli("classify", "suggest", bad, "--n", 2), "bad.npz", "not an `audiovae embed` file")


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
    per_dim = len(classify.POOLINGS[classify.DEFAULT_POOLING])
    assert_error(cli("classify", "predict", clf, tones, "--model", other),
                 f"expects {4 * per_dim}-dim embeddings of model 'tiny'", f"model 'tiny' gives {6 * per_dim}")

    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(50, np.float32), SR)
    assert_error(cli("classify", "predict", clf, short, "--model", model_dir),
                 "short.wav: shorter than one latent frame")
    assert_error(cli("embed", empty, "--model", model_dir, "--out", tmp_path / "e.npz"), "no audio files")


def test_poolings_share_one_encoder_pass(model_dir):
    from audiovae.inference import encode_means, to_model_rate

    m = load(model_dir)
    x = tone(440.0, 1.0)
    many = classify.embed_many(m, x, SR, tuple(classify.POOLINGS))
    for name, parts in classify.POOLINGS.items():
        assert many[name].shape == (len(parts) * m.latent_dim,) == (classify.embedding_dim(m, name),)
        assert np.array_equal(many[name], classify.embed(m, x, SR, pooling=name))
    d = m.latent_dim
    assert np.array_equal(many["all"][: 2 * d], many["mean-std"])  # every pooling starts with mean and std of mu
    mu, logsig = classify.posterior_frames(m, to_model_rate(m, x, SR))
    assert np.array_equal(mu, encode_means(m, to_model_rate(m, x, SR)).numpy())  # the codec's frames
    whole = m.encode(torch.nn.functional.pad(to_model_rate(m, x, SR), (0, 20 * m.hop_length)))
    assert np.allclose(logsig, whole.std.detach().log().numpy()[..., : logsig.shape[-1]], atol=1e-4)
    q10, q50, q90 = (many["quantiles"][i * d : (i + 1) * d] for i in (2, 3, 4))
    assert (q10 <= q50 + 1e-6).all() and (q50 <= q90 + 1e-6).all()
    top, bottom = many["mean-std-max"][2 * d : 3 * d], many["mean-std-max"][3 * d :]
    assert (bottom <= many["mean-std"][:d] + 1e-6).all() and (many["mean-std"][:d] <= top + 1e-6).all()
    with pytest.raises(classify.ClassifyError, match="unknown pooling 'best'"):
        classify.embed(m, x, SR, pooling="best")


def test_pooling_and_estimator_are_saved_and_used(model_dir, tones, tmp_path):
    out = tmp_path / "clf"
    r = cli("classify", "fit", "--data", tones, "--label", "parent-dir", "--model", model_dir, "--out", out,
            "--pooling", "quantiles", "--estimator", "logreg", "--max-per-class", 5)
    assert r.exit_code == 0, r.output
    clf = classify.Classifier.load(out)
    assert clf.pooling == "quantiles" and clf.dim == 5 * 4 and clf.meta["estimator"] == "LogisticRegression"
    assert clf.meta["train_clips"] == 10
    assert (out / "classifier.npz").stat().st_size < 10_000
    r = cli("classify", "predict", out, tones / "high", "--model", model_dir)
    assert r.exit_code == 0, r.output
    m = load(model_dir)
    x, _, _ = classify.embed_items(classify.labelled_items(tones, "parent-dir"), "vae", m, pooling="quantiles")
    assert [row["label"] for row in csv.DictReader(io.StringIO(r.stdout))] == clf.predict(x)[:6]
    wave = tone(2100.0)  # Classifier.embed (the app's and demo's path) takes the classifier's pooling
    assert np.array_equal(clf.embed(m, wave, SR), classify.embed(m, wave, SR, pooling="quantiles"))

    r = cli("embed", tones / "low", "--model", model_dir, "--out", tmp_path / "e.npz", "--pooling", "mean-std-max")
    assert r.exit_code == 0 and "16 dims, mean-std-max pooling" in r.output, r.output
    assert_error(cli("classify", "fit", "--data", tones, "--label", "parent-dir", "--model", model_dir, "--out", out,
                     "--estimator", "forest"), "unknown estimator 'forest'")
    assert_error(cli("embed", tones, "--model", model_dir, "--out", tmp_path / "e.npz", "--pooling", "best"),
                 "unknown pooling 'best'")
    clf.meta["pooling"] = "mean-std"  # a classifier whose pooling gives another dimension than it was fitted on
    clf.save(tmp_path / "edited")
    assert_error(cli("classify", "predict", tmp_path / "edited", tones, "--model", model_dir),
                 "expects 20-dim embeddings", "gives 8 (mean-std pooling)")


def test_silent_file_is_classified_like_any_other(model_dir, tones, tmp_path):
    """Documented behaviour: silence has a well-defined embedding and gets a label like any other clip."""
    out = tmp_path / "clf"
    assert cli("classify", "fit", "--data", tones, "--label", "parent-dir", "--model", model_dir,
               "--out", out).exit_code == 0
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR, np.float32), SR)
    r = cli("classify", "predict", out, silent, "--model", model_dir)
    assert r.exit_code == 0, r.output
    (row,) = csv.DictReader(io.StringIO(r.stdout))
    assert row["label"] in ("low", "high") and 0.0 < float(row["probability"]) <= 1.0


def tiny_corpus(root: Path) -> Path:
    """corpora/speech16k/manifest.jsonl with two Fish Fillets speakers: 20 train, 3 valid, 3 test clips each."""

    d = root / "speech16k"
    (d / "audio").mkdir(parents=True)
    lines = []
    for s, (speaker, base) in enumerate((("fillets-cs:m", 200.0), ("fillets-cs:v", 1500.0))):
        for i in range(26):
            path = f"audio/{s}_{i}.wav"
            sf.write(d / path, tone(base * (1 + 0.02 * i), 0.3, seed=i)[0], SR)
            split = "train" if i < 20 else "valid" if i < 23 else "test"
            lines.append(json.dumps({"id": path, "path": path, "offset": 0.0, "duration": 0.3, "sample_rate": SR,
                                     "split": split, "source": "fillets-ng-data-cs", "license": "x",
                                     "labels": {"speaker": speaker, "language": "cs"}}))
    (d / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_bench_classify_on_a_tiny_corpus(model_dir, tmp_path):
    corpora = tiny_corpus(tmp_path / "corpora")
    out = tmp_path / "bench"
    r = cli("bench", "classify", "--corpora", corpora, "--task", "speaker", "--model", f"speech16k={model_dir}",
            "--max-train", 20, "--max-eval", 3, "--draws", 1, "--out", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "classify_long.csv").open()))
    feats = {row["features"] for row in rows}
    methods = (*classify.SEMI_METHODS, classify.SUGGESTED)
    assert feats == {"vae", "mfcc", *(f"{f}+{m}" for f in ("vae", "mfcc") for m in methods)}
    assert {row["k"] for row in rows} == {"1", "5", "20", "all"}
    assert all(row["test_clips"] == "6" and row["train_clips"] == "40" for row in rows)
    valid = list(csv.DictReader((out / "classify_pooling_valid.csv").open()))
    assert {row["features"] for row in valid} == {*(f"vae:{p}" for p in classify.POOLINGS), "mfcc"}
    wide = (out / "classify.md").read_text()
    assert "| speaker | vae |" in wide and "acc@5" in wide and ("Floors not met" in wide or "All floors met" in wide)
    assert (out / "classify.png").stat().st_size > 0 and (out / "classify_tasks.csv").exists()
    assert_error(cli("bench", "classify", "--corpora", corpora, "--task", "language-cross-source",
                     "--model", f"speech16k={model_dir}", "--out", out), "task language-cross-source",
                 "fewer than two classes")
    assert_error(cli("bench", "classify", "--corpora", corpora, "--task", "genre", "--out", out), "unknown task")
    assert_error(cli("bench", "classify", "--corpora", corpora, "--task", "instrument-family", "--out", out),
                 "music24k/manifest.jsonl: corpus not built")


def test_floors_and_wide_table():
    rows = [{"task": "t", "features": f, "k": k, "accuracy_mean": a, "macro_f1_mean": a,
             "draws": 1 if k == "all" else 5, "accuracy_std": 0.0 if k == "all" else 0.02 * (1 + (f == "mfcc"))}
            for f, accs in (("vae", (0.5, 0.88, 0.9, 0.95)), ("mfcc", (0.4, 0.89, 0.8, 0.9)))
            for k, a in zip((1, 5, 20, "all"), accs, strict=True)]
    assert bench_classify.floors(rows) == ["t: k=5, vae 0.880 ± 0.010 <= mfcc 0.890 ± 0.020"]
    rows[1]["accuracy_mean"] = 0.84
    assert bench_classify.floors(rows) == ["t: k=5, vae 0.840 ± 0.010 <= mfcc 0.890 ± 0.020",
                                     "t: k=5 accuracy 0.840 more than 10 points below all labels 0.950"]
    wide = bench_classify.wide_table(rows)
    assert [w["features"] for w in wide] == ["vae", "mfcc"] and wide[0]["acc@all"] == 0.95 and wide[1]["f1@1"] == 0.4


def test_unseen_tasks_test_on_the_unseen_split_and_within_tasks_split_by_file(tmp_path):
    from dataclasses import replace

    corpora = tiny_corpus(tmp_path / "corpora")
    manifest = corpora / "speech16k" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    unseen = [dict(r, split="unseen", id=f"u{r['id']}#{c}", offset=0.1 * c, duration=0.1)
              for r in rows for c in range(2)]  # two clips of each file
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows + unseen))
    plain = bench_classify.Task("t", "speech16k", "", (bench_classify.Part("speech16k", "speaker"),))
    test_only = replace(plain, test_split="unseen")
    assert len(bench_classify.task_items(plain, corpora, "test")) == 6
    assert len(bench_classify.task_items(test_only, corpora, "test")) == 104
    assert len(bench_classify.task_items(test_only, corpora, "train")) == 40
    within = replace(test_only, within=True, min_train=5)
    parts = {s: bench_classify.task_items(within, corpora, s) for s in ("train", "valid", "test")}
    files = {s: {str(it.path) for it in items} for s, items in parts.items()}
    assert sum(len(v) for v in parts.values()) == 104 and all(parts.values())
    assert not (files["train"] & files["valid"] or files["train"] & files["test"] or files["valid"] & files["test"])
    items, classes = bench_classify.task_classes(within, corpora)
    assert classes == ["fillets-cs:m", "fillets-cs:v"] and items["test"] == parts["test"]
    assert [t.name for t in bench_classify.tasks_named(["speaker-unseen", "source-type-unseen"])] == [
        "speaker-unseen", "source-type-unseen"]
    family = bench_classify.tasks_named(["instrument-family-unseen"])[0]
    assert family.test_split == "unseen" and family.train == (bench_classify.Part("music24k", "family"),)
