"""The learned embedding head on tiny models: shapes, masking, determinism, the contrastive loss, training,
export / load with hash checks, and the `learned` pooling in embed / classify / bench."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiovae import classify
from audiovae.errors import AudioVAEError
from audiovae.models.embedder import Embedder, EmbedderConfig, nt_xent
from audiovae.models.vae import VAE
from audiovae.registry import ModelLoadError, load, load_embedder, save
from audiovae.train.embedder import (
    EmbedModule,
    EmbedTrainConfig,
    PairDataset,
    collate_pairs,
    export_embedder,
    train_embedder,
)
from tests.test_classify import SR, assert_error, cli, tiny_corpus, tone
from tests.test_generate import make_corpus, tiny_vae

torch.set_num_threads(1)
TINY = {"channels": 8, "blocks": 1, "kernel": 3, "attention": 4, "dim": 6}


def tiny_config(model: str, manifest: str, **kw) -> EmbedTrainConfig:
    return EmbedTrainConfig(model=model, manifest=manifest, embedder=EmbedderConfig(**TINY), min_crop=0.1,
                            max_crop=0.3, batch_size=4, max_steps=4, val_every=2, warmup_steps=1, log_every=1, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VAE with an exported tiny head, its corpus and the run folder."""
    root = tmp_path_factory.mktemp("embed")
    folder = tiny_vae(root / "model")
    cfg = tiny_config(str(folder), str(make_corpus(root)))
    last = train_embedder(cfg, root / "run", progress=False)
    export_embedder(last, folder)
    return folder, cfg, root / "run"


def test_shapes_masking_and_determinism():
    torch.manual_seed(0)
    e = Embedder(EmbedderConfig(latent_dim=4, **TINY)).eval()
    z = torch.randn(3, 4, 11)
    with torch.no_grad():
        out = e(z)
        assert out.shape == (3, 6) and torch.equal(out, e(z))
        assert e(z[:1, :, :1]).shape == (1, 6)  # one frame is enough
        padded = torch.cat([z[:1, :, :5], torch.full((1, 4, 6), 9.0)], -1)  # 5 frames, then padding
        mask = torch.arange(11)[None] < 5
        assert torch.allclose(e(padded, mask), e(z[:1, :, :5]), atol=1e-5)  # causal blocks: padding is invisible


def test_contrastive_loss_decreases_on_synthetic_clips():
    """Eight 'clips', each a constant pattern plus noise: NT-Xent over crops learns to tell them apart."""
    torch.manual_seed(0)
    clips = [torch.randn(1, 4) + 0.5 * torch.randn(40, 4) for _ in range(8)]
    module = EmbedModule(EmbedTrainConfig(embedder=EmbedderConfig(latent_dim=4, **TINY), projection=4), "", "")
    batch = collate_pairs([PairDataset(clips, 10, 20, train=True)[i] for i in range(8)])
    assert batch["a"].shape[:2] == (8, 4) and batch["mask_a"].dtype == torch.bool
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = module.loss(batch, train=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    same = torch.randn(4, 3)
    assert nt_xent(same, same, 0.1) < nt_xent(same, torch.randn(4, 3), 0.1)


def test_export_load_and_learned_pooling(trained):
    folder, cfg, run = trained
    card = json.loads((folder / "tiny.json").read_text())
    entry = card["embed"]
    assert entry["file"] == "tiny.embed.safetensors" and entry["vae_sha256"] == card["sha256"]
    assert entry["config"]["latent_dim"] == 4 and entry["steps"] == 4
    m = load(folder)
    head, _ = load_embedder(m)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.allclose(head.stem.weight, ckpt["embedder.stem.weight"], atol=1e-3)  # fp16 weights
    assert torch.equal(head.latent_mean, ckpt["embedder.latent_mean"])  # fp32 statistics
    x = tone(440.0, 1.0)
    e = classify.embed(m, x, SR, pooling="learned")
    assert e.shape == (6,) == (classify.embedding_dim(m, "learned"),) and e.dtype == np.float32
    assert np.array_equal(e, classify.embed(load(folder), x, SR, pooling="learned"))  # deterministic
    assert np.allclose(classify.embed(m, np.concatenate([x, x]), SR, pooling="learned"), e, atol=1e-5)
    assert "learned" in classify.model_poolings(m)


def test_hash_and_weights_checks(trained, tmp_path):
    folder, cfg, run = trained
    copy = shutil.copytree(folder, tmp_path / "copy")
    with (copy / "tiny.embed.safetensors").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\0")
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_embedder(load(copy))
    other = tmp_path / "other"  # the same files, but other VAE weights: the head does not belong to them
    torch.manual_seed(5)
    save(load(folder).config, VAE(load(folder).config).state_dict(), other, "tiny")
    card, entry = (json.loads((f / "tiny.json").read_text()) for f in (other, folder))
    (other / "tiny.json").write_text(json.dumps(card | {"embed": entry["embed"]}))
    shutil.copy(folder / "tiny.embed.safetensors", other)
    with pytest.raises(ModelLoadError, match="another encoder.*train-embedder"):
        load_embedder(load(other))
    with pytest.raises(ModelLoadError, match="another encoder"):
        export_embedder(run / "checkpoints" / "last.ckpt", other)


def test_missing_head_is_a_clear_error(tmp_path):
    folder = tiny_vae(tmp_path / "model")
    m = load(folder)
    assert "learned" not in classify.model_poolings(m)
    with pytest.raises(ModelLoadError, match="has no embed model: train one with `audiovae train-embedder`"):
        classify.embed(m, tone(440.0), SR, pooling="learned")
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "x.wav", tone(440.0)[0], SR)
    assert_error(cli("embed", tmp_path / "a", "--model", folder, "--out", tmp_path / "e.npz", "--pooling", "learned"),
                 "has no embed model")
    assert not (tmp_path / "e.npz").exists()


def test_reuses_a_latents_folder_read_only(trained, tmp_path):
    folder, cfg, run = trained
    caches = run / "latents"
    before = {p.name: p.stat().st_mtime_ns for p in caches.iterdir()}
    train_embedder(cfg.__class__(**{**cfg.__dict__, "latents": str(caches)}), tmp_path / "run2", progress=False)
    assert not (tmp_path / "run2" / "latents").exists()
    assert {p.name: p.stat().st_mtime_ns for p in caches.iterdir()} == before
    other = tiny_vae(tmp_path / "other", latent_dim=6)
    with pytest.raises(Exception, match="no latent cache of the train split"):
        train_embedder(cfg.__class__(**{**cfg.__dict__, "model": str(other), "latents": str(caches)}),
                       tmp_path / "run3", progress=False)


def test_classifier_and_bench_with_learned_pooling(trained, tmp_path):
    folder, _, _ = trained
    corpora = tiny_corpus(tmp_path / "corpora")
    out = tmp_path / "clf"
    r = cli("classify", "fit", "--data", corpora / "speech16k" / "manifest.jsonl", "--label", "speaker",
            "--model", folder, "--out", out, "--pooling", "learned", "--estimator", "logreg")
    assert r.exit_code == 0, r.output
    clf = classify.Classifier.load(out)
    assert clf.pooling == "learned" and clf.dim == 6
    assert clf.meta["embed_sha256"] == json.loads((folder / "tiny.json").read_text())["embed"]["sha256"]
    clf.meta["embed_sha256"] = "0" * 64  # fitted on another head
    clf.save(tmp_path / "edited")
    assert_error(cli("classify", "predict", tmp_path / "edited", corpora, "--model", folder),
                 "another learned embedding head")

    bench = tmp_path / "bench"
    r = cli("bench", "classify", "--corpora", corpora, "--task", "speaker", "--model", f"speech16k={folder}",
            "--max-train", 20, "--max-eval", 3, "--draws", 1, "--supervised-only", "--finetune", 3, "--out", bench)
    assert r.exit_code == 0, r.output
    valid = {row["features"] for row in csv.DictReader((bench / "classify_pooling_valid.csv").open())}
    assert "vae:learned" in valid
    rows = list(csv.DictReader((bench / "classify_long.csv").open()))
    assert [row["k"] for row in rows if row["features"] == "vae+finetune"] == ["all"]
    test = {row["features"] for row in rows}
    (extra,) = test - {"vae", "mfcc", "vae+finetune"}  # the other kind of pooling than the chosen one
    title = (bench / "classify.md").read_text().splitlines()[0]
    assert len(test) == 4 and f": {extra})" in title and "'learned'" in title  # learned is one of the two


def test_extra_manifests_are_mixed_in(trained, tmp_path):
    from audiovae.registry import load as load_model
    from audiovae.train.embedder import _caches
    from audiovae.train.latents import read_cache

    folder, cfg, run = trained
    (tmp_path / "extra").mkdir()
    extra = make_corpus(tmp_path / "extra")
    mixed = cfg.__class__(**{**cfg.__dict__, "latents": str(run / "latents"), "extra_manifests": [str(extra)],
                             "extra_max_clips": 2})
    model = load_model(folder)
    caches = _caches(mixed, model, tmp_path / "run", progress=False)
    for split in ("train", "valid"):
        own = read_cache(run / "latents" / f"{split}.safetensors", model, {})
        assert len(caches[split].lengths) == len(own.lengths) + 2
        assert torch.equal(caches[split].frames[: len(own.frames)], own.frames)
        assert (tmp_path / "run" / "latents" / f"extra0-{split}.safetensors").exists()


def test_speed_perturbed_versions(trained, tmp_path):
    """``speeds``: each train clip (own corpus and extra) is encoded again played faster / slower, one cache per
    speed, clip for clip; the views of a pair are crops of versions drawn at random; a resumed run reuses them."""
    from audiovae.registry import load as load_model
    from audiovae.train.embedder import _caches
    from audiovae.train.latents import cache_key, cache_meta, read_cache, write_cache

    folder, cfg, run = trained
    (tmp_path / "extra").mkdir()
    sped = cfg.__class__(**{**cfg.__dict__, "extra_manifests": [str(make_corpus(tmp_path / "extra"))],
                            "extra_max_clips": 2, "speeds": [0.8, 1.25]})
    model = load_model(folder)
    caches = _caches(sped, model, tmp_path / "run", progress=False)
    base = caches["train"].lengths
    for speed in (0.8, 1.25):
        lengths = caches[f"train@{speed:g}"].lengths
        assert len(lengths) == len(base)
        ratio = (base.sum() / lengths.sum()).item()
        assert abs(ratio - speed) < 0.05 * speed  # played `speed` times faster: that many times fewer frames
    assert (tmp_path / "run" / "latents" / "extra0-train@1.25.safetensors").exists()
    slow = caches["train@0.8"].frames
    assert torch.equal(_caches(sped, model, tmp_path / "run", progress=False)["train@0.8"].frames, slow)  # reused
    legacy = {k: v for k, v in cache_meta(model, Path(cfg.manifest), "train", None, 0).items() if k != "speed"}
    write_cache(tmp_path / "legacy.safetensors", caches["train"], legacy)  # written before speeds existed
    assert read_cache(tmp_path / "legacy.safetensors", model, cache_key(model, cfg.manifest, "train")) is not None
    assert read_cache(tmp_path / "legacy.safetensors", model, cache_key(model, cfg.manifest, "train", 0.8)) is None

    reused = cfg.__class__(**{**cfg.__dict__, "latents": str(run / "latents"), "max_clips": 2, "speeds": [1.25]})
    with pytest.raises(AudioVAEError, match="2 train clips at speed 1.25, .* in the train cache .*max_clips"):
        _caches(reused, model, tmp_path / "run3", progress=False)  # the reused caches hold every clip

    clips = [torch.full((30, 2), float(i)) for i in range(3)]
    versions = [[torch.full((20, 2), 10.0 + i) for i in range(3)]]
    pairs = PairDataset(clips, 5, 5, train=True, seed=0, versions=versions)
    for i in range(3):
        seen = {float(view[0, 0]) for _ in range(20) for view in pairs[i]}
        assert seen == {i, 10.0 + i}  # both versions of clip i, never another clip
    with pytest.raises(AudioVAEError, match="every version needs 3 clips"):
        PairDataset(clips, 5, 5, train=True, versions=[clips[:2]])
    train_embedder(sped, tmp_path / "run", progress=False)


def test_flow_prior_fine_tuned_with_embedding_style(trained, tmp_path):
    from audiovae.generate import Generator
    from audiovae.models.flow_prior import FlowPrior
    from audiovae.models.prior import PriorConfig
    from audiovae.registry import save_prior
    from audiovae.train.prior import PriorTrainConfig, export_prior, train_prior
    from tests.test_generate import TINY_FLOW

    folder, cfg, _ = trained
    model = shutil.copytree(folder, tmp_path / "model")
    start = FlowPrior(PriorConfig(latent_dim=4, num_labels=2, **TINY_FLOW))
    start.set_stats(torch.randn(50, 4))
    save_prior(load(model), start, {"labels": ["high", "low"], "label_key": "pitch"})
    prior_cfg = PriorTrainConfig(model=str(model), manifest=cfg.manifest, label="pitch", min_label_clips=1,
                                 init=str(model), prior=PriorConfig(style="embed", **TINY_FLOW), batch_frames=64,
                                 max_steps=2, val_every=2, warmup_steps=1, log_every=1)
    last = train_prior(prior_cfg, tmp_path / "run", progress=False)
    trained_state = torch.load(last, weights_only=True)["state_dict"]
    weights = [k for k in start.state_dict() if not k.startswith(("latent_", "style"))]
    for k in weights:  # started from the stored network (two small steps away)
        torch.testing.assert_close(trained_state[f"prior.{k}"], start.state_dict()[k], atol=5e-3, rtol=0)
    assert not torch.allclose(trained_state["prior.latent_mean"], start.latent_mean)  # standardized by its own latents
    export_prior(last, model)
    gen = Generator(model)
    assert gen.prior.config.style_dim == TINY["dim"] and gen.prior.style_scale.abs().sum() > 0
    a = gen.sample(0.3, "low", seed=1)
    np.testing.assert_array_equal(a, gen.sample(0.3, "low", seed=1))
    assert not np.array_equal(a, gen.sample(0.3, "high", seed=1))


def test_finetuned_head_classifier_round_trip(trained, tmp_path):
    folder, _, _ = trained
    corpora = tiny_corpus(tmp_path / "corpora")
    manifest = corpora / "speech16k" / "manifest.jsonl"
    out = tmp_path / "clf"
    r = cli("classify", "fit", "--data", manifest, "--label", "speaker", "--model", folder, "--out", out,
            "--estimator", "logreg", "--finetune", 5)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["classifier.json", "classifier.npz", "head.safetensors"]
    clf = classify.Classifier.load(out)
    m = load(folder)
    base = load_embedder(m)[0].state_dict()
    assert clf.pooling == "learned" and clf.meta["finetune"]["steps"] == 5 and clf.dim == 6
    assert any(not torch.equal(v, base[k]) for k, v in clf.head.state_dict().items())  # it was trained
    assert torch.equal(classify.learned_embedder(m).state_dict()["out.weight"], base["out.weight"])  # model's kept

    items = classify.labelled_items(manifest, "speaker", "test")
    x, kept, _ = classify.embed_items(items, "vae", m, pooling="learned", embedder=clf.head)
    r = cli("classify", "eval", out, "--data", manifest, "--plot", tmp_path / "cm.png", "--model", folder)
    assert r.exit_code == 0, r.output
    expected = classify.evaluate([items[i].label for i in kept], clf.predict(x))["accuracy"]
    assert f"accuracy {expected:.3f}" in r.output
    own = classify.embed_items(items, "vae", m, pooling="learned")[0]
    assert not np.allclose(own, x)  # the classifier's head, not the model's

    data = bytearray((out / "head.safetensors").read_bytes())
    data[-1] ^= 1
    (out / "head.safetensors").write_bytes(bytes(data))
    assert_error(cli("classify", "predict", out, corpora, "--model", folder), "head.safetensors", "sha256")
    assert_error(cli("classify", "fit", "--data", manifest, "--label", "speaker", "--model", folder, "--out",
                     tmp_path / "x", "--finetune", 5, "--pooling", "all"), "--finetune", "--pooling learned")
    one = tmp_path / "one"  # refused before any fine-tuning
    for label, n in (("a", 3), ("b", 1)):
        (one / label).mkdir(parents=True)
        for i in range(n):
            sf.write(one / label / f"{i}.wav", tone(300.0 * (1 + i) * (1 + 9 * (label == "b")))[0], SR)
    assert_error(cli("classify", "fit", "--data", one, "--label", "parent-dir", "--model", folder, "--out",
                     tmp_path / "y", "--finetune", 5), "class 'b' has 1 example")
