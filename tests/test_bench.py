import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import butter, sosfilt

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
    assert len(rows) == 2 and {"pesq_wb", "stoi", "si_sdr", "mel_distance", "ripple_ratio"} <= set(rows[0])
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


def test_codec_benchmark_rows_summary_and_plot(tmp_path):
    from audiovae.codec.stream import Codec, fit_for_model
    from audiovae.registry import load, save

    torch.manual_seed(0)
    save(TINY, VAE(TINY).state_dict(), tmp_path / "m", "tiny")
    manifest = make_corpus(tmp_path)  # the benchmark takes clips of 2 s or more: make the valid ones 2 s
    manifest.write_text(manifest.read_text().replace('"duration": 1.0', '"duration": 2.0'))
    wave = (np.sin(np.arange(32000) / 10.0) * 0.3).astype(np.float32)
    for name in ("tone8.wav", "tone9.wav"):
        sf.write(tmp_path / name, wave, 16000, subtype="PCM_16")
    fit_for_model(load(tmp_path / "m"), [wave], 16000)
    codec = Codec(str(tmp_path / "m"))
    rows = bench.codec_benchmark(codec, manifest, split="valid", max_clips=1,
                                 conditions=bench.codec_conditions(codec.model, [6.0], classics=False))
    assert [r["codec"] for r in rows] == ["posterior-mean", "audiovae"]
    assert math.isnan(rows[0]["kbps"]) and 0 < rows[1]["kbps"] <= 6.0
    assert {"pesq_wb", "stoi", "visqol", "si_sdr", "mel_distance", "ripple_ratio"} <= set(rows[1])
    summary = bench.summarize_codec(rows)
    assert summary[1]["codec"] == "audiovae" and summary[1]["target_kbps"] == 6.0
    assert bench.plot_rate_quality(summary, tmp_path, "tiny codec").stat().st_size > 1000
    from typer.testing import CliRunner

    from audiovae.cli import app

    r = CliRunner().invoke(app, ["bench", "codec", "--model", str(tmp_path / "m"), "--manifest", str(manifest),
                                 "--split", "valid", "--clips", "1", "--kbps", "6", "--no-classics", "--out",
                                 str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "b").glob("*.png")) == ["tiny_rate_quality_valid.png"]  # not test's
    assert "Targets:" in (tmp_path / "b" / "codec_tiny_valid.md").read_text()


def test_fullband_benchmark_compares_with_and_without_extension(tmp_path):
    from audiovae.codec.stream import Codec, fit_for_model
    from audiovae.registry import load, save

    torch.manual_seed(0)
    save(TINY, VAE(TINY).state_dict(), tmp_path / "m", "tiny")
    rng = np.random.default_rng(0)
    wave = (np.sin(np.arange(96000) / 30.0) * 0.3 + 0.02 * rng.standard_normal(96000)).astype(np.float32)
    (tmp_path / "music").mkdir()
    sf.write(tmp_path / "music" / "a.wav", wave, 48000, subtype="PCM_16")
    sf.write(tmp_path / "music" / "b.wav", wave[:48000], 48000, subtype="PCM_16")  # 1 s: too short for ViSQOL
    fit_for_model(load(tmp_path / "m"), [wave[::3]], 16000)
    codec = Codec(str(tmp_path / "m"))
    figure = tmp_path / "spectrograms.png"
    rows = bench.fullband_benchmark(codec, tmp_path / "music", seconds=2.0, ours_kbps=(6.0,), classics=False,
                                    figure=figure)
    assert [r["codec"] for r in rows] == ["audiovae", "audiovae-no-extend"] and rows[0]["sample_rate"] == 48000
    assert {r["clip"] for r in rows} == {"a"}
    assert 0 < rows[0]["ext_kbps"] < rows[0]["kbps"] <= 6.0 and rows[1]["ext_kbps"] == 0
    assert rows[0]["band_error_db"] < rows[1]["band_error_db"]  # the band above 8 kHz is there
    assert bench.summarize_codec(rows)[0]["ext_kbps"] == rows[0]["ext_kbps"] and figure.stat().st_size > 1000
    with pytest.raises(AudioVAEError, match="no audio files"):
        bench.fullband_benchmark(codec, tmp_path / "m")

def test_band_error_ignores_what_is_quiet_in_the_original():
    """A band 60 dB below the loudest (a speech clip's empty top band) and a pause are not compared: leaving them
    silent costs nothing, while a loud band's level error counts in full."""
    sr, rng = 48000, np.random.default_rng(0)
    n = 2 * sr

    def band(lo, hi, gain):
        return gain * sosfilt(butter(8, [lo, hi], "bandpass", fs=sr, output="sos"), rng.standard_normal(n))

    loud = band(8200, 8800, 1.0)
    loud[sr : sr + sr // 4] *= 1e-4  # a pause, 80 dB down
    ref = loud + band(12200, 12800, 1e-3)  # 60 dB down
    assert bench.band_error_db(ref, loud, sr, 8000, 13000) < 0.5  # the quiet band and the pause left silent
    assert bench.band_error_db(ref, loud * 10 ** (-6 / 20), sr, 8000, 13000) == pytest.approx(6.0, abs=0.5)
    assert math.isnan(bench.band_error_db(ref, loud, sr, 8005, 8010))


def test_codec_conditions_and_targets_cover_12_kbps():
    for cfg in (TINY, ModelConfig(sample_rate=24000, hop_length=480, enc_n_fft=960, n_fft=960)):
        ours = [k for name, k in bench.codec_conditions(VAE(cfg)) if name == "audiovae"]
        assert {9.0, 12.0} <= set(ours) and ("opus", 12) in bench.codec_conditions(VAE(cfg))
        assert bench.codec_conditions(VAE(cfg), [3], classics=False) == [("posterior-mean", 0.0), ("audiovae", 3.0)]
    summary = [{"codec": "audiovae", "target_kbps": 3.0, "kbps": 2.8, "pesq_wb": 1.7, "visqol": 2.1},
               {"codec": "audiovae", "target_kbps": 4.5, "kbps": 4.2, "pesq_wb": 2.5, "visqol": 2.7},
               {"codec": "audiovae", "target_kbps": 12.0, "kbps": 11.4, "pesq_wb": 2.9, "visqol": 3.5},
               {"codec": "codec2", "target_kbps": 3.2, "kbps": 3.21, "pesq_wb": 1.5, "visqol": 2.05},
               {"codec": "opus", "target_kbps": 12.0, "kbps": 14.4, "pesq_wb": 3.0, "visqol": 3.67}]
    lines = bench.codec_targets(summary, 16000)
    assert lines[0] == ("met: audiovae at <= 3.2 kbps above codec2 3.2 kbps on pesq_wb and visqol "
                        "(2.80 vs 3.21 kbps measured: pesq_wb 1.7 vs 1.5, visqol 2.1 vs 2.05)")
    assert lines[1].startswith("not measured: audiovae at <= 6 kbps above opus 6 kbps")
    assert lines[2].startswith("not measured: audiovae at <= 6 kbps above opus 8 kbps")
    assert lines[3].startswith("NOT met: audiovae at <= 12 kbps above opus 12 kbps on pesq_wb and visqol (11.40")
    music = bench.codec_targets([{**s, "pesq_wb": math.nan} for s in summary], 24000)
    assert music == ["NOT met: audiovae at <= 6 kbps above opus 12 kbps on visqol "
                     "(4.20 vs 14.40 kbps measured: visqol 2.7 vs 3.67)",
                     "NOT met: audiovae at <= 12 kbps above opus 12 kbps on visqol "
                     "(11.40 vs 14.40 kbps measured: visqol 3.5 vs 3.67)"]


def test_codec_targets_give_the_paired_difference_with_its_interval():
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        base = 2.0 + rng.random()
        rows += [{"clip": f"c{i}", "codec": "codec2", "nominal_kbps": 3.2, "kbps": 3.2, "pesq_wb": base,
                  "visqol": base},
                 {"clip": f"c{i}", "codec": "audiovae", "nominal_kbps": 3.0, "kbps": 2.9,
                  "pesq_wb": base + 0.1 + 0.05 * rng.standard_normal(), "visqol": base + 0.2 * rng.standard_normal()}]
    rows.append({**rows[-1], "clip": "only ours"})  # no pair: left out of the difference
    summary = bench.summarize_codec(rows)
    line = bench.codec_targets(summary, 16000, rows)[0]
    (d, lo, hi), _ = [map(float, found) for found in
                      re.findall(r"paired difference (\S+), 95 % CI ([-+][0-9.]+)\.\.([-+][0-9.]+)\)", line)]
    assert 0.07 < lo < d < hi < 0.13  # ours is better by 0.1 on every clip, give or take 0.05
    ours, base = (np.mean([r["pesq_wb"] for r in rows[k:80:2]]) for k in (1, 0))
    assert d == pytest.approx(ours - base, abs=5e-4)
    assert line == bench.codec_targets(summary, 16000, rows)[0]  # deterministic
    assert "paired" not in bench.codec_targets(summary, 16000)[0]


def test_ltas_ripple_sees_a_frame_rate_comb():
    from audiovae import metrics

    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000 * 3).astype(np.float32) * 0.1
    comb = np.tile(noise[:320], 150)  # repeats every 320 samples: lines at multiples of 50 Hz
    assert metrics.top_band(16000) == (4000, 7500)
    assert metrics.ltas_ripple(noise, 16000) < 2.0 < 8.0 < metrics.ltas_ripple(comb, 16000)
    assert metrics.ripple_ratio(noise, comb, 16000) > 4.0
    assert metrics.ripple_ratio(noise, noise, 16000) == pytest.approx(1.0)
