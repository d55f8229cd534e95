"""Progress bars (stderr only: with a terminal or --progress, never with -q) and the global -q / -v options."""

from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from audiovae.cli import app
from audiovae.cli.common import output
from audiovae.cli.progress import Bars, bars, then
from audiovae.codec import extend, refine
from audiovae.errors import AudioVAEError
from audiovae.registry import load
from tests.test_cli_info import COMMAND, run, sine_file
from tests.test_cli_inputs import tiny_codec_model
from tests.test_generate import tiny_vae, with_random_prior


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_codec_model(tmp_path_factory.mktemp("model"))


def run_bytes(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, env=env, timeout=120)


def invoke(*args) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(map(str, args)))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stderr


def test_bars_go_to_stderr_only_when_asked_and_never_touch_stdout(model_dir, tmp_path):
    wav = sine_file(tmp_path / "in.wav", channels=1)
    compress = ("compress", wav, "-", "--model", model_dir, "--quality", "5")
    plain, shown, quiet = run_bytes(*compress), run_bytes("--progress", *compress), run_bytes("-q", "--progress",
                                                                                               *compress)
    assert plain.returncode == shown.returncode == quiet.returncode == 0, shown.stderr
    assert plain.stdout[:4] == b"AVAE" and shown.stdout == plain.stdout == quiet.stdout
    assert plain.stderr.decode().splitlines() == [f"{wav} -> -: {len(plain.stdout)} bytes, "
                                                  f"{len(plain.stdout) * 8 / 1.5 / 1000:.2f} kbps, quality 5"]
    assert b"compress in.wav" in shown.stderr and b"100%" in shown.stderr and b"\x1b[" in shown.stderr
    assert quiet.stderr == b""
    (tmp_path / "a.avae").write_bytes(plain.stdout)
    for args, label in ((("decompress", tmp_path / "a.avae", tmp_path / "a.wav"), "decompress"),
                        (("reconstruct", wav, tmp_path / "r.flac"), "reconstruct in.wav"),
                        (("compress", wav, tmp_path / "a.wav", "--out-dir", tmp_path / "out"), "2 files")):
        r = run("--progress", *args, "--model", model_dir)
        assert r.returncode == 0, r.stderr
        assert label in r.stderr and "100%" in r.stderr


def test_track_counts_samples_and_files():
    assert list(Bars(None).track(iter([np.zeros((1, 3))]), 3, "x"))[0].shape == (1, 3)
    console = Console(file=io.StringIO(), force_terminal=True)
    with Progress(console=console) as p:
        b = Bars(p)
        for i, _ in enumerate(b.files(["a", "b"])):
            assert sum(x.shape[1] for x in b.track([np.zeros((2, 5)), np.zeros((2, 4))], 9, "file")) == 9
            assert [t.completed for t in p.tasks] == [i, 9]
        assert [(t.description, t.completed) for t in p.tasks] == [("2 files", 2)]


def test_quiet_keeps_warnings_and_errors_only(model_dir, tmp_path):
    wav = sine_file(tmp_path / "in.wav", seconds=1.0, channels=1)
    assert invoke("-q", "compress", wav, tmp_path / "a.avae", "--model", model_dir) == (0, "")
    code, err = invoke("-q", "compress", wav, tmp_path / "b.avae", "--model", model_dir, "--kbps", "0.05")
    assert code == 0 and err.startswith("warning: ") and "misses the --kbps 0.05 target" in err
    assert len(err.splitlines()) == 1
    assert invoke("-q", "decompress", tmp_path / "a.avae", tmp_path / "a.wav", "--model", model_dir) == (0, "")
    with pytest.raises(AudioVAEError, match="give -q or -v, not both"):
        CliRunner().invoke(app, ["-q", "-v", "info", str(wav)], catch_exceptions=False)
    r = run("-q", "compress", tmp_path / "missing.wav", tmp_path / "c.avae", "--model", model_dir)
    assert r.returncode == 1 and r.stderr.startswith("audiovae: error: ") and "no such file" in r.stderr


def test_verbose_adds_the_model_layers_and_speed(model_dir, tmp_path):
    wav = sine_file(tmp_path / "in.wav", seconds=1.0, sr=44100, channels=1)
    sha = load(model_dir).card["sha256"]
    code, err = invoke("-v", "compress", wav, tmp_path / "a.avae", "--model", model_dir, "--quality", "3",
                       "--refine")
    assert code == 0
    lines = err.splitlines()
    assert lines[0].startswith(f"{wav} -> {tmp_path / 'a.avae'}: ")
    assert lines[1] == f"  model tiny (sha256 {sha}), quality 3, payload layout 2 (joint stereo and silence runs), " \
                       f"envelope refinement on (version {refine.VERSION}), bandwidth extension on " \
                       f"(version {extend.VERSION})"
    assert lines[2].startswith("  1.00 s of audio in ") and lines[2].endswith("x real time)")
    code, err = invoke("-v", "decompress", tmp_path / "a.avae", tmp_path / "a.wav", "--model", model_dir)
    assert code == 0 and err.splitlines()[1] == lines[1] and "x real time" in err
    assert invoke("compress", wav, tmp_path / "b.avae", "--model", model_dir)[1].count("\n") == 1


@pytest.mark.parametrize("level, forced, drawn", [(0, False, False), (0, True, True), (-1, True, False)])
def test_bars_are_drawn_when_forced_and_not_quiet(monkeypatch, capsys, level, forced, drawn):
    monkeypatch.setattr(output, "level", level)
    monkeypatch.setattr(output, "progress", forced)
    with bars() as b:
        assert len(list(b.track([np.zeros((1, 4))], 4, "work"))) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and ("work" in captured.err) == drawn


def invoke_all(*args):
    r = CliRunner().invoke(app, list(map(str, args)))
    assert r.exit_code == 0 and r.exception is None, (r.output, r.exception)
    return r


def test_generate_and_embed_show_bars_when_forced_and_print_nothing_with_quiet(tmp_path):
    model = with_random_prior(tiny_vae(tmp_path / "model"))
    shown = invoke_all("--progress", "generate", "--out", tmp_path / "a.wav", "--model", model, "--seconds", "0.3")
    assert "generate a.wav" in shown.stderr and "100%" in shown.stderr and f"wrote {tmp_path / 'a.wav'}" in shown.stderr
    quiet = invoke_all("-q", "--progress", "generate", "--out", tmp_path / "b.wav", "--model", model, "--seconds",
                       "0.3")
    assert quiet.stderr == "" and shown.stdout == quiet.stdout == ""
    assert np.array_equal(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0])
    many = invoke_all("--progress", "generate", "--out", tmp_path / "many", "--model", model, "--seconds", "0.2",
                      "-n", "2")
    assert "2 files" in many.stderr and many.stderr.count("wrote ") == 2

    wav = sine_file(tmp_path / "in.wav", seconds=0.5, channels=1)
    shown = invoke_all("--progress", "embed", wav, "--out", tmp_path / "e.npz", "--model", model)
    assert "embedding with tiny" in shown.stderr and "100%" in shown.stderr and "wrote 1 embeddings" in shown.stderr
    quiet = invoke_all("-q", "--progress", "embed", wav, "--out", tmp_path / "f.npz", "--model", model)
    assert quiet.stderr == "" and shown.stdout == quiet.stdout == ""
    with np.load(tmp_path / "e.npz") as e, np.load(tmp_path / "f.npz") as f:
        assert np.array_equal(e["embeddings"], f["embeddings"])


def test_the_kbps_coding_pass_has_a_bar_of_its_own(model_dir, tmp_path):
    wav = sine_file(tmp_path / "in.wav", seconds=1.0, channels=1)
    r = invoke_all("--progress", "compress", wav, tmp_path / "a.avae", "--model", model_dir, "--kbps", "3")
    first, coding = r.stderr.index("compress in.wav"), r.stderr.index("compress in.wav: coding at the best quality "
                                                                        "for 3 kbps")
    assert first < coding and r.stderr.count("100%") >= 2


def test_a_task_pulses_until_told_and_is_full_at_the_end():
    with Bars(None).task("x") as progress:
        assert progress is None
    with Progress(console=Console(file=io.StringIO(), force_terminal=True)) as p:
        b = Bars(p)
        with b.task("sampling") as progress:
            assert p.tasks[0].total is None
            progress(3, 8)
            assert (p.tasks[0].completed, p.tasks[0].total) == (3, 8)
        with b.task("silent work"):
            pass
        assert all(t.finished for t in p.tasks)
    started = []
    assert list(then(iter([1, 2]), lambda: started.append(True))) == [1, 2] and started == [True]
