"""Every training config (the shipped recipes and the experiments' recipes) loads and runs one tiny-width
training step with its own rates, losses and discriminator."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from audiovae.losses import ReconstructionLoss, kl_loss
from audiovae.models.discriminators import MultiScaleSTFTDiscriminator
from audiovae.models.vae import VAE
from audiovae.train.config import load_train_config

ROOT = Path(__file__).parents[1]
# experiments/STUDY/MODEL/NAME.yaml: the experiments' recipes, tested like the shipped ones
RECIPES = sorted([*(ROOT / "recipes").glob("*/*.yaml"), *(ROOT / "experiments").glob("*/*/*.yaml")])
# these take their model from --init
FROM_INIT = ("gan.yaml", "gan-gpu.yaml", "finetune-codec.yaml", "finetune-rd.yaml", "finetune-deeper.yaml",
             "finetune-logmag.yaml", "finetune-hq.yaml", "finetune-noise.yaml", "finetune-augment.yaml")
TRAIN_CONFIGS = [p for p in RECIPES if p.name in ("train.yaml", "train-gpu.yaml", *FROM_INIT)]


def test_every_shipped_model_has_a_training_config():
    assert {p.parent.name for p in TRAIN_CONFIGS} == {"speech16k", "music24k"}


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_runs_one_tiny_step(path):
    cfg = load_train_config(path)
    if path.name in FROM_INIT:
        base = load_train_config(ROOT / "recipes" / path.parent.name / "train.yaml").model
        cfg = replace(cfg, model=replace(base, noise_bands=cfg.model.noise_bands))  # what --init keeps of it
    assert cfg.data.sample_rate == cfg.model.sample_rate
    model_cfg = replace(cfg.model, enc_channels=8, enc_blocks=1, dec_channels=8, dec_blocks=1 + cfg.grow_decoder)
    torch.manual_seed(0)
    vae = VAE(model_cfg)
    n = int(cfg.data.crop_seconds * model_cfg.sample_rate) // model_cfg.hop_length * model_cfg.hop_length
    x = torch.randn(2, n) * 0.1
    post = vae.encode(x)
    valid = n - vae.latency
    y = vae.decode(post.sample())[:, :valid]
    loss, _ = ReconstructionLoss(cfg.loss, model_cfg.sample_rate)(y, x[:, :valid])
    loss = loss + cfg.loss.kl_weight * kl_loss(post, cfg.loss.free_bits)
    if cfg.adversarial_after >= 0:
        logits, _ = MultiScaleSTFTDiscriminator(cfg.disc_n_ffts, 4)(y)
        loss = loss + sum(-lg.mean() for lg in logits)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in vae.decoder.parameters())


def test_experiment_recipes_stay_out_of_recipes():
    """recipes/ holds the corpus recipes and the shipped models' recipes; an experiment's header says so."""
    for path in (ROOT / "recipes").glob("*/*.yaml"):
        assert "not shipped" not in path.read_text().split("\n", 1)[0], path


PRIOR_CONFIGS = [p for p in RECIPES if p.name.startswith("prior")]
EMBED_CONFIGS = [p for p in RECIPES if p.name == "embedder.yaml"]


@pytest.mark.parametrize("path", PRIOR_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_prior_recipe_trains_and_samples_at_tiny_width(path):
    from audiovae.models.flow_prior import make_prior
    from audiovae.train.prior import load_prior_config

    cfg = load_prior_config(path)
    heads = cfg.prior.heads
    prior = make_prior(replace(cfg.prior, latent_dim=4, num_labels=3, d_model=4 * heads, context=16,
                               style_dim=6 if cfg.prior.style else 0, guide_width=8))
    x, labels = torch.randn(2, 12, 4), torch.tensor([0, 2])
    loss = prior.loss(x, labels, **({"style": torch.randn(2, 6)} if cfg.prior.style else {}))
    guided = {}
    if cfg.prior.guide_layers:
        loss = loss + prior.guide_loss(x, labels, attack=cfg.guide_attack)[0]
        guided = {"classifier_guidance": 5.0}
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        y = prior.sample(5, labels[:1], None, 1.0, cfg.prior.guidance, torch.Generator().manual_seed(0), **guided)
    assert y.shape == (1, 5, 4) and torch.isfinite(y).all()


@pytest.mark.parametrize("path", EMBED_CONFIGS, ids=lambda p: p.parent.name)
def test_embedder_recipe_runs_at_tiny_width(path):
    from audiovae.models.embedder import Embedder
    from audiovae.train.embedder import load_embed_config

    cfg = load_embed_config(path)
    assert cfg.min_crop <= cfg.max_crop
    emb = Embedder(replace(cfg.embedder, latent_dim=4, channels=8, dim=6, attention=4))
    out = emb(torch.randn(2, 4, 30))
    assert out.shape == (2, 6) and torch.isfinite(out).all()
