"""``classify eval`` on folders (labels from folder names, unknown labels left out and counted, recall per class,
the shipped probe by name) and the pooling defaults: a model's best pooling for ``embed`` and ``fit``, the
classifier's own for ``predict`` and ``eval``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiovae import classify
from audiovae.models.embedder import Embedder, EmbedderConfig
from audiovae.registry import load, save_embedder
from audiovae.resources import resource
from tests.test_classify import SR, assert_error, cli, tiny_dir, tone


@pytest.fixture(scope="module")
def headed(tmp_path_factory) -> Path:
    """A tiny VAE with a (random) learned embedding head of 6 dims."""
    folder = tiny_dir(tmp_path_factory.mktemp("headed"))
    head = Embedder(EmbedderConfig(latent_dim=4, channels=8, blocks=1, kernel=3, attention=4, dim=6))
    save_embedder(load(folder), head.eval(), {"steps": 0})
    return folder


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    """low (200-260 Hz) and high (2-2.6 kHz) tones, 4 files each, and 2 files of a third class, mid (700 Hz)."""
    root = tmp_path_factory.mktemp("tones")
    for name, base, n in (("low", 200.0, 4), ("high", 2000.0, 4), ("mid", 700.0, 2)):
        (root / name).mkdir()
        for i in range(n):
            sf.write(root / name / f"{i}.wav", tone(base * (1 + 0.05 * i), seed=i)[0], SR)
    return root


def test_embed_and_fit_default_to_the_models_best_pooling(tmp_path, headed, tones):
    plain = load(tiny_dir(tmp_path / "plain"))
    x = tone(440.0)
    assert classify.best_pooling(plain) == classify.DEFAULT_POOLING  # no head: the best hand-made pooling
    assert classify.embed(plain, x, SR).shape == (len(classify.POOLINGS[classify.DEFAULT_POOLING]) * 4,)
    m = load(headed)
    assert classify.best_pooling(m) == classify.LEARNED and classify.embedding_dim(m) == 6
    np.testing.assert_array_equal(classify.embed(m, x, SR), classify.embed(m, x, SR, pooling=classify.LEARNED))

    r = cli("embed", tones / "low", "--model", headed, "--out", tmp_path / "e.npz")
    assert r.exit_code == 0, r.output
    assert "(6 dims, learned pooling)" in r.output
    with np.load(tmp_path / "e.npz") as f:
        assert f["embeddings"].shape == (4, 6)
    r = cli("classify", "fit", "--data", tones, "--label", "parent-dir", "--model", headed, "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert classify.Classifier.load(tmp_path / "c").pooling == classify.LEARNED


def test_predict_and_eval_use_the_classifiers_own_pooling(tmp_path, headed, tones):
    out = tmp_path / "clf"
    r = cli("classify", "fit", "--data", tones, "--label", "parent-dir", "--model", headed, "--pooling",
            "mean-std", "--out", out)
    assert r.exit_code == 0, r.output
    clf = classify.Classifier.load(out)
    assert clf.pooling == "mean-std" and clf.dim == 8  # the model's default (learned) gives 6 dims
    r = cli("classify", "predict", out, "--model", headed, tones / "high")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("\n") == 5  # a header and 4 rows
    x = clf.embed(load(headed), tone(2000.0), SR)
    np.testing.assert_array_equal(x, classify.embed(load(headed), tone(2000.0), SR, pooling="mean-std"))
    r = cli("classify", "eval", out, "--model", headed, tones)
    assert r.exit_code == 0, r.output
    assert f"{tones.name}: 10 clips (0 skipped), accuracy 1.000" in r.output


def test_eval_on_a_folder_reports_recall_confusions_and_unknown_labels(tmp_path, headed, tones):
    out = tmp_path / "clf"
    lowhigh = tmp_path / "lowhigh"
    for name in ("low", "high"):
        shutil.copytree(tones / name, lowhigh / name)
    assert cli("classify", "fit", "--data", lowhigh, "--label", "parent-dir", "--model", headed, "--pooling",
               "mean-std", "--out", out).exit_code == 0

    r = cli("classify", "eval", out, "--model", headed, tones, "--label", "parent-dir")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line]  # (a transient progress bar leaves a blank line)
    assert lines[:5] == [f"{tones.name}: 8 clips (0 skipped), accuracy 0.875, macro-F1 0.873",  # mid: left out
                         "  high  recall 0.750 of 4, most often taken for low (1)",
                         "  low   recall 1.000 of 4",
                         "most frequent confusions (true -> predicted): high -> low (1)",
                         "left out 2 clip(s) with labels the classifier does not know: mid (2)"]
    assert (out / f"confusion_{tones.name}.png").stat().st_size > 0
    assert cli("classify", "eval", out, "--model", headed, "--data", tones, "--plot",
               tmp_path / "cm.png").exit_code == 0
    assert (tmp_path / "cm.png").stat().st_size > 0

    assert_error(cli("classify", "eval", out, "--model", headed), "DATA or --data")
    assert_error(cli("classify", "eval", out, "--model", headed, tones, "--data", tones), "DATA or --data")
    assert_error(cli("classify", "eval", out, "--model", headed, tones, "--label", "pitch"), "use --label parent-dir")
    assert_error(cli("classify", "eval", out, "--model", headed, tones / "mid"),
                 "none of its labels (mid (2)) is a class of the classifier (high, low)")


def test_evaluate_counts_recall_and_confusions_per_class():
    result = classify.evaluate(["a", "a", "a", "b", "b", "c"], ["a", "b", "b", "b", "c", "c"])
    assert [(r["label"], r["clips"], round(r["recall"], 3), r["taken_for"], r["taken"]) for r in result["per_class"]] \
        == [("a", 3, 0.333, "b", 2), ("b", 2, 0.5, "c", 1), ("c", 1, 1.0, None, 0)]
    assert result["confusions"] == [("a", "b", 2), ("b", "c", 1)]


def test_the_shipped_language_probe_evaluates_a_folder_by_name(tmp_path, monkeypatch):
    demo = resource("assets", "demo")
    data = tmp_path / "clips"
    for clip, lang in (("speech16k_fillets-cs.flac", "cs"), ("speech16k_fillets-nl.flac", "nl"),
                       ("speech16k_fillets-nl.flac", "klingon")):
        (data / lang).mkdir(parents=True)
        shutil.copy(demo / clip, data / lang / clip)
    monkeypatch.chdir(tmp_path)
    r = cli("classify", "eval", "speech16k-language", data, "--label", "parent-dir")
    assert r.exit_code == 0, r.output
    assert "clips: 2 clips (0 skipped), accuracy 1.000" in r.output
    assert "left out 1 clip(s) with labels the classifier does not know: klingon (1)" in r.output
    assert "confusion matrix" not in r.output and not list(tmp_path.rglob("*.png"))  # nothing written by default
