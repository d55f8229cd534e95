"""`audiovae info`, run as a real process so that main()'s error handling is what is tested."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiovae.plots import log_spectrogram

SCRIPT = Path(sys.executable).with_name("audiovae")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "audiovae.cli"]


def run(*args: str | Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def sine_file(path: Path, sr=16000, seconds=1.5, channels=2, amp=0.1) -> Path:
    t = np.arange(round(sr * seconds)) / sr
    x = np.stack([amp * np.sin(2 * np.pi * 1000 * t)] * channels, axis=1)
    sf.write(str(path), x, sr, subtype="FLOAT" if path.suffix == ".wav" else None)
    return path


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("audiovae: error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_info_prints_summary(tmp_path):
    f = sine_file(tmp_path / "tone.wav")
    r = run("info", f)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout
    assert "tone.wav" in out
    assert re.search(r"duration\s+1\.500 s \(24000 frames\)", out)
    assert re.search(r"sample rate\s+16000 Hz", out)
    assert re.search(r"channels\s+2\b", out)
    assert re.search(r"peak\s+-20\.0 dBFS", out)
    lufs = float(re.search(r"loudness\s+(-?[\d.]+) LUFS", out).group(1))
    assert lufs == pytest.approx(-20.0, abs=0.5)  # a -20 dBFS sine on both channels


def test_info_plot_writes_png(tmp_path):
    f = sine_file(tmp_path / "short.flac", seconds=0.25, channels=1)
    png = tmp_path / "out.png"
    r = run("info", f, "--plot", png)
    assert r.returncode == 0, r.stderr
    assert "n/a" in r.stdout  # too short for a loudness measurement
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "short.flac"]


@pytest.mark.parametrize("case", ["missing", "not-audio", "directory", "empty"])
def test_info_errors_are_one_line(tmp_path, case):
    f = tmp_path / "clip.wav"
    if case == "not-audio":
        f.write_text("not audio at all\n")
    elif case == "directory":
        f.mkdir()
    elif case == "empty":
        f.touch()
    problem = {"missing": "no such file", "not-audio": "not an audio file", "directory": "directory",
               "empty": "empty file"}[case]
    assert_one_line_error(run("info", f), str(f), problem)


def test_info_plot_into_missing_folder(tmp_path):
    f = sine_file(tmp_path / "tone.wav", seconds=0.5)
    png = tmp_path / "nowhere" / "out.png"
    assert_one_line_error(run("info", f, "--plot", png), str(png), "does not exist")
    assert not png.parent.exists()


def test_spectrogram_columns_are_bounded():
    x = np.random.default_rng(0).standard_normal(2_000_000).astype(np.float32)
    db, hop_s = log_spectrogram(x, 16000, max_frames=500)
    assert db.shape[0] == 513 and db.shape[1] <= 501
    assert hop_s * db.shape[1] == pytest.approx(len(x) / 16000, rel=0.01)
    short, hop = log_spectrogram(x[:10], 16000)
    assert short.shape == (513, 1) and hop == 256 / 16000
