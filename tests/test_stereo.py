"""Joint stereo and silence (payload layout 2, codec/joint.py): what they save, exact zeros and identical channels,
streaming, files of layout 1, hostile chunk heads."""

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiovae.codec import fuzz, joint, stream
from audiovae.codec.format import Reader
from audiovae.codec.stream import Codec
from audiovae.errors import AudioVAEError
from tests import test_codec
from tests.test_codec import SR, voice

model_dir = test_codec.model_dir  # the tiny model of the codec tests
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def codec(model_dir):
    return Codec(str(model_dir))


def plans(data: bytes) -> list[joint.Plan]:
    channels = Reader(io.BytesIO(data)).header.channels
    return [joint.Plan.read(c.payload[4 : 4 + int.from_bytes(c.payload[:4], "little")], channels, c.frames)
            for c in Reader(io.BytesIO(data))]


def independent(codec, x, sr, **kw) -> bytes:
    """``x`` coded as before joint stereo: left and right as they are."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(joint, "SIDE_COST", 10**9)
        return codec.compress(x, sr, **kw)


def test_identical_channels_cost_one_channel_and_decode_identical(codec):
    x = voice(6.0, 1)
    mono, stereo = codec.compress(x, SR, quality=7), codec.compress(np.stack([x, x]), SR, quality=7)
    apart = independent(codec, np.stack([x, x]), SR, quality=7)
    assert len(stereo) - len(mono) < 0.25 * (len(apart) - len(mono)), (len(mono), len(stereo), len(apart))
    assert all(p.mode == joint.MS and p.masks[1].all() for p in plans(stereo))
    y, _ = codec.decompress(stereo)
    assert np.array_equal(y[0], y[1])
    np.testing.assert_allclose(y[0], codec.decompress(mono)[0][0], atol=1e-5)


def test_a_panned_source_costs_one_channel(codec):
    x = voice(6.0, 2)
    mono = codec.compress(x, SR, quality=6)
    data = codec.compress(np.stack([x, 0.5 * x]), SR, quality=6)
    apart = independent(codec, np.stack([x, 0.5 * x]), SR, quality=6)
    assert len(data) - len(mono) < 0.25 * (len(apart) - len(mono)), (len(mono), len(data), len(apart))
    (alpha,) = {p.alpha for p in plans(data)}
    assert alpha == round(127 * (0.25 / 0.75))  # side / mid
    y, _ = codec.decompress(data)
    ratio = np.float32(1 - alpha / 127) / np.float32(1 + alpha / 127)
    np.testing.assert_allclose(y[1], ratio * y[0], atol=1e-6)  # the side is all predicted


def test_channels_that_differ_stay_left_right_and_chunks_switch(codec, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_FRAMES", 40)
    x, other = voice(2.4, 3), voice(2.4, 4)
    right = np.where(np.arange(x.size) < 40 * 320, x, other)  # the first chunk identical, then another voice
    data = codec.compress(np.stack([x, right]), SR, quality=6)
    assert [p.mode for p in plans(data)] == [joint.MS] + [joint.LR] * (len(plans(data)) - 1)
    y, _ = codec.decompress(data)
    assert np.array_equal(y[0, : 40 * 320], y[1, : 40 * 320]) and not np.allclose(y[0, 45 * 320 :], y[1, 45 * 320 :])


def test_silence_costs_a_few_hundred_bytes_and_decodes_to_zeros(codec):
    for channels, sr, kw in ((1, SR, {"quality": 7}), (1, SR, {"kbps": 6.0}), (2, 44100, {"kbps": 6.0})):
        silence = np.zeros((channels, 5 * sr), np.float32)
        data = codec.compress(silence, sr, **kw)
        assert len(data) < 400, (channels, sr, kw, len(data))
        y, _ = codec.decompress(data)
        assert y.shape == silence.shape and not y.any()


def test_silent_frames_inside_a_signal_are_exact_zeros(codec):
    x = np.stack([voice(3.0, 5), voice(3.0, 6)])
    x[:, 16000:32000] = 0  # a second of digital silence in both channels
    x[1, 40000:] = 1e-5 * np.sign(x[1, 40000:])  # -100 dBFS: silent too
    for refine in (False, True):
        y, _ = codec.decompress(codec.compress(x, SR, quality=6, refine=refine))
        assert not y[:, 16000 + 320 : 32000 - 320].any() and not y[1, 40000 + 320 :].any()
        assert np.abs(y[0, 40000:]).max() > 0.01


def test_streaming_equals_the_whole_file_with_modes_and_silence(codec, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_FRAMES", 30)
    x = np.stack([voice(2.5, 7), voice(2.5, 7)])
    x[1, 20000:] = voice(2.5, 8)[20000:]
    x[:, 8000:15000] = 0
    x44 = np.stack([np.interp(np.arange(int(2.5 * 44100)) / 44100, np.arange(x.shape[1]) / SR, c) for c in x])
    x44 = x44.astype(np.float32)
    whole = codec.compress(x44, 44100, quality=6, refine=True)
    assert {p.mode for p in plans(whole)} == {joint.LR, joint.MS} and any(p.masks.any() for p in plans(whole))
    rng = np.random.default_rng(5)
    enc = codec.stream_encoder(44100, 2, quality=6, length=x44.shape[1], refine=True)
    parts, pos = [], 0
    while pos < x44.shape[1]:
        n = int(rng.integers(1, 9000))
        parts.append(enc(x44[:, pos : pos + n]))
        pos += n
    assert b"".join(parts) + enc.finish() == whole  # bit-identical
    y = np.concatenate(list(codec.stream_decode(Reader(io.BytesIO(whole)))), axis=1)
    np.testing.assert_array_equal(y, codec.decompress(whole)[0])
    assert not y[:, int(8000 * 44100 / SR) + 800 : int(15000 * 44100 / SR) - 800].any()


def test_kbps_counts_joint_stereo(codec):
    """Identical channels at a rate get about the mono file's quality (the tiny model's steps are a few bytes
    apart: the side's head and guard frames cost up to one), more than when coded apart."""
    x = voice(4.0, 9)
    for kbps in (0.6, 0.9):  # the tiny model's latents: 1.2 kbps at quality 16
        mono, stereo = (codec.compress(s, SR, kbps=kbps, refine=False) for s in (x, np.stack([x, x])))
        apart = independent(codec, np.stack([x, x]), SR, kbps=kbps, refine=False)
        assert len(stereo) * 8 / 4000 <= kbps
        q_mono, q_joint, q_apart = (Reader(io.BytesIO(d)).header.quality for d in (mono, stereo, apart))
        assert q_mono - 1 <= q_joint and q_apart < q_joint - 1, (q_mono, q_joint, q_apart)


@pytest.mark.parametrize("name", ["layout1_mono16k", "layout1_stereo22k"])
def test_files_of_layout_1_decode_as_before(name):
    """Written by the codec before layout 2 (commit f452340: the first speech16k decoder, the stereo one with
    refinement and extension); the version of speech16k that the file names decodes them (a later decoder lists those
    weights in ``decodes_sha256``; a retrained model keeps them in pretrained/earlier) to the FLAC next to them
    (16-bit; the layout-1 path gave the same audio before and after layout 2, commit 044d855)."""
    data = (DATA / f"{name}.avae").read_bytes()
    header = Reader(io.BytesIO(data)).header
    assert "layout" not in header.codec
    y, sr = Codec.for_header(header).decompress(data)
    ref, ref_sr = sf.read(DATA / f"{name}.flac", dtype="float32", always_2d=True)
    assert sr == ref_sr and y.shape == ref.T.shape
    np.testing.assert_allclose(y, ref.T, atol=1e-4)


def test_the_head_round_trips():
    masks = np.zeros((2, 250), bool)
    masks[0, :3] = masks[0, 10:250] = masks[1, 100:101] = True
    plan = joint.Plan(joint.MS, masks, -7)
    assert plan.head() == bytes([1, 0xF9, 2, 0, 3, 7, 240, 1, 100, 1])
    back = joint.Plan.read(plan.head(), 2, 250)
    assert (back.mode, back.alpha) == (joint.MS, -7) and np.array_equal(back.masks, masks)
    coded = joint.Plan(None, masks[:1]).coded[0]  # unmasked frames, and masked ones next to them or an edge
    assert np.flatnonzero(coded).tolist() == [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 249]


@pytest.mark.parametrize(("head", "match"), [
    (b"", "stereo mode missing"),
    (b"\x02\x00\x00", "stereo mode 2 is not 0"),
    (b"\x01\x00", "ends before channel 0's mask"),
    (b"\x00\x00", "ends before channel 1's mask"),
    (b"\x00\x05\x00\x01\x00", "ends in channel 0's mask"),
    (b"\x00\x01\x00\x00\x00", "a run that is empty"),
    (b"\x00\x02\x00\x01\x00\x01\x00", "touches the previous one"),
    (b"\x00\x01\xff\x01\x00", "passes the chunk's"),
    (b"\x00\x01\x00\xff\x00", "passes the chunk's"),
    (b"\x00\x00\x00\x00", "1 bytes after its masks"),
])
def test_hostile_chunk_heads_are_refused_in_one_line(codec, head, match):
    valid = codec.compress(np.stack([voice(0.5, 1), voice(0.5, 2)]), SR, quality=5)
    p = fuzz.Parsed.of(valid)
    (_, frames, payload), = p.chunks
    rest = payload[4 + int.from_bytes(payload[:4], "little") :]
    p.chunks = [[0, frames, struct.pack("<I", len(head)) + head + rest]]
    with pytest.raises(AudioVAEError, match=match) as e:
        codec.decompress(p.to_bytes())
    assert "\n" not in str(e.value) and "chunk 0: undecodable payload" in str(e.value)


@pytest.mark.parametrize(("layout", "match"), [(3, "payload layout 3 is not supported"), (1, "layout 1 is not"),
                                               ("2", "'layout': expected an integer")])
def test_a_layout_this_codec_does_not_read_is_refused(codec, layout, match):
    p = fuzz.Parsed.of(codec.compress(voice(0.5), SR, quality=5))
    p.header["codec"]["layout"] = layout
    with pytest.raises(AudioVAEError, match=match):
        codec.decompress(p.to_bytes())
