"""Generation on tiny models: the prior's causality and cache, the flow prior, prior training and export, the
Generator API, the CLI commands, Fréchet distances and the listening page."""

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from audiovae.bench.generate import frechet_distance, frechet_gaussians
from audiovae.cli import app
from audiovae.config import ModelConfig, from_dict, to_dict
from audiovae.data.manifest import Entry, write_manifest
from audiovae.errors import AudioVAEError
from audiovae.generate import GenerateError, Generator, slerp, transfer
from audiovae.inference import reconstruct
from audiovae.models.flow_prior import FlowPrior, make_prior
from audiovae.models.prior import LatentPrior, PriorConfig
from audiovae.models.vae import VAE
from audiovae.registry import ModelLoadError, load, read_checkpoint, save, save_prior
from audiovae.train.prior import PriorTrainConfig, export_prior, train_prior

TINY_MODEL = {"enc_channels": 8, "enc_blocks": 1, "dec_channels": 8, "dec_blocks": 1, "latent_dim": 4}
TINY_PRIOR = {"d_model": 16, "layers": 2, "heads": 2, "context": 16, "mixtures": 2}
TINY_FLOW = {"kind": "flow", "d_model": 16, "layers": 2, "heads": 2, "context": 16, "attn_every": 1, "steps": 4}
runner = CliRunner()


def tiny_vae(folder: Path, name: str = "tiny", latent_dim: int = 4, sample_rate: int = 16000) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY_MODEL, "latent_dim": latent_dim, "sample_rate": sample_rate})
    return save(cfg, VAE(cfg).state_dict(), folder, name).parent


def with_random_prior(folder: Path, labels=("high", "low")) -> Path:
    model = load(folder)
    torch.manual_seed(1)
    prior = LatentPrior(PriorConfig(latent_dim=model.latent_dim, num_labels=len(labels), **TINY_PRIOR))
    prior.set_stats(torch.randn(200, model.latent_dim) * 0.5 + 0.1)
    save_prior(model, prior, {"labels": list(labels), "label_key": "pitch"})
    return folder


def make_corpus(root: Path) -> Path:
    """Tones labelled low / high: 8 train clips (0.6 s), 2 valid and 4 test clips (1 s)."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(14):
        split, dur = ("train", 0.6) if i < 8 else ("valid", 1.0) if i < 10 else ("test", 1.0)
        pitch = "low" if i % 2 else "high"
        t = np.arange(int(16000 * dur)) / 16000
        f = (220 if pitch == "low" else 1500) + 20 * i
        sf.write(root / f"tone{i}.wav", (0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size))
                 .astype(np.float32), 16000, subtype="PCM_16")
        entries.append(Entry(id=f"t{i}", path=f"tone{i}.wav", offset=0.0, duration=dur, sample_rate=16000,
                             split=split, source="synthetic", license="CC0-1.0", labels={"pitch": pitch}))
    return write_manifest(root / "manifest.jsonl", entries)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return with_random_prior(tiny_vae(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def gen(model_dir) -> Generator:
    return Generator(model_dir)


def tone(sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[None], channels, 0).astype(np.float32)


# The prior


def test_prior_is_causal():
    torch.manual_seed(0)
    prior = LatentPrior(PriorConfig(latent_dim=4, num_labels=2, **TINY_PRIOR)).eval()
    x = torch.randn(2, 12, 4)
    labels = torch.tensor([0, 2])
    before = prior(x, labels)
    y = x.clone()
    y[:, 7:] = torch.randn(2, 5, 4)  # frames 7.. change: the predictions of frames 0..7 must not
    after = prior(y, labels)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a[:, :8], b[:, :8])
        assert not torch.allclose(a[:, 8:], b[:, 8:])


def reference_sample(prior: LatentPrior, frames: int, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Sampling without a cache: the whole window is recomputed for every frame (same windowing rule)."""
    from audiovae.models.prior import _sample_mixture

    ctx, seq, start = prior.config.context, [], 0
    for _ in range(frames):
        if 1 + len(seq) - start > ctx:
            start = len(seq) - ctx // 2
        window = torch.stack(seq[start:], 1) if len(seq) > start else torch.zeros(len(labels), 0, 4)
        tokens = torch.cat([prior.label(labels)[:, None], prior.inp(window)], 1)
        params = prior._params(prior._run(tokens, 0, None)[0][:, -1])
        seq.append(_sample_mixture(*params, 1.0, gen))
    return torch.stack(seq, 1)


def test_cached_sampling_equals_full_recompute():
    torch.manual_seed(0)
    prior = LatentPrior(PriorConfig(latent_dim=4, num_labels=2, **{**TINY_PRIOR, "context": 8})).eval()
    labels = torch.tensor([1])
    with torch.no_grad():
        x = torch.randn(1, 7, 4)  # step-by-step hidden states equal one full pass
        full, _ = prior._run(torch.cat([prior.label(labels)[:, None], prior.inp(x)], 1), 0, None)
        h, cache = prior.prefill(labels, x[:, :3])
        steps = [h]
        for t in range(3, 7):
            h, cache = prior.step(x[:, t], t + 1, cache)
            steps.append(h)
        torch.testing.assert_close(torch.stack(steps, 1), full[:, 3:], atol=1e-5, rtol=1e-5)
        # 20 frames with a context of 8 tokens: the cache is rebuilt several times
        cached = prior.sample(20, labels, generator=torch.Generator().manual_seed(3))
        ref = reference_sample(prior, 20, labels, torch.Generator().manual_seed(3))
    torch.testing.assert_close(cached, ref, atol=1e-4, rtol=1e-4)


# The flow prior


def test_flow_padding_does_not_leak():
    torch.manual_seed(0)
    prior = FlowPrior(PriorConfig(latent_dim=4, num_labels=2, **TINY_FLOW)).eval()
    for p in prior.parameters():  # past the zero init of the gates and the head
        torch.nn.init.normal_(p, std=0.3)
    x, t, labels = torch.randn(2, 12, 4), torch.tensor([0.3, 0.8]), torch.tensor([0, 2])
    mask = torch.ones(2, 12)
    mask[1, 7:] = 0
    with torch.no_grad():
        padded = prior(x, t, labels, mask)
        alone = prior(x[1:, :7], t[1:], labels[1:])
    torch.testing.assert_close(padded[1, :7], alone[0], atol=1e-5, rtol=1e-5)


def test_flow_sampling_is_deterministic_guided_and_inpaints():
    torch.manual_seed(0)
    prior = FlowPrior(PriorConfig(latent_dim=4, num_labels=2, **TINY_FLOW)).eval()
    for p in prior.parameters():
        torch.nn.init.normal_(p, std=0.3)
    labels = torch.tensor([1])

    def draw(**kw):
        return prior.sample(9, labels, generator=torch.Generator().manual_seed(kw.pop("seed", 0)), **kw)

    a = draw()
    assert a.shape == (1, 9, 4) and torch.isfinite(a).all()
    assert torch.equal(a, draw()) and not torch.equal(a, draw(seed=1))
    assert not torch.allclose(a, draw(guidance=3.0)) and torch.equal(draw(guidance=3.0), draw(guidance=3.0))
    assert not torch.allclose(a, draw(temperature=0.5))
    prompt = torch.randn(1, 40, 4)
    cont = draw(prompt=prompt)
    assert cont.shape == (1, 9, 4) and not torch.allclose(cont, a)
    assert torch.equal(cont, draw(prompt=prompt[:, -16:]))  # only the last `context` frames condition it
    assert not torch.allclose(cont, draw(prompt=prompt[:, -16:] + 1))


def test_long_flow_samples_are_made_window_by_window():
    torch.manual_seed(0)
    prior = FlowPrior(PriorConfig(latent_dim=4, num_labels=2, **TINY_FLOW)).eval()  # context 16: windows of 64
    labels, prompt = torch.tensor([1]), torch.randn(1, 40, 4)

    def draw(frames, **kw):
        return prior.sample(frames, labels, generator=torch.Generator().manual_seed(0), **kw)

    long = draw(150)
    assert long.shape == (1, 150, 4) and torch.isfinite(long).all() and torch.equal(long, draw(150))
    assert torch.equal(long[:, :64], draw(64))  # the first window is a whole-clip sample of its length
    cont = draw(150, prompt=prompt)
    assert cont.shape == (1, 150, 4) and torch.equal(cont[:, :48], draw(48, prompt=prompt))
    # each later window continues the last `context` frames before it
    assert torch.equal(long[:, 64:112], prior.sample(48, labels, long[:, 48:64], generator=rng_after(64)))


def test_sampling_reports_its_progress_without_changing_the_result(gen):
    calls = []
    a = gen.sample(0.5, "high", seed=1, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 25) for i in range(1, 26)] and np.array_equal(a, gen.sample(0.5, "high", seed=1))
    torch.manual_seed(0)
    flow = FlowPrior(PriorConfig(latent_dim=4, num_labels=2, **TINY_FLOW)).eval()  # context 16: windows of 64
    labels, prompt = torch.tensor([1]), torch.randn(1, 40, 4)
    for frames, kw, windows in ((9, {}, 1), (150, {}, 3), (150, {"prompt": prompt}, 4)):  # prompted: 48 new a window
        calls.clear()
        x = flow.sample(frames, labels, generator=torch.Generator().manual_seed(0), progress=lambda *c: calls.append(c),
                        **kw)
        assert calls == [(i, 4 * windows) for i in range(1, 4 * windows + 1)]
        assert torch.equal(x, flow.sample(frames, labels, generator=torch.Generator().manual_seed(0), **kw))
    calls.clear()
    wave = tone(16000, 0.3)
    assert len(gen.interpolate(wave, 16000, wave, 16000, 3, lambda *c: calls.append(c))) == 3
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_flow_style_conditions_labelled_clips_and_is_drawn_per_label():
    torch.manual_seed(0)
    plain = FlowPrior(PriorConfig(latent_dim=4, num_labels=2, **TINY_FLOW)).eval()
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.3)
    styled = FlowPrior(PriorConfig(latent_dim=4, num_labels=2, style="embed", style_dim=3, **TINY_FLOW)).eval()
    missing, _ = styled.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["style.bias", "style.weight", "style_mean", "style_scale"]
    x, t, labels, style = torch.randn(2, 10, 4), torch.tensor([0.3, 0.6]), torch.tensor([0, 2]), torch.randn(2, 3)
    with torch.no_grad():  # the style projection starts at zero: a plain prior's behaviour
        torch.testing.assert_close(styled(x, t, labels, style=style), plain(x, t, labels))
        torch.nn.init.normal_(styled.style.weight, std=0.3)
        moved = styled(x, t, labels, style=style)
        assert not torch.allclose(moved[0], plain(x, t, labels)[0])
        torch.testing.assert_close(moved[1], plain(x, t, labels)[1])  # the null label has no style
    styles = torch.randn(20, 3) + 3 * (torch.arange(20) % 2)[:, None]
    styled.set_styles(styles, [i % 2 for i in range(20)])
    torch.testing.assert_close(styled.style_mean[1], styles[1::2].mean(0))
    drawn = styled.draw_style(torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))
    assert drawn[1].mean() > 1.5 > drawn[0].mean() and torch.equal(drawn[2], torch.zeros(3))
    a = styled.sample(9, torch.tensor([1]), guidance=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, styled.sample(9, torch.tensor([1]), guidance=2.0, generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(a, styled.sample(9, torch.tensor([0]), guidance=2.0,
                                               generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="label 1 has 1 clips"):
        styled.set_styles(styles[:3], [0, 1, 0])
    with pytest.raises(Exception, match="style works with kind 'flow' only"):
        PriorConfig(style="embed").validate()
    with pytest.raises(Exception, match="style must be 'embed' or empty"):
        PriorConfig(kind="flow", style="mood").validate()


def rng_after(frames: int, dim: int = 4) -> torch.Generator:
    """A seed-0 generator after drawing the noise of a ``frames``-frame window."""
    g = torch.Generator().manual_seed(0)
    torch.randn(1, frames, dim, generator=g)
    return g


def test_old_prior_configs_load_as_ar():
    written_before_flow = ("latent_dim", "num_labels", "d_model", "layers", "heads", "ff_mult", "context", "mixtures",
                           "label_dropout", "dropout")
    cfg = from_dict(PriorConfig, {k: v for k, v in to_dict(PriorConfig(**TINY_PRIOR)).items()
                                  if k in written_before_flow})
    assert cfg.kind == "ar" and cfg.guidance == 3.0 and type(make_prior(cfg)) is LatentPrior
    assert type(make_prior(PriorConfig(**TINY_FLOW))) is FlowPrior
    with pytest.raises(Exception, match="kind must be 'ar' or 'flow'"):
        PriorConfig(kind="diffusion").validate()


def test_flow_prior_trains_exports_and_generates(tmp_path):
    folder = tiny_vae(tmp_path / "model")
    cfg = PriorTrainConfig(model=str(folder), manifest=str(make_corpus(tmp_path)), label="pitch", min_label_clips=1,
                           prior=PriorConfig(**TINY_FLOW), batch_frames=64, max_steps=3, val_every=2,
                           warmup_steps=1, log_every=1)
    last = train_prior(cfg, tmp_path / "run", progress=False)
    assert "val/fm" in next((tmp_path / "run" / "logs").rglob("metrics.csv")).read_text().splitlines()[0]
    trained = torch.load(last, weights_only=True)["state_dict"]
    export_prior(last, folder, guidance=2.0)
    stored = json.loads((folder / "tiny.json").read_text())["prior"]["config"]
    assert stored["kind"] == "flow" and stored["guidance"] == 2.0
    g = Generator(folder)
    assert isinstance(g.prior, FlowPrior) and g.labels == ["high", "low"]
    for k, v in g.prior.state_dict().items():  # fp16 weights, fp32 latent statistics
        torch.testing.assert_close(v, trained[f"prior.{k}"], atol=0 if k.startswith("latent_") else 2e-3, rtol=1e-3)
    a = g.sample(0.3, "low", seed=1)
    assert a.shape == (1, 15 * 320) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, g.sample(0.3, "low", seed=1))
    np.testing.assert_array_equal(a, g.sample(0.3, "low", seed=1, guidance=2.0))  # the default set at export
    assert not np.array_equal(a, g.sample(0.3, "low", seed=1, guidance=1.0))
    y = g.continue_audio(tone(8000, 0.4), 8000, seconds=0.2, seed=3)
    assert y.shape == (1, (20 + 10) * 320)
    np.testing.assert_array_equal(y, g.continue_audio(tone(8000, 0.4), 8000, seconds=0.2, seed=3))


def stored_flow_prior(tmp_path: Path) -> tuple[Path, FlowPrior]:
    """A tiny VAE folder with a random flow prior of labels high / low stored beside it, and that prior."""
    folder = tiny_vae(tmp_path / "model")
    torch.manual_seed(2)
    start = FlowPrior(PriorConfig(latent_dim=4, num_labels=2, **TINY_FLOW))
    start.set_stats(torch.randn(50, 4))
    save_prior(load(folder), start, {"labels": ["high", "low"], "label_key": "pitch"})
    return folder, start


def test_flow_prior_fine_tunes_from_a_stored_prior(tmp_path):
    folder, start = stored_flow_prior(tmp_path)
    cfg = PriorTrainConfig(model=str(folder), manifest=str(make_corpus(tmp_path)), label="pitch", min_label_clips=1,
                           init=str(folder), prior=PriorConfig(**TINY_FLOW), batch_frames=64, max_steps=1,
                           val_every=1, warmup_steps=1, log_every=1, lr=1e-9)
    trained = read_checkpoint(train_prior(cfg, tmp_path / "run", progress=False), "prior.")[1]
    stats = ("latent_mean", "latent_std", "latent_cov")
    for k, v in start.state_dict().items():  # a tiny learning rate: still the stored prior's network (fp16 weights)
        if k not in stats:
            torch.testing.assert_close(trained[k], v, atol=2e-3, rtol=1e-3)
    # standardized by this run's latents, as without init, not by those the stored prior saw (another encoder's)
    fresh = read_checkpoint(train_prior(replace(cfg, init=None), tmp_path / "fresh", progress=False), "prior.")[1]
    for k in stats:
        assert torch.equal(trained[k], fresh[k])
        assert not torch.allclose(trained[k], getattr(start, k))
    with pytest.raises(AudioVAEError, match="has labels"):
        train_prior(replace(cfg, label=None), tmp_path / "run2", progress=False)
    with pytest.raises(AudioVAEError, match="another architecture"):
        train_prior(replace(cfg, prior=PriorConfig(**{**TINY_FLOW, "d_model": 8})), tmp_path / "run3", progress=False)
    plain = tiny_vae(tmp_path / "plain")
    r = invoke("train-prior", "--model", plain, "--init", plain, "--manifest", cfg.manifest, "--label", "pitch",
               "--run-dir", tmp_path / "run4")
    assert r.exit_code == 1 and "has no prior model" in str(r.exception)


def test_a_guide_trains_beside_a_stored_prior_and_steers_labelled_sampling(tmp_path):
    folder, start = stored_flow_prior(tmp_path)
    guided = PriorConfig(**TINY_FLOW, guide_layers=2, guide_width=8)
    cfg = PriorTrainConfig(model=str(folder), manifest=str(make_corpus(tmp_path)), label="pitch", min_label_clips=1,
                           init=str(folder), prior=guided, train_flow=False, guide_attack=0.05, batch_frames=64,
                           max_steps=3, val_every=3, warmup_steps=1, log_every=1)
    last = train_prior(cfg, tmp_path / "run", progress=False)
    header = next((tmp_path / "run" / "logs").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/guide_acc" in header and "val/fm" not in header
    ck = torch.load(last, weights_only=True)
    for k, v in start.state_dict().items():  # the flow stays the stored one (fp16 weights)
        torch.testing.assert_close(ck["state_dict"][f"prior.{k}"], v, atol=2e-3, rtol=1e-3)
    optimized = ck["optimizer_states"][0]["param_groups"][0]["params"]
    assert len(optimized) == len(list(FlowPrior(replace(guided, latent_dim=4, num_labels=2)).guide.parameters()))
    export_prior(last, folder, classifier_guidance=5.0)
    g = Generator(folder)
    assert g.prior.config.classifier_guidance == 5.0
    a = g.sample(0.3, "low", seed=1)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, g.sample(0.3, "low", seed=1, classifier_guidance=5.0))
    assert not np.array_equal(a, g.sample(0.3, "low", seed=1, classifier_guidance=0.0))
    np.testing.assert_array_equal(g.sample(0.3, None, seed=1), g.sample(0.3, None, seed=1, classifier_guidance=0.0))
    y = g.continue_audio(tone(8000, 0.4), 8000, seconds=0.2, label="high", seed=3)
    assert y.shape == (1, (20 + 10) * 320) and np.isfinite(y).all()
    with pytest.raises(GenerateError, match="must be >= 0"):
        g.sample(0.3, "low", classifier_guidance=-1.0)
    for bad in (replace(cfg, prior=PriorConfig(**TINY_FLOW)), replace(cfg, init=None)):
        with pytest.raises(AudioVAEError, match="train_flow: false"):
            train_prior(bad, tmp_path / "run2", progress=False)
    for bad in (replace(cfg, guide_attack=-0.1), replace(cfg, train_flow=True, prior=PriorConfig(**TINY_FLOW))):
        with pytest.raises(AudioVAEError, match="guide_attack"):
            train_prior(bad, tmp_path / "run2", progress=False)
    with pytest.raises(Exception, match="needs a guide"):
        PriorConfig(**TINY_FLOW, classifier_guidance=1.0).validate()


def test_the_guides_adversarial_step_has_its_radius_on_real_frames_and_raises_its_loss():
    torch.manual_seed(0)
    prior = FlowPrior(replace(PriorConfig(**TINY_FLOW, guide_layers=2, guide_width=8), latent_dim=4, num_labels=3))
    x, t, labels = torch.randn(2, 10, 4), torch.tensor([0.3, 0.9]), torch.tensor([0, 2])
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    step = prior._attack(x, t, labels, mask, torch.tensor([0.01, 0.02]))
    assert step[1, 6:].abs().max() == 0
    rms = torch.stack([step[0].pow(2).mean().sqrt(), step[1, :6].pow(2).mean().sqrt()])
    torch.testing.assert_close(rms, torch.tensor([0.01, 0.02]))

    def loss(y):
        return torch.nn.functional.cross_entropy(prior.guide(y, t, mask), labels, reduction="none")
    assert (loss(x + step) > loss(x)).all()


def test_slerp_ends_and_norm():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    u, v = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.isclose(slerp(u, v, 0.5).norm(), torch.tensor(1.0))


# Training, export, loading


def test_train_resume_export_and_hash_check(tmp_path):
    folder = tiny_vae(tmp_path / "model")
    cfg = PriorTrainConfig(model=str(folder), manifest=str(make_corpus(tmp_path)), label="pitch", min_label_clips=1,
                           prior=PriorConfig(**TINY_PRIOR), batch_frames=64, max_steps=3, val_every=2,
                           warmup_steps=1, log_every=1)
    run = tmp_path / "run"
    last = train_prior(cfg, run, progress=False)
    assert (run / "latents" / "train.safetensors").exists() and last.exists()
    with pytest.raises(Exception, match="already holds a run"):
        train_prior(cfg, run, progress=False)
    cache_time = (run / "latents" / "train.safetensors").stat().st_mtime_ns
    cfg.max_steps, cfg.val_every = 4, 1  # another checkpoint interval: still resumed into last.ckpt
    train_prior(cfg, run, resume=True, progress=False)
    assert (run / "latents" / "train.safetensors").stat().st_mtime_ns == cache_time  # encoded once, reused
    ck = torch.load(last, weights_only=True)
    assert ck["global_step"] == 4
    assert ck["hyper_parameters"]["encoder_sha256"] == load(folder).card["encoder_sha256"]
    assert not list((run / "checkpoints").glob("last-v*.ckpt"))
    export_prior(last, folder)
    card = json.loads((folder / "tiny.json").read_text())
    assert card["prior"]["labels"] == ["high", "low"] and card["prior"]["file"] == "tiny.prior.safetensors"
    g = Generator(folder)
    assert g.labels == ["high", "low"] and g.label_key == "pitch"
    assert g.sample(0.3, "low").shape == (1, 15 * 320)

    copy = shutil.copytree(folder, tmp_path / "copy")
    with (copy / "tiny.prior.safetensors").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\0")
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        Generator(copy)
    other = tiny_vae(tmp_path / "other")  # same name, other weights: the prior does not belong to them
    (other / "tiny.safetensors").write_bytes((folder / "tiny.safetensors").read_bytes())
    torch.manual_seed(5)
    save(load(other).config, VAE(load(other).config).state_dict(), other, "tiny")
    with pytest.raises(ModelLoadError, match=r"last\.ckpt: not a prior for model 'tiny', trained on the latents of "
                       r"another encoder \(encoder_sha256"):
        export_prior(last, other)


def test_model_without_prior_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="has no prior model: train one with `audiovae train-prior`"):
        Generator(tiny_vae(tmp_path))


# The Generator


def test_classifier_guidance_needs_a_guide(gen):
    with pytest.raises(GenerateError, match="has none"):
        gen.sample(0.3, "low", classifier_guidance=2.0)


def test_sample_is_deterministic_for_a_seed(gen):
    a = gen.sample(0.5, "high", seed=1)
    assert a.dtype == np.float32 and a.shape == (1, 25 * 320) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, gen.sample(0.5, "high", seed=1))
    assert not np.array_equal(a, gen.sample(0.5, "high", seed=2))
    assert not np.array_equal(a, gen.sample(0.5, "high", seed=1, guidance=1.0))
    assert gen.sample(0.5, None, temperature=0.5).shape == a.shape


@pytest.mark.parametrize("kwargs, message", [
    ({"label": "violin"}, r"unknown label 'violin' for model 'tiny' \(known: high, low\)"),
    ({"seconds": 0}, "seconds must be > 0 and <= 120"),
    ({"seconds": -1}, "seconds must be > 0"),
    ({"seconds": 1e6}, "seconds must be > 0 and <= 120"),
    ({"temperature": 0.0}, "temperature must be > 0"),
])
def test_bad_requests(gen, kwargs, message):
    with pytest.raises(GenerateError, match=message):
        gen.sample(**{"seconds": 0.2, **kwargs})


def test_continue_resamples_and_mixes_the_prompt(gen):
    y = gen.continue_audio(tone(8000, 0.4, channels=2), 8000, seconds=0.2, seed=3)
    assert y.shape == (1, (20 + 10) * 320)
    np.testing.assert_array_equal(y, gen.continue_audio(tone(8000, 0.4, channels=2), 8000, seconds=0.2, seed=3))
    with pytest.raises(GenerateError, match="shorter than one latent frame"):
        gen.continue_audio(tone(16000, 0.01), 16000, seconds=0.2)


def test_interpolate_starts_and_ends_at_the_inputs(gen):
    a, b = tone(16000, 0.5), tone(22050, 0.3) * 0.5
    clips = gen.interpolate(a, 16000, b, 22050, steps=4)
    assert len(clips) == 4 and all(c.shape == clips[0].shape for c in clips)
    n = gen.encode(b, 22050).shape[1]
    np.testing.assert_allclose(clips[0], gen.decode(gen.encode(a, 16000)[:, :n]), atol=1e-6)
    with pytest.raises(GenerateError, match="steps must be at least 2"):
        gen.interpolate(a, 16000, b, 22050, steps=1)


def test_arithmetic_moves_the_time_average(gen):
    a, b, c = tone(16000, 0.5), tone(22050, 0.3) * 0.5, tone(16000, 0.4) * 0.2
    same = gen.arithmetic(a, 16000, (b, 22050), (b, 22050))
    np.testing.assert_allclose(same, gen.decode(gen.encode(a, 16000)), atol=1e-6)
    za, zb, zc = gen.encode(a, 16000), gen.encode(b, 22050), gen.encode(c, 16000)
    moved = gen.arithmetic(a, 16000, (b, 22050), (c, 16000), scale=0.5)
    np.testing.assert_allclose(moved, gen.decode(za + 0.5 * (zc.mean(1, keepdim=True) - zb.mean(1, keepdim=True))),
                               atol=1e-6)
    assert moved.shape == same.shape and not np.allclose(moved, same)


def test_transfer_between_latent_spaces(tmp_path, model_dir):
    target = with_random_prior(tiny_vae(tmp_path, "wide", latent_dim=6, sample_rate=24000), labels=())
    x = tone(16000, 0.5, channels=2)
    y = transfer(x, 16000, model_dir, target)
    assert y.shape == (2, 12000) and np.isfinite(y).all()
    same = transfer(x, 16000, model_dir, model_dir)  # one model: the mapping is the identity
    np.testing.assert_allclose(same, reconstruct(load(model_dir), x, 16000), atol=1e-4)


# Evaluation


def test_frechet_distance_of_known_gaussians():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, 1.0])
    c1, c2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    assert frechet_gaussians(mu1, c1, mu2, c2) == pytest.approx(9.0 + (1 - 2) ** 2 + (2 - 1) ** 2)
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])  # same spectrum, rotated: sqrtm of a non-symmetric product
    assert frechet_gaussians(mu1, c1, mu1, rot @ c1 @ rot.T) == pytest.approx(2.0)
    x = np.random.default_rng(0).standard_normal((4000, 3))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x * 2 + 1) == pytest.approx(3.0 + 3.0, rel=0.05)


# The commands


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    return result


def test_cli_generate_continue_interpolate_transfer(tmp_path, model_dir):
    r = invoke("generate", "--model", model_dir, "--label", "low", "--seconds", 0.3, "-n", 2, "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "g").iterdir())
    assert [f.name for f in files] == ["tiny-low-seed0-0.wav", "tiny-low-seed0-1.wav"]
    x0, sr = sf.read(files[0])
    assert sr == 16000 and len(x0) == 15 * 320
    assert invoke("generate", "--model", model_dir, "--out", tmp_path / "one.wav", "--seed", 4).exit_code == 0
    r = invoke("generate", "--model", model_dir, "--out", tmp_path / "one.wav")
    assert "already exists" in str(r.exception)
    assert "unknown label 'x'" in str(invoke("generate", "--model", model_dir, "--label", "x", "--out",
                                             tmp_path / "x.wav").exception)
    assert not (tmp_path / "x.wav").exists()

    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, tone(44100, 0.4, 2).T, 44100)
    r = invoke("continue", prompt, "--model", model_dir, "--seconds", 0.2, "--out", tmp_path / "c.wav")
    assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "c.wav").frames == 30 * 320
    assert invoke("interpolate", prompt, tmp_path / "one.wav", "--model", model_dir, "--steps", 3,
                  "--out", tmp_path / "morph").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "morph").iterdir()) == ["step-0.wav", "step-1.wav", "step-2.wav"]
    r = invoke("arithmetic", prompt, "--minus", prompt, "--plus", tmp_path / "one.wav", "--model", model_dir,
               "--out", tmp_path / "a.wav")
    assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "a.wav").frames == sf.info(tmp_path / "c.wav").frames - 10 * 320
    r = invoke("arithmetic", prompt, "--minus", prompt, "--plus", tmp_path / "one.wav", "--model", model_dir,
               "--out", tmp_path / "a.wav")
    assert "already exists" in str(r.exception)
    r = invoke("transfer", prompt, "--model", model_dir, "--source", model_dir, "--out", tmp_path / "t.flac")
    assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "t.flac").samplerate == 16000


def test_cli_bench_generate_writes_tables_and_page(tmp_path, model_dir):
    manifest = make_corpus(tmp_path)
    page = tmp_path / "report.html"
    r = invoke("bench", "generate", "--model", model_dir, "--manifest", manifest, "--out", tmp_path / "b",
               "--html", page, "--transfer-to", tiny_vae(tmp_path / "plain"))
    assert "has no prior model" in str(r.exception) and not (tmp_path / "b").exists()  # refused before the work
    r = invoke("bench", "generate", "--model", model_dir, "--manifest", manifest, "--clips", 4, "--per-label", 2,
               "--out", tmp_path / "b", "--html", page, "--transfer-to", model_dir, "--arithmetic", "pitch")
    assert r.exit_code == 0, r.output
    moved = list(csv.DictReader((tmp_path / "b" / "generate_tiny_arithmetic.csv").open()))
    assert [row["clips"] for row in moved] == ["A (unchanged)", "A - B + C", "C (the target's clip)"]
    assert all(row["n"] == "40" and float(row["as_target"]) + float(row["as_source"]) <= 1 for row in moved)
    fd = (tmp_path / "b" / "generate_tiny_fd.csv").read_text()
    assert "learned prior" in fd and "N(0, I) prior" in fd and "real train (floor)" in fd
    acc = (tmp_path / "b" / "generate_tiny_accuracy.csv").read_text().splitlines()
    assert acc[0] == "label,generated,generated_accuracy,real_test,real_test_accuracy,decoded_test_accuracy," \
        "generated_accuracy_mfcc,real_test_accuracy_mfcc,decoded_test_accuracy_mfcc"
    assert [row.split(",")[0] for row in acc[1:]] == ["high", "low", "mean"]
    assert (tmp_path / "b" / "generate_tiny_accuracy.png").read_bytes().startswith(b"\x89PNG")
    text = page.read_text()
    assert text.count("data:audio/ogg;base64,") >= 10 and "data:image/jpeg;base64," in text and "Transfer" in text
    assert "Latent arithmetic" in text


def test_cli_bench_generate_measures_against_the_unseen_split(tmp_path, model_dir):
    import json

    manifest = make_corpus(tmp_path)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    unseen = [dict(r, split="unseen", id="u" + r["id"]) for r in rows if r["split"] == "test"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows + unseen))
    r = invoke("bench", "generate", "--model", model_dir, "--manifest", manifest, "--clips", 3, "--per-label", 1,
               "--split", "unseen", "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    fd = (tmp_path / "b" / "generate_tiny_fd_unseen.md").read_text()
    assert f"Fréchet distance to {min(3, len(unseen))} unseen clips" in fd and "real train (floor)" in fd
    assert not (tmp_path / "b" / "generate_tiny_fd.md").exists()
    r = invoke("bench", "generate", "--model", model_dir, "--manifest", manifest, "--clips", 3, "--per-label", 1,
               "--split", "unseen", "--probe-split", "unseen", "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "b" / "generate_tiny_accuracy.md").exists()  # the test split's files are left alone
    md = (tmp_path / "b" / "generate_tiny_accuracy_unseen_probe-unseen.md").read_text()
    assert "probes fitted on real unseen clips" in md
    acc = list(csv.DictReader((tmp_path / "b" / "generate_tiny_accuracy_unseen_probe-unseen.csv").open()))
    assert [row["label"] for row in acc] == ["high", "low", "mean"] and acc[-1]["generated"] == "2"
    one_label = [dict(r, labels={**r["labels"], "pitch": "high"}) for r in unseen]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows + one_label))
    r = invoke("bench", "generate", "--model", model_dir, "--manifest", manifest, "--clips", 3, "--per-label", 1,
               "--probe-split", "unseen", "--out", tmp_path / "c")
    assert "split 'unseen' has clips of 1 of the 2 values of 'pitch'" in str(r.exception)
