"""Training end to end on a tiny model and a synthetic corpus: fit, checkpoint, resume, export,
load (hash checked), fine-tune with --init, and CPU DDP with two processes."""

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from audiovae.config import ConfigError
from audiovae.data.manifest import Entry, write_manifest
from audiovae.models.vae import VAE
from audiovae.registry import ModelLoadError, export, load
from audiovae.train.config import load_train_config
from audiovae.train.run import train

TINY_MODEL = {"enc_channels": 8, "enc_blocks": 1, "dec_channels": 8, "dec_blocks": 1, "latent_dim": 4}


def make_corpus(root: Path, identical: bool = False) -> Path:
    """Eight 0.5 s tones (train) plus two 1 s clips (valid); with ``identical`` all train clips are one file."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(10):
        split, dur = ("train", 0.5) if i < 8 else ("valid", 1.0)
        name = "tone0.wav" if identical and split == "train" else f"tone{i}.wav"
        t = np.arange(int(16000 * dur)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t) + 0.01 * rng.standard_normal(t.size)
        if not (root / name).exists():
            sf.write(root / name, x.astype(np.float32), 16000, subtype="PCM_16")
        entries.append(Entry(id=f"t{i}", path=name, offset=0.0, duration=dur, sample_rate=16000, split=split,
                             source="synthetic", license="CC0-1.0", labels={"kind": "tone"}))
    return write_manifest(root / "manifest.jsonl", entries)


def write_config(root: Path, manifest: Path, **extra) -> Path:
    cfg = {"name": "tiny", "model": TINY_MODEL, "max_steps": 4, "val_every": 2, "val_clips": 2, "log_every": 1,
           "data": {"manifests": [str(manifest)], "batch_size": 2, "num_workers": 0, "eval_seconds": 1.0,
                    "gain_db": [0.0, 0.0], "polarity_flip": False}}
    cfg.update(extra)
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def gan_logged(run: Path) -> list[int]:
    with next((run / "logs").glob("version_*/metrics.csv")).open() as f:
        return [int(r["step"]) + 1 for r in csv.DictReader(f) if r.get("train/adv_g")]


def losses(run: Path) -> list[float]:
    rows = []
    for path in sorted((run / "logs").glob("version_*/metrics.csv")):
        with path.open() as f:
            rows += [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return rows


def test_train_resume_export_load_and_finetune(tmp_path):
    # adversarial_after=2: steps 3-4 run stage 2 (discriminator, feature matching, frozen encoder)
    cfg = load_train_config(write_config(tmp_path, make_corpus(tmp_path), adversarial_after=2, disc_channels=4))
    run = tmp_path / "run"
    last = train(cfg, run, progress=False)
    assert last.exists() and (run / "checkpoints" / "step0000002.ckpt").exists()
    assert len(losses(run)) == 4 and all(np.isfinite(losses(run)))
    assert gan_logged(run) == [3, 4]  # generator adversarial loss from step 3 on; discriminator every 2nd
    assert sorted(p.name for p in (run / "samples" / "step0000002").iterdir())[:2] == ["0.png", "0_decoded.wav"]

    with pytest.raises(Exception, match="already holds a run"):
        train(cfg, run, progress=False)
    train(replace(cfg, max_steps=6), run, resume=True, progress=False)
    assert torch.load(last, weights_only=True)["global_step"] == 6 and len(losses(run)) == 6

    card = export(last, tmp_path / "export")
    model = load(tmp_path / "export")
    assert model.latent_dim == 4 and json.loads(card.read_text())["steps"] == 6
    x = torch.randn(1, 8000) * 0.1
    assert model.reconstruct(x).shape == x.shape

    fine = train(replace(cfg, max_steps=2), tmp_path / "fine", init=str(tmp_path / "export"), progress=False)
    assert fine.exists()


def test_load_refuses_corrupt_mismatched_and_unknown(tmp_path):
    cfg = load_train_config(write_config(tmp_path, make_corpus(tmp_path), max_steps=1))
    card = export(train(cfg, tmp_path / "run", progress=False), tmp_path / "export")
    weights = card.with_suffix(".safetensors")

    meta = json.loads(card.read_text())
    meta["model"]["latent_dim"] = 8
    card.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="do not match the model architecture"):
        load(tmp_path / "export")

    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load(tmp_path / "export")
    with pytest.raises(ModelLoadError, match="unknown model 'nope' \\(available"):
        load("nope")
    with pytest.raises(ModelLoadError, match="not an audiovae training checkpoint"):
        (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
        export(tmp_path / "bad.ckpt", tmp_path / "x")


def test_config_errors_name_the_key(tmp_path):
    manifest = make_corpus(tmp_path)
    with pytest.raises(ConfigError, match="unknown config key 'data.batchsize'"):
        load_train_config(write_config(tmp_path, manifest, data={"batchsize": 3}))
    with pytest.raises(ConfigError, match="'max_steps': expected int"):
        load_train_config(write_config(tmp_path, manifest, max_steps="many"))


def test_cli_train_errors_are_one_line(tmp_path):
    path = write_config(tmp_path, make_corpus(tmp_path), optim={"lr": "fast"})
    out = subprocess.run([sys.executable, "-m", "audiovae.cli", "train", "--config", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "optim.lr" in out.stderr


@pytest.mark.slow
def test_cpu_ddp_two_processes_match_one(tmp_path):
    """Two gloo processes on identical batches average identical gradients: the losses equal a
    one-process run, and only rank 0 writes checkpoints."""
    config = write_config(tmp_path, make_corpus(tmp_path, identical=True), max_steps=3, val_every=100)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name, extra in (("single", []), ("ddp", ["--devices", "2", "--strategy", "ddp"])):
        cmd = [sys.executable, "-m", "audiovae.cli", "train", "--config", str(config), "--run-dir",
               str(tmp_path / name), "--threads", "1", *extra]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
    single, ddp = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert len(single) == len(ddp) == 3
    np.testing.assert_allclose(ddp, single, rtol=1e-4)
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["last.ckpt"]


def test_non_finite_losses_stop_training_with_a_message(tmp_path):
    from audiovae.errors import AudioVAEError
    from audiovae.train.module import MAX_BAD_STEPS, VAEModule

    cfg = load_train_config(write_config(tmp_path, make_corpus(tmp_path)))
    module = VAEModule(cfg)
    for _ in range(MAX_BAD_STEPS - 1):
        module._bad_step()
    with pytest.raises(AudioVAEError, match="non-finite loss .* last good checkpoint is kept"):
        module._bad_step()


def test_codec_finetune_keeps_the_encoder_and_trains_the_decoder(tmp_path):
    from audiovae.codec.entropy import step_multipliers
    from audiovae.codec.stream import fit_for_model
    from audiovae.registry import read_checkpoint, save

    manifest = make_corpus(tmp_path)
    cfg = load_train_config(write_config(tmp_path, manifest, max_steps=3, val_every=100, freeze_encoder=True,
                                         quant_noise={"prob": 1.0, "min_step": 0.5, "max_step": 2.0},
                                         rd={"enabled": True}))
    with pytest.raises(Exception, match="freeze_encoder trains the decoder alone: give --init"):
        train(cfg, tmp_path / "no-init", progress=False)
    torch.manual_seed(0)
    save(cfg.model, VAE(cfg.model).state_dict(), tmp_path / "init", "tiny")
    start = load(tmp_path / "init").state_dict()  # fp16-rounded, as the shipped weights
    last = train(cfg, tmp_path / "run", init=str(tmp_path / "init"), progress=False)
    _, state, _ = read_checkpoint(last)
    assert all(torch.equal(state[k], v) for k, v in start.items() if k.startswith("encoder."))
    assert not all(torch.equal(state[k], v) for k, v in start.items() if k.startswith("decoder."))
    # the trained per-channel steps reach the card, and the entropy model fitted on the exported model
    _, rd, _ = read_checkpoint(last, "rd.")
    assert rd["a"].abs().sum() > 0 and rd["dual"].shape == (cfg.rd.bins,)
    model = load(export(last, tmp_path / "out"))
    scales = model.card["step_scales"]
    assert len(scales["a"]) == cfg.model.latent_dim and abs(sum(scales["a"])) < 1e-5
    rng = np.random.default_rng(0)
    entropy = fit_for_model(model, [rng.standard_normal(8000).astype(np.float32) * 0.1], 16000)
    assert np.allclose(entropy.multipliers, step_multipliers(scales["a"], scales["b"]))
    assert not np.allclose(entropy.multipliers, 1.0)


def test_adversarial_stage_keeps_the_per_channel_steps_of_its_init(tmp_path):
    # a codec-aware stage 2: decoder trained on the codec's noise (fixed steps of the --init model) with the GAN
    from audiovae.registry import read_checkpoint, save

    manifest = make_corpus(tmp_path)
    cfg = load_train_config(write_config(tmp_path, manifest, max_steps=3, val_every=100, freeze_encoder=True,
                                         adversarial_after=0, disc_channels=4,
                                         quant_noise={"prob": 1.0, "min_step": 0.5, "max_step": 2.0},
                                         rd={"enabled": True, "train": False}))
    torch.manual_seed(0)
    save(cfg.model, VAE(cfg.model).state_dict(), tmp_path / "plain", "tiny")
    with pytest.raises(Exception, match="rd.train: false keeps the per-channel steps of --init, but .*plain has none"):
        train(cfg, tmp_path / "no-steps", init=str(tmp_path / "plain"), progress=False)
    steps = {"a": [0.3, -0.1, -0.2, 0.0], "b": [0.05, 0.0, -0.05, 0.0]}
    save(cfg.model, VAE(cfg.model).state_dict(), tmp_path / "init", "tiny", step_scales=steps)
    start = load(tmp_path / "init")
    last = train(cfg, tmp_path / "run", init=str(tmp_path / "init"), progress=False)
    assert gan_logged(tmp_path / "run") == [1, 2, 3]
    _, state, _ = read_checkpoint(last)
    assert all(torch.equal(state[k], v) for k, v in start.state_dict().items() if k.startswith("encoder."))
    assert not all(torch.equal(state[k], v) for k, v in start.state_dict().items() if k.startswith("decoder."))
    assert np.allclose(load(export(last, tmp_path / "out")).card["step_scales"]["a"], steps["a"])

    # an encoder fine-tuned without steps takes another model's (--steps-from): its own encoder, the donor's steps
    last = train(cfg, tmp_path / "run2", init=str(tmp_path / "plain"), steps_from=str(tmp_path / "init"),
                 progress=False)
    out = load(export(last, tmp_path / "out2"))
    assert np.allclose(out.card["step_scales"]["a"], steps["a"])
    assert out.card["encoder_sha256"] == load(tmp_path / "plain").card["encoder_sha256"]
    with pytest.raises(Exception, match="--steps-from .*plain: the model has no per-channel steps"):
        train(cfg, tmp_path / "run3", init=str(tmp_path / "init"), steps_from=str(tmp_path / "plain"),
              progress=False)
    wide = replace(cfg.model, latent_dim=6)
    save(wide, VAE(wide).state_dict(), tmp_path / "wide", "tiny", step_scales={"a": [0.0] * 6, "b": [0.0] * 6})
    with pytest.raises(Exception, match="--steps-from .*wide: 6 latent channels, --init has 4"):
        train(cfg, tmp_path / "run4", init=str(tmp_path / "plain"), steps_from=str(tmp_path / "wide"),
              progress=False)
    with pytest.raises(Exception, match="give it with --init, not with --resume"):
        train(cfg, tmp_path / "run2", resume=True, steps_from=str(tmp_path / "init"), progress=False)


def test_grown_decoder_starts_as_its_init_model_and_resumes(tmp_path):
    from audiovae.registry import read_checkpoint, save
    from audiovae.train.module import VAEModule
    from audiovae.train.run import load_grown

    manifest = make_corpus(tmp_path)
    cfg = load_train_config(write_config(tmp_path, manifest, max_steps=3, val_every=100, freeze_encoder=True,
                                         grow_decoder=2, quant_noise={"prob": 1.0, "min_step": 0.5, "max_step": 2.0},
                                         rd={"enabled": True, "train": False}))
    with pytest.raises(Exception, match="grow_decoder adds blocks to a trained decoder: give --init"):
        train(load_train_config(write_config(tmp_path, manifest, grow_decoder=2)), tmp_path / "no-init",
              progress=False)
    with pytest.raises(ConfigError, match="grow_decoder must be >= 0"):
        load_train_config(write_config(tmp_path, manifest, grow_decoder=-1))
    torch.manual_seed(0)
    flat = {"a": [0.0] * 4, "b": [0.0] * 4}
    save(cfg.model, VAE(cfg.model).state_dict(), tmp_path / "init", "tiny", step_scales=flat)
    start = load(tmp_path / "init")
    grown = VAEModule(replace(cfg, model=replace(cfg.model, dec_blocks=3))).vae
    load_grown(grown, start.state_dict(), 1)
    z = torch.randn(1, 4, 20)
    with torch.no_grad():
        assert torch.equal(grown.decode(z), start.decode(z))
    with pytest.raises(Exception, match="--init: the weights do not fit the model"):
        load_grown(grown, {k: v for k, v in start.state_dict().items() if k != "encoder.out.bias"}, 1)
    train(cfg, tmp_path / "run", init=str(tmp_path / "init"), progress=False)
    # a resume takes the architecture from its checkpoint: no --init, and the decoder is not grown twice
    last = train(replace(cfg, max_steps=5), tmp_path / "run", resume=True, progress=False)
    _, state, steps = read_checkpoint(last)
    assert steps == 5 and all(torch.equal(state[k], v) for k, v in start.state_dict().items()
                              if k.startswith("encoder."))
    assert state["decoder.stack.blocks.2.scale"].abs().sum() > 0  # the new blocks train
    assert load(export(last, tmp_path / "out")).config.dec_blocks == 3


def test_decoder_input_uses_quantization_noise():
    from audiovae.models.vae import Posterior
    from audiovae.train.config import QuantNoiseConfig
    from audiovae.train.module import decoder_input

    post = Posterior(torch.randn(64, 4, 50), torch.full((64, 4, 50), 1e-3))
    cfg = QuantNoiseConfig(prob=1.0, min_step=0.5, max_step=0.5)
    z, step, u = decoder_input(post, cfg, torch.Generator().manual_seed(0))
    noise = z - post.mean
    assert noise.abs().max() <= 0.25 and noise.std() == pytest.approx(0.5 / 12**0.5, rel=0.02)
    assert torch.allclose(step, torch.full((64,), 0.5)) and torch.allclose(noise, u * 0.5, atol=1e-6)
    scales = torch.tensor([1.0, 2.0, 0.5, 1.0])  # per-channel steps
    wide, _, _ = decoder_input(post, cfg, torch.Generator().manual_seed(0), lambda s: scales.expand(len(s), 4))
    assert torch.allclose(wide - post.mean, noise * scales[:, None], atol=1e-6)
    half, _, _ = decoder_input(post, QuantNoiseConfig(prob=0.5), torch.Generator().manual_seed(0))
    noisy = ((half - post.mean).abs() > 0.01).flatten(1).any(1)  # posterior samples stay within ~5e-3
    assert 16 < noisy.sum() < 48
    plain, step, u = decoder_input(post, QuantNoiseConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(plain, post.sample(torch.Generator().manual_seed(0))) and step is None and u is None


def test_rate_proxy_trains_and_dual_ascent_holds_the_rate():
    from audiovae.train.rd import RateDistortion

    torch.manual_seed(0)
    mean = torch.cumsum(torch.randn(16, 4, 40) * 0.3, -1) * torch.tensor([0.2, 0.5, 1.0, 2.0])[:, None]
    rd = RateDistortion(4, bins=2, min_step=0.1, max_step=1.0, dual_lr=0.5)
    opt = torch.optim.Adam(rd.parameters(), lr=0.05)
    rates = []
    for _ in range(150):
        step = torch.exp(torch.empty(16).uniform_(math.log(0.1), 0.0))
        u = torch.rand(mean.shape) - 0.5
        # a distortion that asks for a finer step on channel 0 and cares little about channel 3
        steps = step[:, None] * rd.scales(step)
        distortion = (steps**2 * torch.tensor([10.0, 1.0, 1.0, 0.1])).mean()
        rate, logs = rd.loss(mean, u, step)
        opt.zero_grad()
        (distortion + rate).backward()
        opt.step()
        rates.append(logs["rate_bits"].item())
    assert rates[-1] < 0.7 * rates[0]  # the proxy learned the latents' density
    assert rd.a[0] < 0 < rd.a[3]  # bits moved to the channel that matters
    assert logs["rate_ratio"].item() == pytest.approx(1.0, abs=0.1)  # at the rate of uniform steps


def test_codec_finetune_config_round_trips(tmp_path):
    from audiovae.config import from_dict, to_dict
    from audiovae.train.config import TrainConfig

    recipes = Path(__file__).parents[1] / "recipes" / "speech16k"
    recipe = load_train_config(recipes / "finetune-codec.yaml")
    assert recipe.freeze_encoder and recipe.quant_noise.prob == 0.75 and recipe.quant_noise.max_step == 2.83
    assert from_dict(TrainConfig, to_dict(recipe)) == recipe and not recipe.rd.enabled
    rd = load_train_config(recipes / "finetune-rd.yaml")
    assert rd.rd.enabled and rd.freeze_encoder and from_dict(TrainConfig, to_dict(rd)) == rd
    with pytest.raises(ConfigError, match="quant_noise: need 0 <= prob <= 1"):
        load_train_config(write_config(tmp_path, make_corpus(tmp_path), quant_noise={"prob": 1.5}))
    with pytest.raises(ConfigError, match="rd: needs quant_noise.prob > 0, freeze_encoder"):
        load_train_config(write_config(tmp_path, make_corpus(tmp_path), rd={"enabled": True}))


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_time_budget_is_per_start_and_writes_the_last_checkpoint(tmp_path):
    """--max-minutes stops this start (not the runs a resume restores) and leaves last.ckpt at that step."""
    from audiovae.train.common import time_budget

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=4)
    last = tmp_path / "last.ckpt"
    steps = []
    for resume in (False, True):
        trainer = L.Trainer(max_steps=1000, callbacks=time_budget(1e-9, last), logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(_Tiny(), data, ckpt_path=str(last) if resume else None)
        steps.append(torch.load(last, weights_only=True)["global_step"])
    assert steps == [1, 2]  # the resume trains one more step with its own (tiny) budget
    assert time_budget(None, last) == []
