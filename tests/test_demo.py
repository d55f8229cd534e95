import numpy as np
import torch
from rich.console import Console

from audiovae import registry
from audiovae.classify import fit
from audiovae.codec.stream import fit_for_model
from audiovae.config import ModelConfig
from audiovae.demo import ASSETS, run_demo
from audiovae.models.vae import VAE
from tests.test_generate import with_random_prior


def test_demo_runs_end_to_end_with_a_shipped_model(tmp_path, monkeypatch):
    """The demo on the shipped clips, with a tiny stand-in for the shipped speech16k model."""
    models = tmp_path / "pretrained"
    cfg = ModelConfig(enc_channels=8, enc_blocks=1, dec_channels=8, dec_blocks=1, latent_dim=4)
    torch.manual_seed(0)
    registry.save(cfg, VAE(cfg).state_dict(), models, "speech16k")
    fit_for_model(registry.load(models), [np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1],
                  16000)
    rng = np.random.default_rng(0)
    clf, _ = fit(rng.standard_normal((12, 8)), ["cs", "nl"] * 6, {"model": "speech16k", "features": "vae"})
    clf.save(models / "speech16k-language")
    with_random_prior(models, labels=("cs", "en"))
    monkeypatch.setattr(registry, "PRETRAINED_DIR", models)
    console = Console(record=True, width=120)
    calls = []
    run_demo(tmp_path / "out", console, lambda *c: calls.append(c))
    text = console.export_text()
    clips = sorted(ASSETS.glob("speech16k_*.flac"))
    total = len(list(ASSETS.glob("*.flac"))) + 2  # each clip, the classification, the generation
    assert calls == [(i, total) for i in range(1, total + 1)]
    assert clips and "codec --kbps 6" in text and "posterior mean" in text
    assert text.count("language of speech16k_") == len(clips)
    assert "in 'cs' from the latent prior" in text and (tmp_path / "out" / "generated_cs.wav").exists()
    for clip in clips:
        for suffix in ("_reconstructed.wav", "_6kbps.avae", "_6kbps.wav", "_6kbps.png", ".png"):
            assert (tmp_path / "out" / f"{clip.stem}{suffix}").exists()
