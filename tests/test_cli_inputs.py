"""Hostile or unlucky inputs and outputs of the CLI: absurd sample rates, an output that is the input, bad
--kbps, full or closed outputs, signals mid-write, file modes. Run as real processes, so that main()'s handling
is what is tested; each refusal is one line, exit 1, and leaves no file behind."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiovae import audio
from audiovae.codec.stream import Codec, fit_for_model
from audiovae.registry import load
from tests.test_cli_info import COMMAND, assert_one_line_error, run, sine_file
from tests.test_generate import tiny_vae

SR = 16000


def wav_header(path: Path, sample_rate: int, frames: int = 64) -> Path:
    """A 16-bit mono WAV of silence whose header declares ``sample_rate``: a few bytes, however absurd the rate."""
    data = bytes(2 * frames)
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, 2 * sample_rate % 2**32, 2, 16)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def tiny_codec_model(folder: Path) -> Path:
    """A tiny VAE with an entropy model in ``folder``: enough to compress, decompress and embed."""
    d = tiny_vae(folder)
    rng = np.random.default_rng(0)
    fit_for_model(load(d), [0.1 * rng.standard_normal(2 * SR).astype(np.float32) for _ in range(4)], SR)
    return d


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_codec_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def long_input(model_dir, tmp_path_factory):
    """20 minutes of silence as FLAC and as .avae: seconds of work for the CLI, little to write here."""
    d = tmp_path_factory.mktemp("long")
    x = np.zeros(20 * 60 * SR, np.float32)
    sf.write(d / "long.flac", x, SR)
    (d / "long.avae").write_bytes(Codec(str(model_dir)).compress(x[None], SR, quality=1))
    return d / "long.flac", d / "long.avae"


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("rate", [1, 7, 2_000_000_000])  # > 5 min, 79 s and a MemoryError before the bound
def test_sample_rates_outside_the_range_are_refused_before_any_work(tmp_path, rate):
    wav = wav_header(tmp_path / "odd.wav", rate)
    r = run("compress", wav, tmp_path / "a.avae", "--model", "no-such-model")
    assert_one_line_error(r, "odd.wav", f"unsupported sample rate {rate} Hz", "1000 to 768000 Hz")
    assert listing(tmp_path) == ["odd.wav"]


def test_every_command_refuses_the_rate_also_from_stdin(tmp_path):
    wav = wav_header(tmp_path / "odd.wav", 1)
    for args in (("info", wav), ("reconstruct", wav, tmp_path / "r.wav", "--model", "no-such-model")):
        assert_one_line_error(run(*args), "odd.wav: unsupported sample rate 1 Hz")
    piped = subprocess.run([*COMMAND, "compress", "-", str(tmp_path / "a.avae"), "--model", "no-such-model"],
                           input=wav.read_bytes(), capture_output=True, timeout=120)
    assert piped.returncode == 1 and b"unsupported sample rate 1 Hz" in piped.stderr
    assert piped.stderr.decode().strip().count("\n") == 0
    assert listing(tmp_path) == ["odd.wav"]


def test_every_loader_refuses_the_rate_and_the_bounds_are_inclusive(tmp_path):
    bad = wav_header(tmp_path / "bad.wav", 7)
    for read in (audio.info, audio.load, lambda p: next(audio.blocks(p, 1024))):
        with pytest.raises(audio.AudioError, match="bad.wav: unsupported sample rate 7 Hz"):
            read(bad)
    for rate in (audio.MIN_SAMPLE_RATE, audio.MAX_SAMPLE_RATE):
        ok = wav_header(tmp_path / f"{rate}.wav", rate)
        assert audio.info(ok).sample_rate == rate and audio.load(ok)[0].shape == (1, 64)
    with pytest.raises(audio.AudioError, match="target: unsupported sample rate 1 Hz"):
        audio.load(ok, sample_rate=1)
    with pytest.raises(audio.AudioError, match="unsupported sample rate 2 Hz"):
        audio.resample(np.zeros((1, 10), np.float32), 16000, 2)
    with pytest.raises(audio.AudioError, match="out.wav: unsupported sample rate 10 Hz"):
        audio.save(tmp_path / "out.wav", np.zeros((1, 10), np.float32), 10)


def test_an_output_that_is_the_input_is_refused_even_with_force(tmp_path):
    wav = sine_file(tmp_path / "in.wav", channels=1)
    before = wav.read_bytes()
    (tmp_path / "hard.wav").hardlink_to(wav)
    (tmp_path / "soft.wav").symlink_to(wav)
    for cmd in (("compress", wav, wav), ("decompress", wav, wav), ("reconstruct", wav, wav),
                ("transfer", wav, "--out", wav), ("continue", wav, "--out", wav),
                ("compress", wav, tmp_path / "hard.wav"), ("compress", wav, tmp_path / "soft.wav")):
        r = run(*cmd, "--force", "--model", "no-such-model")
        assert_one_line_error(r, f"{cmd[-1]}: is the input {wav}", "even with --force")
    r = run("arithmetic", tmp_path / "other.wav", "--minus", tmp_path / "other.wav", "--plus", wav, "--out", wav,
            "--force")
    assert_one_line_error(r, f"{wav}: is the input {wav}")
    assert_one_line_error(run("embed", tmp_path, "--out", wav, "--model", "no-such-model"), "is the input")
    assert_one_line_error(run("info", wav, "--plot", wav), "is the input")
    assert wav.read_bytes() == before and listing(tmp_path) == ["hard.wav", "in.wav", "soft.wav"]


@pytest.mark.parametrize("kbps", ["nan", "inf", "-inf", "0", "-3"])
def test_kbps_must_be_positive_and_finite(tmp_path, kbps):
    wav = sine_file(tmp_path / "in.wav", channels=1)
    r = run("compress", wav, tmp_path / "a.avae", f"--kbps={kbps}", "--model", "no-such-model")
    assert_one_line_error(r, "--kbps must be a positive, finite bitrate")
    assert listing(tmp_path) == ["in.wav"]


def test_a_missed_kbps_target_is_a_warning(model_dir, tmp_path):
    wav = sine_file(tmp_path / "in.wav", seconds=3.0, channels=1)
    for kbps in (0.05, 8.0):  # 0.05: less than the header
        r = run("compress", wav, tmp_path / f"{kbps}.avae", "--kbps", kbps, "--model", model_dir)
        assert r.returncode == 0, r.stderr
        rate = float(re.search(r"([\d.]+) kbps, quality", r.stderr).group(1))
        assert rate == pytest.approx((tmp_path / f"{kbps}.avae").stat().st_size * 8 / 3.0 / 1000, abs=0.01)
        missed = abs(rate - kbps) > 0.1 * kbps
        assert ("misses the --kbps" in r.stderr) == missed
        if missed:
            assert f"warning: {tmp_path / f'{kbps}.avae'}: {rate:.2f} kbps misses the --kbps {kbps:g}" in r.stderr


def test_a_full_or_closed_stdout_is_a_one_line_error(model_dir, tmp_path):
    wav = sine_file(tmp_path / "in.wav", channels=1)
    avae = tmp_path / "a.avae"
    assert run("compress", wav, avae, "--model", model_dir).returncode == 0
    env = os.environ | {"TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    for cmd in (("decompress", avae, "-", "--model", model_dir), ("compress", wav, "-", "--model", model_dir)):
        with open("/dev/full", "wb") as full:
            r = subprocess.run([*COMMAND, *map(str, cmd)], stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                               timeout=120)
        assert_one_line_error(subprocess.CompletedProcess(r.args, r.returncode, "", r.stderr),
                              "<stdout>: cannot write (No space left on device)")
        p = subprocess.Popen([*COMMAND, *map(str, cmd)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
        p.stdout.close()  # before anything is written: the reader is gone
        err = p.stderr.read()
        assert p.wait(timeout=120) == 1
        assert_one_line_error(subprocess.CompletedProcess(p.args, 1, "", err), "<stdout>: cannot write (Broken pipe)")
    assert listing(tmp_path / "tmp") == []


def test_an_unwritable_output_is_a_one_line_error_naming_it(model_dir, tmp_path):
    sine_file(tmp_path / "in.wav", channels=1)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    folder = Path("/sys") if os.access(locked, os.W_OK) else locked  # root writes anywhere but in /sys
    r = run("embed", tmp_path / "in.wav", "--out", folder / "e.npz", "--model", model_dir)
    assert r.returncode == 1 and r.stdout == ""  # the blank line: what the progress bar leaves
    assert r.stderr.strip() == f"audiovae: error: {folder / 'e.npz'}: Permission denied"
    r = run("reconstruct", tmp_path / "in.wav", folder / "r.wav", "--model", model_dir)
    assert_one_line_error(r, f"{folder / 'r.wav'}: cannot write (Permission denied)")
    assert not (folder / "e.npz").exists() and listing(locked) == []


def wait_for(condition, p: subprocess.Popen, what: str) -> None:
    """Poll until ``condition()`` while ``p`` runs (its work takes seconds: far longer than a poll)."""
    while not condition():
        assert p.poll() is None, f"finished before {what}: {p.stderr.read()}"
        time.sleep(0.005)


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell may have left it ignored


@pytest.mark.parametrize("cmd, sig", [("compress", signal.SIGTERM), ("compress", signal.SIGINT),
                                      ("decompress", signal.SIGTERM)])
def test_a_signal_mid_write_leaves_no_temp_file_and_the_old_output(model_dir, long_input, tmp_path, cmd, sig):
    src = long_input[0] if cmd == "compress" else long_input[1]
    out = tmp_path / ("out.avae" if cmd == "compress" else "out.wav")
    out.write_bytes(b"the old output")
    (tmp_path / "tmp").mkdir()
    p = subprocess.Popen([*COMMAND, cmd, str(src), str(out), "--model", str(model_dir), "--force"],
                         stderr=subprocess.PIPE, text=True, env=os.environ | {"TMPDIR": str(tmp_path / "tmp")},
                         preexec_fn=default_sigint)
    wait_for(lambda: any(f.name.endswith(".tmp") for f in tmp_path.iterdir()), p, "its temp file was created")
    p.send_signal(sig)
    assert p.wait(timeout=120) == 128 + sig, p.stderr.read()
    assert "Traceback" not in p.stderr.read()
    assert out.read_bytes() == b"the old output" and listing(tmp_path) == [out.name, "tmp"]


def test_a_signal_while_stdout_is_blocked_leaves_no_temp_folder(model_dir, long_input, tmp_path):
    """decompress to stdout decodes into a temp folder, then copies it to stdout: a reader that stops reading
    holds it there until it is terminated."""
    p = subprocess.Popen([*COMMAND, "decompress", str(long_input[1]), "-", "--model", str(model_dir)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False,
                         env=os.environ | {"TMPDIR": str(tmp_path)})
    wait_for(lambda: any(tmp_path.iterdir()), p, "its temp folder was created")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)  # drained: what was left in its buffer does not hold it up
    assert p.returncode == 128 + signal.SIGTERM, err
    assert b"Traceback" not in err and listing(tmp_path) == []


@pytest.mark.parametrize("umask", [0o027, 0o002])
def test_outputs_get_the_umasks_mode(model_dir, tmp_path, umask):
    wav = sine_file(tmp_path / "in.wav", channels=1)
    for cmd in (("compress", wav, tmp_path / "a.avae"), ("decompress", tmp_path / "a.avae", tmp_path / "b.wav"),
                ("embed", wav, "--out", tmp_path / "e.npz")):
        r = subprocess.run([*COMMAND, *map(str, cmd), "--model", str(model_dir)], capture_output=True, text=True,
                           preexec_fn=lambda: os.umask(umask), timeout=120)
        assert r.returncode == 0, r.stderr
    for name in ("a.avae", "b.wav", "e.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
