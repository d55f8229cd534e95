"""Each trainer runs a few steps with ``accelerator="gpu"`` and its export loads and runs on the CPU.
Skipped where no CUDA device is visible (CI); run with `pytest tests/test_gpu.py` on a GPU machine."""

import numpy as np
import pytest
import torch

from audiovae.classify import embed
from audiovae.generate import Generator
from audiovae.models.prior import PriorConfig
from audiovae.registry import export, load
from audiovae.train.config import load_train_config
from audiovae.train.embedder import export_embedder, train_embedder
from audiovae.train.prior import PriorTrainConfig, export_prior, train_prior
from audiovae.train.run import train
from tests.test_embedder import tiny_config
from tests.test_generate import TINY_FLOW, tiny_vae
from tests.test_generate import make_corpus as labelled_corpus
from tests.test_train import make_corpus, write_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_vae_stages_train_on_the_gpu(tmp_path):
    # stage 1 then stage 2 (discriminator), then a codec fine-tune with the rate-distortion steps
    manifest = make_corpus(tmp_path)
    cfg = load_train_config(write_config(tmp_path, manifest, adversarial_after=2, disc_channels=4))
    stage1 = export(train(cfg, tmp_path / "run", accelerator="gpu", progress=False), tmp_path / "stage1")
    cfg = load_train_config(write_config(tmp_path, manifest, max_steps=3, val_every=2, freeze_encoder=True,
                                         quant_noise={"prob": 1.0, "min_step": 0.5, "max_step": 2.0},
                                         rd={"enabled": True}))
    last = train(cfg, tmp_path / "rd", init=str(stage1), accelerator="gpu", progress=False)
    model = load(export(last, tmp_path / "export"))
    x = torch.randn(1, 8000) * 0.1
    y = model.reconstruct(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_flow_prior_and_embedder_train_on_the_gpu(tmp_path):
    folder = tiny_vae(tmp_path / "model")
    manifest = str(labelled_corpus(tmp_path))
    cfg = PriorTrainConfig(model=str(folder), manifest=manifest, label="pitch", min_label_clips=1,
                           prior=PriorConfig(**TINY_FLOW), batch_frames=64, max_steps=3, val_every=2,
                           warmup_steps=1, log_every=1)
    export_prior(train_prior(cfg, tmp_path / "prior", accelerator="gpu", progress=False), folder)
    export_embedder(train_embedder(tiny_config(str(folder), manifest, speeds=[1.25]), tmp_path / "embed",
                                   accelerator="gpu", progress=False), folder)  # with speed-perturbed views
    a = Generator(folder).sample(0.3, "low", seed=1)
    assert a.shape == (1, 15 * 320) and np.isfinite(a).all()
    assert embed(load(folder), a, 16000, pooling="learned").shape == (6,)
