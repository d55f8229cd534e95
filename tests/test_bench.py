import math

import numpy as np
import pytest
import torch

from audiovae import bench
from audiovae.config import ModelConfig
from audiovae.errors import AudioVAEError
from audiovae.models.vae import VAE
from tests.test_train import make_corpus

TINY = ModelConfig(enc_channels=8, enc_blocks=1, dec_channels=8, dec_blocks=1, latent_dim=4)


def test_speed_and_throughput_are_measured():
    torch.manual_seed(0)
    m = VAE(TINY).eval()
    s = bench.speed(m, seconds=2.0, repeats=1)
    t = bench.training_throughput(m, batch=2, crop_seconds=0.25, steps=2)
    assert s["encode_x_realtime"] > 0 and s["decode_x_realtime"] > 0 and s["params_M"] > 0
    assert s["encode_decode_x_realtime"] < min(s["encode_x_realtime"], s["decode_x_realtime"])
    assert t["train_audio_s_per_s"] == pytest.approx(t["train_steps_per_min"] / 60 * 2 * 3840 / 16000)


def test_quality_summary_and_tables(tmp_path):
    manifest = make_corpus(tmp_path)
    m = VAE(TINY).eval()
    rows = bench.quality(m, manifest, split="valid", max_clips=5)
    assert len(rows) == 2 and {"pesq_wb", "stoi", "si_sdr", "mel_distance"} <= set(rows[0])
    summary = bench.summarize(rows)
    assert summary[0]["source"] == "all" and summary[0]["clips"] == 2
    assert summary[0]["mel_distance"] == pytest.approx(np.mean([r["mel_distance"] for r in rows]))
    csv_path, md = bench.write_table(summary, tmp_path / "out", "q", "title")
    assert csv_path.read_text().startswith("source,clips") and "| all | 2 |" in md.read_text()
    with pytest.raises(AudioVAEError, match="no entries in split 'nope'"):
        bench.quality(m, manifest, split="nope")


def test_summary_ignores_nan():
    rows = [{"source": "a", "si_sdr": 1.0, "mel_distance": 2.0, "pesq_wb": math.nan, "stoi": 0.5}]
    assert math.isnan(bench.summarize(rows)[0]["pesq_wb"])
