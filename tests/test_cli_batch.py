"""Many files in one process (``compress a.wav b.flac --out-dir DIR``, ``decompress *.avae --out-dir DIR``), and
output names checked against what is written. Run as real processes, as in test_cli_inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from audiovae.cli import app
from audiovae.codec import stream
from audiovae.errors import AudioVAEError
from tests.test_cli_info import assert_one_line_error, run, sine_file
from tests.test_cli_inputs import listing, tiny_codec_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_codec_model(tmp_path_factory.mktemp("model"))


def test_compress_and_decompress_many_files_into_folders(model_dir, tmp_path):
    (tmp_path / "sub").mkdir()
    files = [sine_file(tmp_path / "a.wav", channels=1), sine_file(tmp_path / "b.flac", seconds=1.0),
             sine_file(tmp_path / "sub" / "c.wav", sr=24000, channels=1)]
    r = run("compress", *files, "--out-dir", tmp_path / "out", "--model", model_dir, "--quality", "5")
    assert r.returncode == 0, r.stderr
    assert listing(tmp_path / "out") == ["a.avae", "b.avae", "c.avae"]
    assert len(r.stderr.splitlines()) == 3 and f"{files[1]} -> {tmp_path / 'out' / 'b.avae'}" in r.stderr
    single = run("compress", files[1], tmp_path / "b.avae", "--model", model_dir, "--quality", "5")
    assert single.returncode == 0, single.stderr
    assert (tmp_path / "b.avae").read_bytes() == (tmp_path / "out" / "b.avae").read_bytes()
    avae = sorted((tmp_path / "out").iterdir())
    r = run("decompress", *avae, "--out-dir", tmp_path / "back", "--format", "flac", "--model", model_dir)
    assert r.returncode == 0, r.stderr
    assert listing(tmp_path / "back") == ["a.flac", "b.flac", "c.flac"]
    shapes = [(sf.info(tmp_path / "back" / n).format, sf.info(tmp_path / "back" / n).samplerate,
               sf.info(tmp_path / "back" / n).frames, sf.info(tmp_path / "back" / n).channels)
              for n in ("a.flac", "b.flac", "c.flac")]
    assert shapes == [("FLAC", 16000, 24000, 1), ("FLAC", 16000, 16000, 2), ("FLAC", 24000, 36000, 1)]


def test_a_failing_file_is_reported_and_the_others_go_on(model_dir, tmp_path):
    good = sine_file(tmp_path / "good.wav", channels=1)
    (tmp_path / "bad.wav").write_text("not audio\n")
    other = sine_file(tmp_path / "other.flac", channels=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "other.avae").write_bytes(b"kept")
    paths = [good, tmp_path / "bad.wav", tmp_path / "missing.wav", other]
    r = run("compress", *paths, "--out-dir", tmp_path / "out", "--model", model_dir)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("audiovae: error: ")]
    assert len(errors) == 4, r.stderr
    assert "bad.wav: not an audio file" in errors[0] and "missing.wav: no such file" in errors[1]
    assert "other.avae: already exists (use --force to overwrite)" in errors[2]
    assert errors[3] == "audiovae: error: 3 of 4 files failed"
    assert listing(tmp_path / "out") == ["good.avae", "other.avae"]  # no partial or temp file
    assert (tmp_path / "out" / "other.avae").read_bytes() == b"kept"
    r = run("compress", good, other, "--out-dir", tmp_path / "out", "--model", model_dir, "--force")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "other.avae").read_bytes()[:4] == b"AVAE"
    (tmp_path / "out" / "bad.avae").write_bytes(b"AVAE damaged")
    (tmp_path / "back").mkdir()
    (tmp_path / "back" / "other.wav").write_bytes(b"kept")
    avae = [tmp_path / "out" / f"{n}.avae" for n in ("bad", "good", "other")]
    r = run("decompress", *avae, "--out-dir", tmp_path / "back", "--model", model_dir)
    assert r.returncode == 1 and "bad.avae: truncated file" in r.stderr and "2 of 3 files failed" in r.stderr
    assert "other.wav: already exists" in r.stderr and (tmp_path / "back" / "other.wav").read_bytes() == b"kept"
    assert listing(tmp_path / "back") == ["good.wav", "other.wav"]


def test_outputs_that_would_collide_are_refused_before_any_work(tmp_path):
    a, b = sine_file(tmp_path / "a.wav"), sine_file(tmp_path / "a.flac")
    for paths in ((a, b), (a, a)):
        r = run("compress", *paths, "--out-dir", tmp_path / "out", "--model", "no-such-model")
        assert_one_line_error(r, f"{tmp_path / 'out' / 'a.avae'}: both {a} and {paths[1]} would be written there")
    assert listing(tmp_path) == ["a.flac", "a.wav"]  # not even the folder


def refusal(*args: str | Path) -> str:
    """The AudioVAEError that the command raises (in process: faster than a real one; main() prints it as one
    line, as the tests above check)."""
    r = CliRunner().invoke(app, list(map(str, args)))
    assert r.exit_code == 1 and isinstance(r.exception, AudioVAEError), (r.output, r.exception)
    return str(r.exception)


@pytest.mark.parametrize("args, message", [
    (("compress", "a.wav"), "give IN OUT, or input files and --out-dir DIR (got 1 paths)"),
    (("compress", "a.wav", "b.wav", "c.avae"), "give IN OUT, or input files and --out-dir DIR (got 3 paths)"),
    (("compress", "-", "a.wav", "--out-dir", "out"), "- (stdin) goes with IN OUT, not with --out-dir"),
    (("decompress", "a.avae", "a.wav", "--format", "flac"), "--format goes with --out-dir (else OUT's extension "
                                                            "names the format)"),
    (("decompress", "a.avae", "--out-dir", "out", "--format", "mp3"), "--format mp3: not one of wav, flac"),
    (("compress", "a.wav", "--out-dir", "a.wav"), "{}/a.wav: not a folder (--out-dir)"),
    (("compress", "a.wav", "out.mp3"), "{}/out.mp3: compress writes an .avae file: name it *.avae"),
    (("compress", "a.wav", "out"), "{}/out: compress writes an .avae file: name it *.avae"),
    (("decompress", "a.avae", "out.mp3"), "{}/out.mp3: decompress writes WAV or FLAC: name it *.wav or *.flac"),
    (("reconstruct", "a.wav", "out.ogg"), "{}/out.ogg: reconstruct writes WAV or FLAC: name it *.wav or *.flac"),
])
def test_the_forms_and_the_output_names_are_checked(tmp_path, args, message):
    sine_file(tmp_path / "a.wav", seconds=0.2)
    paths = [str(tmp_path / a) if "." in a[1:] or a == "out" else a for a in args]
    assert refusal(*paths, "--model", "no-such-model") == message.format(tmp_path)
    assert listing(tmp_path) == ["a.wav"]


def test_the_format_follows_the_extension(model_dir, tmp_path):
    wav = sine_file(tmp_path / "in.wav", channels=1)
    assert run("compress", wav, tmp_path / "a.AVAE", "--model", model_dir).returncode == 0
    for name, fmt in (("b.FLAC", "FLAC"), ("b.wav", "WAV")):
        r = CliRunner().invoke(app, ["decompress", str(tmp_path / "a.AVAE"), str(tmp_path / name), "--model",
                                     str(model_dir)])
        assert r.exit_code == 0, r.output
        assert sf.info(tmp_path / name).format == fmt
    assert listing(tmp_path) == ["a.AVAE", "b.FLAC", "b.wav", "in.wav"]


def test_a_batch_loads_each_model_once(model_dir, tmp_path, monkeypatch):
    loads = []
    init = stream.Codec.__init__
    monkeypatch.setattr(stream.Codec, "__init__", lambda self, model: loads.append(model) or init(self, model))
    files = [sine_file(tmp_path / f"{i}.wav", seconds=0.5, channels=1) for i in range(3)]
    runner = CliRunner()
    r = runner.invoke(app, ["compress", *map(str, files), "--out-dir", str(tmp_path / "out"), "--model",
                            str(model_dir), "--quality", "3"])
    assert r.exit_code == 0, r.output
    assert loads == [str(model_dir)]
    avae = sorted(map(str, (tmp_path / "out").iterdir()))
    r = runner.invoke(app, ["decompress", *avae, "--out-dir", str(tmp_path / "back"), "--model", str(model_dir)])
    assert r.exit_code == 0, r.output
    assert loads == [str(model_dir)] * 2 and listing(tmp_path / "back") == ["0.wav", "1.wav", "2.wav"]
    assert np.all([sf.info(tmp_path / "back" / f"{i}.wav").frames == 8000 for i in range(3)])
