"""`audiovae info` on .avae files: the header, size, bytes by layer and chunks; known by the magic bytes, not the
name; a damaged or hostile file is a one-line error or printed harmlessly."""

from __future__ import annotations

import re

import numpy as np
import pytest

from audiovae.codec import extend, refine
from audiovae.codec.format import Header, Writer, layer_bytes
from audiovae.codec.stream import Codec
from audiovae.registry import load
from tests.test_cli_info import assert_one_line_error, run, sine_file
from tests.test_cli_inputs import tiny_codec_model


@pytest.fixture(scope="module")
def avae(tmp_path_factory):
    """A 1.5 s stereo 44.1 kHz file with both layers, from a tiny model."""
    d = tmp_path_factory.mktemp("avae")
    model = tiny_codec_model(d / "model")
    t = np.arange(66150) / 44100
    x = np.stack([0.1 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    (d / "a.avae").write_bytes(Codec(str(model)).compress(x, 44100, quality=4, refine=True))
    return d / "a.avae", load(model).card["sha256"]


def test_info_shows_the_header(avae):
    path, sha = avae
    r = run("info", path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    size = path.stat().st_size
    layers = layer_bytes(path.read_bytes())
    assert all(layers[k] > 0 for k in ("heads", "latents", "refinement", "extension"))
    shares = ", ".join(f"{k} {n} ({n * 8 / 1.5 / 1000:.2f} kbps)" for k, n in layers.items())
    expected = [str(path), "  format      .avae version 2", f"  model       tiny (sha256 {sha[:16]})",
                "  quality     4",
                "  layers      payload layout 2 (joint stereo and silence runs), envelope refinement on "
                f"(version {refine.VERSION}), bandwidth extension on (version {extend.VERSION})",
                "  sample rate 44100 Hz (coded at 16000 Hz)", "  channels    2",
                "  duration    1.500 s (66150 frames)",
                f"  size        {size} bytes, {size * 8 / 1.5 / 1000:.2f} kbps",
                f"  bytes       {shares}, container {size - sum(layers.values())}", "  chunks      1"]
    lines = r.stdout.splitlines()
    assert [line for line in lines if not line.startswith("  entropy")] == expected
    assert re.fullmatch(r"  entropy     \S+-v\d+", lines[3])


def test_the_magic_bytes_decide_not_the_name(avae, tmp_path):
    (tmp_path / "looks.wav").write_bytes(avae[0].read_bytes())
    r = run("info", tmp_path / "looks.wav")
    assert r.returncode == 0 and "  format      .avae version 2" in r.stdout
    sine_file(tmp_path / "sound.wav", channels=1).rename(tmp_path / "sound.avae")
    r = run("info", tmp_path / "sound.avae")
    assert r.returncode == 0 and "  format      WAV / FLOAT" in r.stdout
    assert_one_line_error(run("info", tmp_path / "looks.wav", "--plot", tmp_path / "p.png"),
                          "looks.wav: an .avae file (--plot draws audio: decompress it first)")


@pytest.mark.parametrize("damage, needle", [
    (lambda b: b[:-5], "truncated file: ends in the trailer"),
    (lambda b: b[:12] + bytes([b[12] ^ 1]) + b[13:], "CRC mismatch in the header"),
    (lambda b: b[:-30] + bytes([b[-30] ^ 1]) + b[-29:], "CRC mismatch in chunk 0"),
    (lambda b: b[:4] + b"\x09\x00" + b[6:], "unsupported format version 9"),
    (lambda b: b"AVAE", "truncated file: ends in the preamble"),
])
def test_a_damaged_file_is_a_one_line_error(avae, tmp_path, damage, needle):
    bad = tmp_path / "bad.avae"
    bad.write_bytes(damage(avae[0].read_bytes()))
    assert_one_line_error(run("info", bad), f"{bad}: {needle}")


def test_hostile_header_text_is_printed_on_its_line(tmp_path):
    header = Header(model_id="evil\n\x1b[31mred", model_sha256="0" * 64, sample_rate=16000, channels=1,
                    original_length=0, original_sample_rate=16000, quality=2.5, entropy_model="[bold]x[/bold]",
                    codec={"streamed": True, "refine": "\x07"})
    with (tmp_path / "h.avae").open("wb") as f, Writer(f, header):
        pass
    r = run("info", tmp_path / "h.avae")
    assert r.returncode == 0 and "\x1b" not in r.stdout and "\x07" not in r.stdout, r.stdout
    lines = r.stdout.splitlines()
    assert lines[2] == "  model       'evil\\n\\x1b[31mred' (sha256 0000000000000000)"
    assert lines[3] == "  entropy     [bold]x[/bold]" and lines[4] == "  quality     2.5"
    assert lines[5] == ("  layers      payload layout 1 (channels coded apart), envelope refinement on (version "
                        "'\\x07'), bandwidth extension off")
    size = (tmp_path / "h.avae").stat().st_size
    assert lines[8:] == ["  duration    not in the header (streamed)", f"  size        {size} bytes",
                         f"  bytes       container {size}", "  chunks      0"]
