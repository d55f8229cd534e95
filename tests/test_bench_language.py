"""The cross-source language bench: leave-one-source-out folds, balancing weights, the sequence head, and a
classifier folder holding one."""

import numpy as np
import pytest
import soundfile as sf
import torch

from audiovae.bench.language import (
    SEQ_HEAD,
    SYNTHETIC,
    Clips,
    balance_weights,
    cached_means,
    family,
    loso_folds,
    unseen_fold,
)
from audiovae.classify.classifier import Classifier
from audiovae.config import ModelConfig
from audiovae.data.manifest import Entry
from audiovae.inference import encode_means
from audiovae.models.embedder import Embedder, EmbedderConfig
from audiovae.models.vae import VAE
from audiovae.registry import load, save


def _entry(i: int, package: str, lang: str, split: str = "train", synthetic: bool = False, speaker=None) -> Entry:
    labels = {"language": lang, "package": package, "synthetic": synthetic} | ({"speaker": speaker} if speaker else {})
    return Entry(f"{package}/{i}", f"{i}.flac", 0.0, 1.0, 16000, split, package, "GPL-2", labels=labels)


@pytest.fixture
def clips():
    rows = [("tux", "en"), ("tux", "fr"), ("tux", "be"), ("klettres", "en"), ("klettres", "fr"),
            ("asterisk-core-sounds-en-wav", "en"), ("asterisk-core-sounds-fr-wav", "fr")]
    entries = [_entry(i * 10 + k, p, lg, split)
               for i, (p, lg) in enumerate(rows) for k, split in enumerate(("train", "train", "test", "valid"))]
    entries += [_entry(900, "warzone", "en", "unseen"), _entry(901, "0ad", "peo", "unseen")]
    return Clips(entries, [np.zeros((5, 4), np.float16)] * len(entries))


def test_families_group_the_asterisk_packages_and_the_synthetic_clips(clips):
    fams = set(clips.families.tolist())
    assert "asterisk" in fams and not any(f.startswith("asterisk-core") for f in fams)
    assert family(_entry(0, "espeak-ng", "be", synthetic=True)) == SYNTHETIC


def test_no_family_is_in_both_train_and_test_of_a_fold(clips):
    folds = loso_folds(clips)
    fam, lang, split = clips.families, clips.languages, clips.splits
    assert {f.name for f in folds} == {"tux", "klettres", "asterisk"}  # warzone, 0ad: unseen only
    for f in folds:
        assert set(fam[f.test]) == {f.name} and f.name not in set(fam[f.train])
        assert set(split[f.train]) == {"train"} and "unseen" not in set(split[f.test])
        assert set(lang[f.test]) <= set(lang[f.train])  # only languages the probe can know
    tux = next(f for f in folds if f.name == "tux")
    assert "be" not in set(lang[tux.test])  # nowhere else: no probe of this fold knows it


def test_unseen_fold_sets_unknown_languages_apart(clips):
    fold, unknown = unseen_fold(clips)
    assert clips.languages[fold.test].tolist() == ["en"] and clips.languages[unknown].tolist() == ["peo"]
    assert set(clips.splits[fold.train]) == {"train"}


def test_balance_weights_give_each_language_and_each_family_in_it_equal_mass():
    lang = np.array(["a"] * 6 + ["b"] * 2)
    fam = np.array(["x"] * 5 + ["y"] + ["x"] * 2)
    spk = np.array(["s1", "s1", "s1", "s1", "s2", "t", "u", "u"])
    w = balance_weights(lang, fam, spk)
    assert w.mean() == pytest.approx(1.0)
    assert w[lang == "a"].sum() == pytest.approx(w[lang == "b"].sum())
    assert w[(lang == "a") & (fam == "x")].sum() == pytest.approx(w[fam == "y"].sum())
    assert w[spk == "s2"].sum() == pytest.approx(w[spk == "s1"].sum())


@pytest.mark.parametrize("cmvn", ["none", "mean", "meanvar"])
def test_sequence_head_shapes_seed_and_padding(cmvn):
    cfg = EmbedderConfig(latent_dim=8, channels=16, blocks=2, attention=8, dim=12, expansion=2, cmvn=cmvn)
    torch.manual_seed(0)
    a = Embedder(cfg).eval()
    torch.manual_seed(0)
    b = Embedder(cfg).eval()
    z = torch.randn(3, 8, 40)
    assert a(z).shape == (3, 12) and torch.equal(a(z), b(z))
    mask = torch.ones(3, 40)
    mask[1, 25:] = 0
    with torch.no_grad():
        alone = a(z[1:2, :, :25])
        padded = a(z, mask)[1:2]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    assert 10_000 < sum(p.numel() for p in Embedder(EmbedderConfig(cmvn=cmvn, **SEQ_HEAD)).parameters()) < 100_000


def test_cmvn_removes_a_constant_offset():
    torch.manual_seed(0)
    head = Embedder(EmbedderConfig(latent_dim=8, channels=16, blocks=1, attention=8, dim=12, cmvn="mean")).eval()
    z = torch.randn(2, 8, 30)
    with torch.no_grad():
        torch.testing.assert_close(head(z), head(z + torch.randn(1, 8, 1)), atol=1e-4, rtol=1e-4)


def test_a_classifier_with_a_sequence_head_round_trips(tmp_path):
    torch.manual_seed(0)
    head = Embedder(EmbedderConfig(latent_dim=8, channels=16, blocks=1, attention=8, dim=6, expansion=2,
                                   cmvn="meanvar")).eval()
    rng = np.random.default_rng(0)
    arrays = {"mean": np.zeros(6), "scale": np.ones(6), "coef": rng.standard_normal((3, 6)), "intercept": np.zeros(3)}
    meta = {"features": "vae", "label": "language", "pooling": "learned", "classes": ["a", "b", "c"],
            "estimator": "Linear", "params": {}, "dim": 6}
    Classifier(meta, arrays, head).save(tmp_path)
    got = Classifier.load(tmp_path)
    assert got.head.config == head.config
    z = torch.randn(1, 8, 20)
    with torch.no_grad():
        torch.testing.assert_close(got.head(z), head(z), atol=1e-2, rtol=1e-2)  # stored in half precision
    x = np.random.default_rng(1).standard_normal((4, 6))
    assert got.predict(x) == Classifier(meta, arrays, head).predict(x)


def test_cached_means_are_the_encoders_frames_and_are_reused(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(enc_channels=8, enc_blocks=1, dec_channels=8, dec_blocks=1, latent_dim=4)
    model = load(save(cfg, VAE(cfg).state_dict(), tmp_path / "model", "tiny"))
    rng = np.random.default_rng(0)
    entries = []
    for i, seconds in enumerate((0.3, 0.5)):
        sf.write(tmp_path / f"{i}.wav", 0.1 * rng.standard_normal(round(16000 * seconds)).astype(np.float32), 16000)
        entries.append(Entry(str(i), f"{i}.wav", 0.0, seconds, 16000, "train", "p", "GPL-2", labels={"language": "a"}))
    got = cached_means(model, entries, tmp_path, tmp_path / "means.safetensors")
    again = cached_means(model, entries, tmp_path, tmp_path / "means.safetensors")
    for e, a, b in zip(entries, got, again, strict=True):
        x = sf.read(tmp_path / e.path, dtype="float32")[0][None]
        with torch.no_grad():
            want = encode_means(model, torch.from_numpy(x))[0].T.numpy()
        np.testing.assert_allclose(b.astype(np.float32), want, atol=2e-2, rtol=1e-2)  # read back from the cache
        assert a.shape == b.shape
