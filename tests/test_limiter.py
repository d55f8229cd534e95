"""The peak limiter (limiter.py) and the output stage of generation: no sample over the ceiling, quiet audio
untouched, a smooth linked gain, deterministic; a loud tiny model generates without a clipped sample."""

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from audiovae.cli import app
from audiovae.config import ModelConfig
from audiovae.generate import Generator, transfer
from audiovae.inference import decode_frames
from audiovae.limiter import CEILING_DB, LOOKAHEAD_S, limit, peak_envelope
from audiovae.models.vae import VAE
from audiovae.registry import save
from tests.test_generate import TINY_MODEL, tone, with_random_prior

CEILING = np.float32(10 ** (CEILING_DB / 20))
SR = 24000


def noise(seconds: float, gain: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((channels, int(SR * seconds))) * gain).astype(np.float32)


@pytest.mark.parametrize("gain, channels", [(0.5, 1), (3.0, 2), (100.0, 1)])
def test_no_sample_over_the_ceiling(gain, channels):
    x = noise(1.0, gain, channels)
    x[:, 0], x[:, -1] = 40.0, -40.0  # peaks at both ends: the look-ahead and the release meet the edges
    y = limit(x, SR)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y).max() <= CEILING and np.abs(x).max() > CEILING
    assert peak_envelope(y).max() < 10 ** ((CEILING_DB + 0.1) / 20)  # between samples too, nearly


def test_quiet_audio_is_untouched_and_the_gain_is_local_smooth_and_linked():
    quiet = tone(SR, 1.0, channels=2) * 2.5  # 0.75 peak, under the -1 dBFS ceiling
    assert limit(quiet, SR) is quiet
    x = quiet.copy()
    x[:, 12000:12048] *= 1.6  # a 2 ms burst at 1.2: 2.6 dB over the ceiling
    y = limit(x, SR)
    changed = np.nonzero((y != x).any(0))[0]
    width = round(LOOKAHEAD_S * SR)
    assert changed.min() >= 12000 - width - 2 and changed.max() < 12048 + SR // 5  # 2.6 dB released in < 0.2 s
    np.testing.assert_array_equal(y[:, : changed.min()], x[:, : changed.min()])
    gain = y[0, changed] / x[0, changed]
    np.testing.assert_allclose(y[1, changed] / x[1, changed], gain, rtol=1e-6)  # one gain for both channels
    assert np.abs(np.diff(20 * np.log10(gain))).max() < 2.6 / width * 1.01  # ramps, no step
    np.testing.assert_array_equal(limit(x, SR), y)  # deterministic
    assert limit(np.zeros((1, 0), np.float32), SR).shape == (1, 0)


@pytest.fixture(scope="module")
def loud(tmp_path_factory):
    """A tiny model whose decoder's head is scaled up: its samples clip without the limiter."""
    folder = tmp_path_factory.mktemp("loud")
    torch.manual_seed(0)
    cfg = ModelConfig(**TINY_MODEL)
    vae = VAE(cfg)
    with torch.no_grad():
        vae.decoder.head.weight.mul_(4.0)
        vae.decoder.head.bias.mul_(4.0)
    save(cfg, vae.state_dict(), folder, "loud")
    return with_random_prior(folder)


def test_every_generation_path_is_limited(loud):
    gen = Generator(loud)
    x = gen._sample(gen.frames(1.0), "low", None, 1.0, None, 0)
    z = gen.prior.denormalize(x).transpose(1, 2)
    raw = decode_frames(gen.model, z, z.shape[-1] * gen.model.hop_length).numpy()
    assert (np.abs(raw) > 1).sum() > 100  # what the decoder gives clips
    a, b = tone(16000, 0.5), tone(16000, 0.3)
    outputs = [gen.sample(1.0, "low"), gen.continue_audio(a, 16000, 0.3), *gen.interpolate(a, 16000, b, 16000, 3),
               gen.arithmetic(a, 16000, (a, 16000), (b, 16000)), transfer(a, 16000, gen, gen)]
    assert [np.abs(y).max() <= CEILING for y in outputs] == [True] * len(outputs)


def test_cli_generate_writes_no_clipped_sample(loud, tmp_path):
    r = CliRunner().invoke(app, ["generate", "--model", str(loud), "--label", "low", "--seconds", "1",
                                 "--out", str(tmp_path / "g.wav")])
    assert r.exit_code == 0, r.output
    y, _ = sf.read(tmp_path / "g.wav")
    assert (np.abs(y) >= 32767 / 32768).sum() == 0 and np.abs(y).max() <= CEILING + 1 / 32768
