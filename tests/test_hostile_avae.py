"""Hostile .avae files (issue 29): valid CRCs, fields chosen by an attacker. Each gets a decode or a one-line
AudioVAEError, without allocating for what the fields claim; and the fuzzer finds nothing else."""

import io
import random
import subprocess
import sys

import numpy as np
import pytest

from audiovae.codec import fuzz, stream
from audiovae.codec.format import Reader
from audiovae.codec.refine import GRIDS
from audiovae.codec.stream import Codec
from audiovae.errors import AudioVAEError
from audiovae.registry import ModelLoadError, load
from tests import test_codec
from tests.test_codec import SR, voice

model_dir = test_codec.model_dir  # the tiny model of the codec tests


@pytest.fixture(scope="module")
def codec(model_dir):
    return Codec(str(model_dir))


@pytest.fixture(scope="module")
def valid(codec):
    return codec.compress(voice(0.5), SR, quality=5)


def crafted(data: bytes, chunks=None, **fields) -> bytes:
    """``data`` with header fields (``codec`` merged into its dict) and chunks replaced, CRCs recomputed."""
    p = fuzz.Parsed.of(data)
    p.header["codec"] = {**p.header["codec"], **fields.pop("codec", {})}
    p.header.update(fields)
    p.chunks = p.chunks if chunks is None else chunks
    return p.to_bytes()


HEAD = b"\x01\x00\x00\x00\x00"  # a mono chunk head (layout 2): no silent frames


def refused(codec, data: bytes, match: str) -> str:
    with pytest.raises(AudioVAEError, match=match) as e:
        codec.decompress(data)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(("fields", "match"), [
    ({"sample_rate": 1}, "sample_rate 1 is not the model's 16000"),
    ({"sample_rate": 22050}, "sample_rate 22050 is not the model's"),
    ({"original_sample_rate": 2**31 - 1}, "original_sample_rate 2147483647 is outside 1000..768000"),
    ({"original_sample_rate": 999}, "outside 1000..768000"),
    ({"original_length": 2**31}, "'samples' is 8000, but original_length 2147483648"),
    ({"codec": {"samples": "12"}}, "'samples': expected an integer, got '12'"),
    ({"codec": {"samples": True}}, "'samples': expected an integer, got True"),
    ({"codec": {"samples": 1.5}}, "expected an integer"),
    ({"codec": {"samples": None}}, "expected an integer"),
    ({"codec": {"refine": True}}, "'refine': expected an integer"),
    ({"codec": {"streamed": 1}}, "'streamed': expected true or false"),
    ({"codec": {"entropy_sha256": 5}}, "'entropy_sha256': expected a string"),
    ({"codec": {"entropy_sha256": "\n" * 20}}, "another entropy model"),
    ({"codec": {"future": 1}}, "unknown codec key 'future'"),
    ({"codec": {"streamed": True}}, "a streamed file records no length"),
])
def test_header_fields_are_checked_before_decoding(codec, valid, fields, match):
    refused(codec, crafted(valid, **fields), match)


def test_a_missing_samples_key_is_refused_not_silence(codec, valid):
    p = fuzz.Parsed.of(valid)
    del p.header["codec"]["samples"]
    refused(codec, p.to_bytes(), "'samples' is missing")


def test_a_length_the_chunks_do_not_cover_is_refused_before_padding(codec, valid):
    # original_length 2**31 with a matching samples: the chunks hold 27 frames, not 6.7 million
    refused(codec, crafted(valid, original_length=2**31, codec={"samples": 2**31}),
            "the chunks hold 27 frames, not the 6710888 that 2147483648 samples need")
    p = fuzz.Parsed.of(valid)
    refused(codec, crafted(valid, chunks=p.chunks * 2), "the chunks pass the 27 frames")


@pytest.mark.parametrize(("frames", "payload", "match"), [
    (100_000, bytes(8), "100000 frames, more than the 250 of a chunk"),
    (2**31, bytes(8), "2147483648 frames, more than the 250"),
    (2**32 - 1, b"", "more than the 250"),
    (250, bytes(8), "the chunks pass the 27 frames"),
    (27, HEAD + bytes(4), "undecodable payload .*not the coding of its symbols"),
    (27, HEAD + b"\x04\x00\x00\x00" + bytes(4), "undecodable payload .*not the coding of its symbols"),
])
def test_chunk_frames_are_bounded_by_the_chunk_and_its_payload(codec, valid, frames, payload, match):
    refused(codec, crafted(valid, chunks=[[0, frames, payload]]), match)


def test_a_payload_is_consumed_exactly(codec, valid):
    (_, frames, payload), = fuzz.Parsed.of(valid).chunks
    refused(codec, crafted(valid, chunks=[[0, frames, payload + bytes(4)]]), "4 bytes after its channels' data")
    head = 4 + int.from_bytes(payload[:4], "little")
    n = int.from_bytes(payload[head : head + 4], "little")  # a channel's words and one word more: not the coder's
    longer = payload[:head] + (n + 4).to_bytes(4, "little") + payload[head + 4 :] + bytes(4)
    refused(codec, crafted(valid, chunks=[[0, frames, longer]]), "not the coding of its symbols")


def test_zero_chunk_files(codec, valid, model_dir):
    refused(codec, crafted(valid, chunks=[]), "the chunks hold 0 frames")
    streamed = codec.stream_encoder(SR, 1)
    data = streamed(voice(0.2)) + streamed.finish()
    y, sr = codec.decompress(crafted(data, chunks=[]))
    assert y.shape == (1, 0) and sr == SR


@pytest.mark.parametrize("grid", GRIDS)
def test_payload_bit_flips_with_valid_crcs_are_refused_or_bounded(codec, grid):
    """Every flip in the latents' data is refused (it is not the coder's output for what it decodes to); in the
    refinement layer (on each grid), a flip of a band's mean shifts that band's gains within their +-24 dB; in the
    chunk head, a flip of a silent run's gap or length moves or resizes it (frames zeroed, or not)."""
    enc = codec.stream_encoder(SR, 1, 3, length=int(0.3 * SR), refine=True, grid=grid)
    data = enc(voice(0.3)[None]) + enc.finish()
    (_, frames, payload), = fuzz.Parsed.of(data).chunks
    head = 4 + int.from_bytes(payload[:4], "little")
    latents = head + 4 + int.from_bytes(payload[head : head + 4], "little")
    y0, _ = codec.decompress(data)
    for bit in range(0, 8 * len(payload), 2):
        flipped = bytearray(payload)
        flipped[bit // 8] ^= 1 << bit % 8
        try:
            y, _ = codec.decompress(crafted(data, chunks=[[0, frames, bytes(flipped)]]))
        except AudioVAEError as e:
            assert "\n" not in str(e)
            continue
        assert (4 < bit // 8 < head or bit // 8 >= latents + 4) and np.abs(y).max() <= 16 * np.abs(y0).max()


def test_a_file_names_a_shipped_model_never_a_path(codec, valid, model_dir, tmp_path):
    for model_id in (str(model_dir), "/etc", "../pretrained/speech16k", "speech16k/../music24k", "tiny\n"):
        h = Reader(io.BytesIO(crafted(valid, model_id=model_id))).header
        with pytest.raises(AudioVAEError, match=r"unknown model .* \(shipped: .*given explicitly") as e:
            Codec.for_header(h, name="x.avae")
        assert str(e.value).startswith("x.avae: ") and "\n" not in str(e.value)
        assert "tiny.json" not in str(e.value) and "passwd" not in str(e.value)
    h = Reader(io.BytesIO(valid)).header
    assert Codec.for_header(h, str(model_dir)).model.name == "tiny"  # the user's own model, given explicitly
    named = Reader(io.BytesIO(crafted(valid, model_id="speech16k"))).header  # a shipped name, other weights
    with pytest.raises(AudioVAEError, match="encoded with model 'speech16k' .* not with 'speech16k'"):
        Codec.for_header(named)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "m.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ModelLoadError, match="not a valid model card") as e:
        load(bad)
    assert "\n" not in str(e.value)


def test_cli_refuses_a_hostile_rate_in_one_line_and_leaves_nothing(valid, model_dir, tmp_path):
    src, out = tmp_path / "rate1.avae", tmp_path / "out.wav"  # sample_rate 1 was a SIGSEGV in the resampler
    src.write_bytes(crafted(valid, sample_rate=1))
    r = subprocess.run([sys.executable, "-m", "audiovae.cli", "decompress", str(src), str(out), "--model",
                        str(model_dir)], capture_output=True)
    assert r.returncode == 1 and r.stderr.decode().strip().count("\n") == 0, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["rate1.avae"]


def test_channels_decode_in_groups(codec, monkeypatch):
    data = codec.compress(np.stack([voice(0.3, seed) for seed in range(3)]), SR, quality=5)
    y, _ = codec.decompress(data)
    monkeypatch.setattr(stream, "CHANNEL_GROUP", 2)  # groups of 2 and 1 channels
    np.testing.assert_allclose(codec.decompress(data)[0], y, atol=1e-5)


def test_fuzzed_files_decode_or_fail_cleanly(model_dir):
    report = fuzz.campaign(str(model_dir), 2000, seed=0, timeout=60)
    assert report.failures == [], "\n".join(report.lines())
    assert report.outcomes["decoded"] and report.outcomes["FormatError"] and report.outcomes["CodecError"]


@pytest.mark.slow
def test_fuzzed_files_long_campaign(model_dir):
    report = fuzz.campaign(str(model_dir), 30_000, seed=1, timeout=60)
    assert report.failures == [], "\n".join(report.lines())


def test_fuzz_inputs_are_reproducible(valid):
    assert fuzz.mutate(valid, random.Random("0:7")) == fuzz.mutate(valid, random.Random("0:7"))
    assert fuzz.Parsed.of(fuzz.Parsed.of(valid).to_bytes()) == fuzz.Parsed.of(valid)
