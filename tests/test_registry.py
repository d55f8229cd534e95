"""The encoder hash: what consumes latents (entropy model, prior, latent caches, prior checkpoints, classifiers)
follows the encoder, not the whole weights, so a decoder-only change keeps them; legacy entries still load."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from audiovae import classify
from audiovae.codec.stream import Codec, fit_for_model
from audiovae.config import to_dict
from audiovae.generate import Generator
from audiovae.models.prior import LatentPrior, PriorConfig
from audiovae.registry import ENCODER_CONFIG, ModelLoadError, copy_attachments, encoder_sha256, load, save
from audiovae.train.latents import encode_split
from audiovae.train.prior import PriorTrainConfig, export_prior
from tests.test_codec import voice
from tests.test_generate import TINY_PRIOR, make_corpus, tiny_vae, with_random_prior

torch.set_num_threads(1)


def variant(src: Path, dst: Path, tensor: str) -> Path:
    """A copy of the model at ``src`` with ``tensor`` perturbed, saved (weights + card) as model 'tiny' in ``dst``."""
    m = load(src)
    state = m.state_dict()
    state[tensor] = state[tensor] + 0.05
    return save(m.config, state, dst, "tiny").parent


def probe(model) -> classify.Classifier:
    """A classifier recorded like `classify fit` records one (model name, sha256 and encoder_sha256)."""
    rng = np.random.default_rng(0)
    meta = {"features": "vae", "model": "tiny", "model_name": model.name, "model_sha256": model.card["sha256"],
            "encoder_sha256": model.card["encoder_sha256"], "pooling": "mean-std"}
    clf, _ = classify.fit(rng.standard_normal((12, classify.embedding_dim(model, "mean-std"))), ["a", "b"] * 6, meta,
                          estimators=("logreg",))
    return clf


def drop_encoder_hashes(folder: Path) -> None:
    """Rewrite a model's card as written before the encoder hash (attachments with vae_sha256 alone)."""
    card_path = folder / "tiny.json"
    card = json.loads(card_path.read_text())
    card.pop("encoder_sha256")
    for key in ("entropy", "prior"):
        card[key].pop("encoder_sha256")
    card_path.write_text(json.dumps(card, indent=2))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny model with an entropy model and a prior."""
    folder = with_random_prior(tiny_vae(tmp_path_factory.mktemp("base")))
    fit_for_model(load(folder), [voice(1.0, s) for s in range(2)], 16000)
    return folder


def test_encoder_hash_is_the_documented_bytes_and_ignores_the_decoder(base, tmp_path):
    model = load(base)
    card = json.loads((base / "tiny.json").read_text())
    assert card["encoder_sha256"] == model.card["encoder_sha256"]
    assert list(card).index("encoder_sha256") == list(card).index("sha256") + 1
    for key in ("entropy", "prior"):
        assert card[key]["vae_sha256"] == card["sha256"] and card[key]["encoder_sha256"] == card["encoder_sha256"]
    # recomputed from the docstring's description, with numpy
    h = hashlib.sha256(b"audiovae-encoder-v1\n")
    h.update(json.dumps({k: getattr(model.config, k) for k in ENCODER_CONFIG}, sort_keys=True,
                        separators=(",", ":")).encode() + b"\n")
    with safe_open(str(base / "tiny.safetensors"), "np") as f:
        for name in sorted(k for k in f.keys() if k.startswith("encoder.")):
            a = f.get_tensor(name)
            assert a.dtype == np.float16
            h.update(f"{name} F16 {','.join(map(str, a.shape))} {a.nbytes}\n".encode() + a.astype("<f2").tobytes())
    assert h.hexdigest() == card["encoder_sha256"]

    decoder = load(variant(base, tmp_path / "dec", "decoder.head.bias"))
    encoder = load(variant(base, tmp_path / "enc", "encoder.out.bias"))
    assert decoder.card["sha256"] != card["sha256"] and decoder.card["encoder_sha256"] == card["encoder_sha256"]
    assert encoder.card["encoder_sha256"] != card["encoder_sha256"]
    rate = replace(model.config, hop_length=160)  # same tensors, other frames: another encoder
    assert encoder_sha256(base / "tiny.safetensors", rate) != card["encoder_sha256"]


def test_shipped_encoder_hashes_are_recorded_and_match_the_weights():
    """Both shipped cards record the encoder hash (written with a later attachment); load checks it against the
    weights, and it is fixed: the same on every machine. Cards without it: drop_encoder_hashes tests."""
    from audiovae.registry import PRETRAINED_DIR

    for name, prefix in (("speech16k", "cfeee6f33fdf"), ("music24k", "02f5eaf953c0")):
        assert json.loads((PRETRAINED_DIR / f"{name}.json").read_text())["encoder_sha256"].startswith(prefix)
        assert load(name).card["encoder_sha256"].startswith(prefix)


def test_a_card_whose_encoder_hash_does_not_match_is_refused(base, tmp_path):
    folder = shutil.copytree(base, tmp_path / "m")
    card = json.loads((folder / "tiny.json").read_text())
    card["encoder_sha256"] = "ab" * 32
    (folder / "tiny.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"tiny\.json: encoder_sha256 abababababab\.\.\. does not match"):
        load(folder)


def test_decoder_only_change_keeps_entropy_prior_classifier_and_latent_cache(base, tmp_path):
    model = load(base)
    clf = probe(model)
    new = variant(base, tmp_path / "dec", "decoder.stack.blocks.0.pw2.weight")
    written = copy_attachments(model, load(new))
    assert sorted(p.name for p in written) == ["tiny.entropy.safetensors", "tiny.prior.safetensors"]
    card = json.loads((new / "tiny.json").read_text())
    assert card["prior"]["vae_sha256"] == model.card["sha256"] != card["sha256"]  # fitted with the base weights
    codec = Codec(str(new))
    x = voice(0.5)
    y = codec.decompress(codec.compress(x, 16000, quality=8))[0]
    assert y.shape[-1] == x.shape[-1]
    assert Generator(new).sample(0.2, "low", seed=0).shape == (1, 10 * 320)
    clf.check_model(load(new), "clf")

    corpus = make_corpus(tmp_path)
    cache = tmp_path / "latents.safetensors"
    first = encode_split(model, corpus, "train", "pitch", cache, progress=False)
    stamp = cache.stat().st_mtime_ns
    again = encode_split(load(new), corpus, "train", "pitch", cache, progress=False)
    assert cache.stat().st_mtime_ns == stamp  # reused: same encoder
    torch.testing.assert_close(again.frames, first.frames)


def test_encoder_change_is_refused_with_a_clear_error(base, tmp_path):
    model = load(base)
    clf = probe(model)
    new = variant(base, tmp_path / "enc", "encoder.proj.weight")
    other = load(new)
    with pytest.raises(ModelLoadError, match=r"model 'tiny' has another encoder than 'tiny'") as e:
        copy_attachments(model, other)
    assert "\n" not in str(e.value)
    card = json.loads((new / "tiny.json").read_text())  # attachments copied by hand
    for key in ("entropy", "prior"):
        shutil.copy(base / f"tiny.{key}.safetensors", new)
        card[key] = model.card[key]
    (new / "tiny.json").write_text(json.dumps(card))
    ours, theirs = model.card["encoder_sha256"][:12], other.card["encoder_sha256"][:12]
    for make, what in ((lambda: Codec(str(new)), "entropy"), (lambda: Generator(new), "prior")):
        with pytest.raises(ModelLoadError) as e:
            make()
        msg = str(e.value)
        assert "\n" not in msg and f"tiny.{what}.safetensors: the {what}" in msg and "'tiny'" in msg
        assert f"another encoder (encoder_sha256 {ours}..., the model's {theirs}...)" in msg
    with pytest.raises(classify.ClassifyError, match=rf"clf: classifier was fitted on the embeddings of model "
                       rf"'tiny', model 'tiny' has another encoder \(encoder_sha256 {ours}\.\.\., "
                       rf"the model's {theirs}\.\.\.\)"):
        clf.check_model(other, "clf")

    corpus = make_corpus(tmp_path)
    cache = tmp_path / "latents.safetensors"
    encode_split(model, corpus, "train", "pitch", cache, progress=False)
    stamp = cache.stat().st_mtime_ns
    encode_split(other, corpus, "train", "pitch", cache, progress=False)
    assert cache.stat().st_mtime_ns != stamp  # rebuilt: other latents


def test_legacy_entries_with_the_whole_weights_hash_still_work(base, tmp_path):
    old = shutil.copytree(base, tmp_path / "old")
    drop_encoder_hashes(old)
    model = load(old)  # the card's encoder hash is computed on load
    assert model.card["encoder_sha256"] == load(base).card["encoder_sha256"]
    Codec(str(old))
    Generator(old)
    clf = probe(model)
    clf.meta.pop("encoder_sha256")
    clf.check_model(model, "clf")

    new = variant(old, tmp_path / "dec", "decoder.head.bias")  # a decoder-only change, legacy entries copied by hand
    card = json.loads((new / "tiny.json").read_text())
    for key in ("entropy", "prior"):
        shutil.copy(old / f"tiny.{key}.safetensors", new)
        card[key] = json.loads((old / "tiny.json").read_text())[key]
    (new / "tiny.json").write_text(json.dumps(card))
    full_old, full_new = model.card["sha256"][:12], card["sha256"][:12]
    legacy = rf"other weights \(%s {full_old}\.\.\., the model's {full_new}"
    with pytest.raises(ModelLoadError, match="of 'tiny' was fitted on the latents of " + legacy % "vae_sha256"):
        Codec(str(new))
    with pytest.raises(classify.ClassifyError, match="model 'tiny' has " + legacy % "model_sha256"):
        clf.check_model(load(new), "clf")
    copy_attachments(model, load(new))  # checked against the weights they were fitted with, then upgraded
    Codec(str(new))
    Generator(new)
    folder = tmp_path / "clf"
    clf.save(folder)
    classify.Classifier.load(folder).record_encoder(model, folder)
    saved = json.loads((folder / "classifier.json").read_text())
    assert list(saved).index("encoder_sha256") == list(saved).index("model_sha256") + 1
    classify.Classifier.load(folder).check_model(load(new), folder)

    corpus = make_corpus(tmp_path)  # a latent cache written before the encoder hash is reused by its weights
    cache = tmp_path / "latents.safetensors"
    encode_split(model, corpus, "train", "pitch", cache, progress=False)
    with safe_open(str(cache), "pt") as f:
        meta = f.metadata()
    meta.pop("encoder_sha256")
    save_file(load_file(str(cache)), str(cache), metadata=meta)
    stamp = cache.stat().st_mtime_ns
    encode_split(model, corpus, "train", "pitch", cache, progress=False)
    assert cache.stat().st_mtime_ns == stamp


def prior_checkpoint(path: Path, folder: Path, **hashes) -> Path:
    """A prior training checkpoint as train-prior writes one, with the given hash fields in its hparams."""
    cfg = PriorTrainConfig(model=str(folder), manifest="corpus.jsonl", label="pitch",
                           prior=PriorConfig(latent_dim=4, num_labels=2, **TINY_PRIOR))
    prior = LatentPrior(cfg.prior)
    torch.save({"hyper_parameters": {"config": to_dict(cfg), "labels": ["high", "low"], **hashes},
                "state_dict": {f"prior.{k}": v for k, v in prior.state_dict().items()}, "global_step": 3}, path)
    return path


def test_prior_checkpoints_follow_the_encoder(base, tmp_path):
    model = load(base)
    dec = variant(base, tmp_path / "dec", "decoder.head.bias")
    enc = variant(base, tmp_path / "enc", "encoder.out.weight")
    new = prior_checkpoint(tmp_path / "new.ckpt", base, vae_sha256=model.card["sha256"],
                           encoder_sha256=model.card["encoder_sha256"])
    legacy = prior_checkpoint(tmp_path / "legacy.ckpt", base, vae_sha256=model.card["sha256"])
    export_prior(new, dec)
    entry = json.loads((dec / "tiny.json").read_text())["prior"]
    assert entry["encoder_sha256"] == model.card["encoder_sha256"] and entry["vae_sha256"] == load(dec).card["sha256"]
    Generator(dec)
    with pytest.raises(ModelLoadError, match=r"new\.ckpt: not a prior for model 'tiny', trained on the "
                       r"latents of another encoder \(encoder_sha256 "):
        export_prior(new, enc)
    export_prior(legacy, shutil.copytree(base, tmp_path / "same"))  # the very weights: accepted
    with pytest.raises(ModelLoadError, match=r"legacy\.ckpt: .* of other weights \(vae_sha256 "):
        export_prior(legacy, dec)


def test_export_cli_copies_the_attachments_of_a_model_with_the_same_encoder(base, tmp_path):
    from typer.testing import CliRunner

    from audiovae.cli import app

    model = load(base)
    state = model.state_dict()
    ckpt = tmp_path / "fine.ckpt"  # a decoder-only fine-tuning's checkpoint
    torch.save({"hyper_parameters": {"config": {"name": "fine", "model": to_dict(model.config)}},
                "state_dict": {f"vae.{k}": v + 0.01 if k.startswith("decoder.") else v for k, v in state.items()},
                "global_step": 7}, ckpt)
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(ckpt), str(tmp_path / "fine"), "--attachments-from", str(base)])
    assert result.exit_code == 0, result.output
    assert "fine.entropy.safetensors" in result.output and "fine.prior.safetensors" in result.output
    Codec(str(tmp_path / "fine"))
    Generator(tmp_path / "fine")
    state["encoder.out.bias"] = state["encoder.out.bias"] + 0.01
    torch.save({"hyper_parameters": {"config": {"name": "enc", "model": to_dict(model.config)}},
                "state_dict": {f"vae.{k}": v for k, v in state.items()}, "global_step": 7}, ckpt)
    result = runner.invoke(app, ["export", str(ckpt), str(tmp_path / "enc"), "--attachments-from", str(base)])
    assert isinstance(result.exception, ModelLoadError) and "has another encoder than 'tiny'" in str(result.exception)


def test_a_decoder_that_takes_over_the_entropy_model_decodes_the_earlier_weights_files(base, tmp_path):
    from audiovae.codec.stream import CodecError

    model = load(base)
    old_file = Codec(model).compress(voice(0.5), 16000, quality=8)
    new = variant(base, tmp_path / "dec", "decoder.stack.blocks.0.pw2.weight")
    copy_attachments(model, load(new))
    assert load(new).card["decodes_sha256"] == [model.card["sha256"]]
    y, sr = Codec(str(new)).decompress(old_file)
    assert sr == 16000 and y.shape == (1, 8000)
    newer = variant(new, tmp_path / "dec2", "decoder.stack.blocks.0.pw1.weight")
    copy_attachments(load(new), load(newer))  # the list carries over: the newest decodes every earlier file
    assert load(newer).card["decodes_sha256"] == [load(new).card["sha256"], model.card["sha256"]]
    Codec(str(newer)).decompress(old_file)
    other = variant(base, tmp_path / "other", "decoder.stack.blocks.0.pw1.weight")  # no entropy model taken over
    with pytest.raises(ModelLoadError):
        Codec(str(other))
    card = json.loads((newer / "tiny.json").read_text())
    card["decodes_sha256"] = "../x"
    (newer / "tiny.json").write_text(json.dumps(card))
    with pytest.raises((ModelLoadError, CodecError), match="decodes_sha256 must be a list of sha256 hex digests"):
        Codec(str(newer)).decompress(old_file)


def test_a_retrained_model_ships_under_its_name_and_the_files_of_the_earlier_one_still_decode(base, tmp_path,
                                                                                             monkeypatch):
    """keep_for_decoding keeps the shipped weights and entropy model in pretrained/earlier before a model with
    another encoder ships under the name; a file names its model and weights, and the decoder takes the version
    that wrote it."""
    import io

    from typer.testing import CliRunner

    from audiovae import registry
    from audiovae.cli import app
    from audiovae.codec.format import Reader
    from audiovae.codec.stream import CodecError
    from audiovae.registry import copy_model, keep_for_decoding, load_version

    shipped = tmp_path / "pretrained"
    copy_model(base, shipped)
    monkeypatch.setattr(registry, "PRETRAINED_DIR", shipped)
    monkeypatch.setattr(registry, "EARLIER_DIR", shipped / "earlier")
    first = load("tiny")
    old_file = Codec("tiny").compress(voice(0.5), 16000, quality=8)
    kept = keep_for_decoding("tiny")
    stem = f"tiny-{first.card['sha256'][:12]}"
    assert kept == shipped / "earlier" / f"{stem}.json"
    assert sorted(p.name for p in kept.parent.iterdir()) == [f"{stem}.entropy.safetensors", f"{stem}.json",
                                                             f"{stem}.safetensors"]  # no prior, no head
    assert load(kept).name == "tiny" and "prior" not in load(kept).card

    retrained = variant(base, tmp_path / "retrained", "encoder.out.bias")  # another encoder: other latents
    fit_for_model(load(retrained), [voice(1.0, s) for s in range(2)], 16000)
    copy_model(retrained, shipped)
    assert load("tiny").card["encoder_sha256"] != first.card["encoder_sha256"]
    new_file = Codec("tiny").compress(voice(0.5), 16000, quality=8)
    for data, weights in ((old_file, first.card["sha256"]), (new_file, load("tiny").card["sha256"])):
        codec = Codec.for_header(Reader(io.BytesIO(data)).header)
        assert codec.model.card["sha256"] == weights
    assert np.array_equal(Codec.for_header(Reader(io.BytesIO(old_file)).header).decompress(old_file)[0],
                          Codec(base).decompress(old_file)[0])  # exactly what the first version decodes
    with pytest.raises(CodecError, match="not with 'tiny'"):
        Codec("tiny").decompress(old_file)  # the current model alone
    (tmp_path / "old.avae").write_bytes(old_file)
    r = CliRunner().invoke(app, ["decompress", str(tmp_path / "old.avae"), str(tmp_path / "old.wav")])
    assert r.exit_code == 0, r.output
    other = json.loads(kept.read_text()) | {"sha256": "f" * 64}  # another earlier version, its weights absent:
    (kept.parent / "tiny-ffffffffffff.json").write_text(json.dumps(other))  # read first, by its card alone
    assert Codec.for_header(Reader(io.BytesIO(old_file)).header).model.card["sha256"] == first.card["sha256"]
    assert load_version("tiny", lambda m: False).card["sha256"] == load("tiny").card["sha256"]  # none: the current
    with pytest.raises(ModelLoadError, match="unknown model"):
        load_version(str(shipped / "earlier" / stem), lambda m: True)  # a file's model_id is never a path
