"""The music-or-speech check of codec/content.py, and compress's warning when the default model meets music."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from audiovae import audio
from audiovae.cli import app
from audiovae.cli import codec as cli_codec
from audiovae.codec.content import MUSIC_FROM, music_probability
from audiovae.resources import resource
from tests.test_cli_inputs import tiny_codec_model


def melody(sr: int = 44100, seconds: float = 2.0) -> np.ndarray:
    """Decaying harmonic notes every 0.25 s over a held bass: what the check should call music."""
    t = np.arange(round(sr * seconds)) / sr
    x = 0.2 * np.sin(2 * np.pi * 110 * t)
    for i, f0 in enumerate([220, 277, 330, 440, 330, 277, 220, 165]):
        start = round(i * 0.25 * sr)
        tt = t[: len(t) - start]
        x[start:] += sum(0.3 / k * np.sin(2 * np.pi * k * f0 * tt) * np.exp(-3 * tt) for k in range(1, 6))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)[None]


@pytest.mark.parametrize("clip", sorted(resource("assets", "demo").glob("*.flac")), ids=lambda p: p.name)
def test_the_shipped_speech_clips_are_speech(clip):
    assert music_probability(*audio.load(clip)) < MUSIC_FROM


def test_music_at_any_rate_and_channels_is_music_and_silence_is_not():
    x = melody()
    p = music_probability(x, 44100)
    assert p > 0.9
    assert music_probability(np.concatenate([x, x]), 44100) == pytest.approx(p)
    assert music_probability(audio.resample(x, 44100, 16000), 16000) == pytest.approx(p, abs=0.02)
    assert music_probability(np.zeros((1, 10), np.float32), 8000) < MUSIC_FROM
    assert music_probability(np.zeros((2, 16000), np.float32), 16000) < MUSIC_FROM


def test_compress_warns_only_when_the_default_model_meets_music(tmp_path, monkeypatch):
    model = tiny_codec_model(tmp_path / "model")
    monkeypatch.setattr(cli_codec, "DEFAULT_MODEL", str(model))
    sf.write(tmp_path / "music.wav", melody().T, 44100)
    speech = sorted(resource("assets", "demo").glob("*.flac"))[0]
    runner = CliRunner()
    r = runner.invoke(app, ["compress", str(tmp_path / "music.wav"), str(tmp_path / "a.avae"), "--quality", "2"])
    assert r.exit_code == 0, r.output
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "music.wav: sounds like music" in warning[0] and "--model music24k" in warning[0]
    for args in ([str(tmp_path / "music.wav"), str(tmp_path / "b.avae"), "--model", str(model)],
                 [str(speech), str(tmp_path / "c.avae")]):
        r = runner.invoke(app, ["compress", *args, "--quality", "2"])
        assert r.exit_code == 0 and "warning" not in r.stderr, r.output
    r = runner.invoke(app, ["-q", "compress", str(tmp_path / "music.wav"), str(tmp_path / "d.avae")])
    assert r.exit_code == 0 and r.stderr.startswith("warning:") and len(r.stderr.splitlines()) == 1
    r = runner.invoke(app, ["-v", "compress", str(speech), str(tmp_path / "e.avae")])
    assert "music-or-speech check: music with probability 0." in r.stderr
