import numpy as np
import pytest

from audiovae import metrics
from audiovae.codec import baselines
from audiovae.errors import AudioVAEError

SR = 16000


def voice_like(seconds=3.0):
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 20))
    return (0.2 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("codec,kbps,low,high", [("opus", 12, 6, 25), ("codec2", 3.2, 3.0, 3.5), ("mp3", 16, 14, 18)])
def test_roundtrip_measures_real_bitrate_and_keeps_length(codec, kbps, low, high):
    if baselines.missing_tools([codec]):
        pytest.skip(f"{codec} tools not installed")
    x = voice_like()
    coded = baselines.roundtrip(codec, x, SR, kbps)
    assert coded.audio.shape == x.shape and coded.bytes > 0
    assert low <= coded.kbps <= high
    assert metrics.mel_distance(x, coded.audio, SR) < metrics.mel_distance(x, np.zeros_like(x) + 1e-4, SR)
    assert metrics.stoi(x, coded.audio, SR) > 0.6  # aligned: the codec delay is removed


def test_align_removes_a_delay():
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    delayed = np.concatenate([np.zeros(1105, np.float32), x])[:8000]
    assert np.allclose(baselines.align(x, delayed)[:6000], x[:6000])
    assert np.allclose(baselines.align(x, x[300:])[300:7000], x[300:7000])
    short = x[:1600]  # shorter than the largest lag searched
    assert np.allclose(baselines.align(short, np.concatenate([np.zeros(40, np.float32), short]))[:1500], short[:1500])


def test_missing_tools_name_the_apt_package(monkeypatch):
    monkeypatch.setattr(baselines.shutil, "which", lambda name: None)
    assert baselines.missing_tools() == ["codec2", "lame", "opus-tools"]
    with pytest.raises(AudioVAEError, match="apt-get install opus-tools"):
        baselines.roundtrip("opus", voice_like(0.5), SR, 6)
    with pytest.raises(AudioVAEError, match="unknown baseline codec 'aac'"):
        baselines.roundtrip("aac", voice_like(0.5), SR, 6)
