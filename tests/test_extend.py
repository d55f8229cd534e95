"""The bandwidth extension: exact envelope coding, streaming == whole, the band's energy, old files, hostile data."""

import io
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfilt

from audiovae import audio, metrics
from audiovae.codec import extend, stream
from audiovae.codec.format import FormatError, Reader, Writer, last_field
from audiovae.codec.stream import Codec, CodecError
from audiovae.errors import AudioVAEError
from audiovae.resources import resource
from tests import test_codec

SR, MODEL_SR, HOP = 48000, 16000, 320
DATA = Path(__file__).parent / "data"
model_dir = test_codec.model_dir  # the tiny model of the codec tests (16 kHz)


def signal(seconds, sr=SR, channels=2, seed=0, tonal=True):
    """A harmonic low band (or noise) and band-passed noise with a moving envelope above 8 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    low = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 40) if 180 * k < 7000) if tonal else \
        sosfilt(butter(4, 7000, fs=sr, output="sos"), rng.standard_normal(n))
    out = []
    for c in range(channels):
        high = sosfilt(butter(6, [8500, min(19000, sr * 0.45)], "bandpass", fs=sr, output="sos"),
                       rng.standard_normal(n)) if sr > 20000 else 0
        out.append(0.1 * low * (1 - 0.2 * c) + 0.05 * high * (1 + np.sin(2 * np.pi * (1.5 + c) * t)))
    return np.stack(out).astype(np.float32)


def band_db(x, sr, lo, hi):
    spectrum = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    f = np.fft.rfftfreq(x.shape[-1], 1 / sr)
    return 10 * np.log10(spectrum[..., (f >= lo) & (f < hi)].mean(-1))


def envelope(x, sr=SR):
    analyzer = extend.Analyzer(x.shape[0], sr, MODEL_SR, HOP)
    analyzer.push(x)
    return analyzer.take(0, last=True)


@pytest.fixture(scope="module")
def codec(model_dir):
    return Codec(str(model_dir))


@pytest.mark.parametrize("channels,frames", [(1, 1), (1, 2), (2, 57), (3, 300)])
def test_envelope_coding_is_exact(channels, frames, monkeypatch):
    """With a point at every frame and no floor, version 2 codes the envelope exactly, as version 1 did."""
    monkeypatch.setattr(extend, "SPAN", 1)
    monkeypatch.setattr(extend, "FLOOR", extend.LEVELS)
    rng = np.random.default_rng(frames)
    levels = np.clip(rng.integers(0, extend.LEVELS, (1, extend.BANDS, frames)) + rng.integers(-2, 3, (channels, 1, 1)),
                     0, extend.LEVELS - 1).astype(np.int32)
    levels[:, :, : frames // 2] = 20  # flat and random stretches
    noise = rng.integers(0, 2, (channels, extend.BANDS, frames)).astype(np.int32)
    data = extend.encode(levels, noise)
    got = extend.decode(data, channels, frames)
    np.testing.assert_array_equal(got[0], levels)
    np.testing.assert_array_equal(got[1], noise)
    v1 = data[3:]  # version 1 codes every frame as version 2 codes its points
    np.testing.assert_array_equal(extend.decode(v1, channels, frames, version=1)[0], levels)


@pytest.mark.parametrize("frames", [1, 2, 9, 40, 57])
def test_levels_are_interpolated_between_points_and_quiet_bands_left_out(frames, monkeypatch):
    monkeypatch.setattr(extend, "SPAN", 2)
    t = np.arange(frames)
    levels = np.stack([30 + np.minimum(t, 10), 35 - np.minimum(t, 6)])[:, None].repeat(extend.BANDS, 1)  # kinks: points
    levels[:, -1] = 5 - t % 3  # the top band: a noise floor, over FLOOR steps down, left out
    noise = (t >= 27)[None, None].repeat(2, 0).repeat(extend.BANDS, 1).astype(np.int32)
    data = extend.encode(levels.astype(np.int32), noise)
    assert data[2] == 2 and len(data) < 100
    got = extend.decode(data, 2, frames)
    levels[:, -1] = 0
    np.testing.assert_array_equal(got[0], levels)
    assert (got[1][:, :-1] == (t >= 28)).all() and not got[1][:, -1].any()  # each frame takes the nearest point's
    np.testing.assert_array_equal(extend.points(frames, 8), np.unique(np.r_[np.arange(0, frames, 8), frames - 1]))


def test_a_measured_envelope_codes_closely_and_cheaply():
    levels, noise = envelope(signal(3.0))
    data = extend.encode(levels, noise)
    got = extend.decode(data, 2, levels.shape[-1])
    at = extend.points(levels.shape[-1], extend.SPAN)
    loud = levels > levels.max(axis=(1, 2), keepdims=True) - extend.FLOOR
    np.testing.assert_array_equal(got[0][..., at], np.where(loud, levels, 0)[..., at])
    assert loud.mean() > 0.9
    assert len(data) * 8 / 3.0 < 1700  # bits per second, two channels (version 1: 1340; the floor cuts this band)
    assert extend.decode(extend.encode(levels[:, :, :0], noise[:, :, :0]), 2, 0)[0].shape == (2, extend.BANDS, 0)


def test_damaged_envelope_data_is_refused():
    levels, noise = envelope(signal(1.0))
    data = extend.encode(levels, noise)
    n = levels.shape[-1]
    for bad, match in [(data[:2], "shorter"), (data[:-1], "whole header"), (data + b"\0" * 4, "not the coding"),
                       (data[:2] + b"\x03" + data[3:], "span 3 is not one of"),
                       (data[:3] + struct.pack("<H", n - 1) + data[5:], "points, not the"),
                       (data[:5] + b"\x00" + data[6:], "outside its range"),
                       (data[:6] + b"\x7f" + data[7:], "outside its range"),
                       (struct.pack("<HBH", 0, 1, 0) + b"\0", "no frames")]:
        with pytest.raises(ValueError, match=match):
            extend.decode(bad, 2, n)
    with pytest.raises(ValueError, match="more than the 3"):
        extend.decode(data, 2, 3)
    for bad, match in [(data[3:4], "shorter"), (data[3:5] + b"\x00" + data[6:], "outside its range")]:  # version 1
        with pytest.raises(ValueError, match=match):
            extend.decode(bad, 2, n, version=1)


def test_streamed_extension_equals_whole():
    x = signal(2.0, channels=1)
    levels, noise = envelope(x)
    y = sosfilt(butter(8, 7500, fs=SR, output="sos"), x).astype(np.float32)
    whole = extend.Extender(1, SR, MODEL_SR)
    whole.envelope(levels, noise)
    ref = np.concatenate([whole.push(y), whole.flush()], axis=1)
    parts = extend.Extender(1, SR, MODEL_SR)
    out = []
    for a, b in [(0, 1), (1, 4000), (4000, 4001), (4001, 50000), (50000, y.shape[1])]:
        parts.envelope(levels[..., a // 1200 : b // 1200], noise[..., a // 1200 : b // 1200])  # ahead of the audio
        out.append(parts.push(y[:, a:b]))
    parts.envelope(levels[..., y.shape[1] // 1200 :], noise[..., y.shape[1] // 1200 :])
    out = np.concatenate([*out, parts.flush()], axis=1)
    assert out.shape == ref.shape == y.shape
    np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_the_band_energy_tracks_the_original(sr):
    """The low band alone, extended with the original's envelope: per 1 kHz band within 2 dB of the original."""
    x = signal(3.0, sr)
    levels, noise = envelope(x, sr)
    y = sosfilt(butter(10, 7800, fs=sr, output="sos"), x).astype(np.float32)
    ext = extend.Extender(2, sr, MODEL_SR)
    ext.envelope(levels, noise)
    out = np.concatenate([ext.push(y), ext.flush()], axis=1)
    for lo in range(9000, 19000, 1000):
        assert np.abs(band_db(out, sr, lo, lo + 1000) - band_db(x, sr, lo, lo + 1000)).max() < 2.0, lo
    assert np.abs(out - y).max() > 0.01 and (band_db(out, sr, 0, 7000) - band_db(y, sr, 0, 7000) < 0.05).all()


@pytest.mark.parametrize("sr", [44100, 48000])
def test_no_notch_at_the_crossover(sr):
    """White noise through the codec's resampler (down to the model's rate and back: soxr HQ, -3 dB at 0.95 of the
    model's Nyquist, -39 dB at 0.983), extended: version 3 leaves no notch below the model's Nyquist, where
    version 2's band started; every 100 Hz band from 0.9 to 1.1 of it within 3 dB of the original."""
    x = (0.1 * np.random.default_rng(1).standard_normal((1, 3 * sr))).astype(np.float32)
    y = audio.resample(audio.resample(x, sr, MODEL_SR), MODEL_SR, sr)
    levels, noise = envelope(x, sr)
    out = {}
    for version in (2, 3):
        ext = extend.Extender(1, sr, MODEL_SR, version)
        ext.envelope(levels, noise)
        out[version] = np.concatenate([ext.push(y), ext.flush()], axis=1)
    error = {v: [float((band_db(o, sr, lo, lo + 100) - band_db(x, sr, lo, lo + 100))[0])
                 for lo in range(7200, 8800, 100)] for v, o in out.items()}
    assert np.abs(error[3]).max() < 3.0, error[3]
    assert min(error[2]) < -10.0  # the notch that version 3 fills


def test_the_span_follows_the_content_causally(codec):
    """Speech (the shipped demo clips) takes SPEECH_SPAN, music (a melody) SPAN; a chunk's choice reads no audio
    after it; the codec writes each chunk's span."""
    from tests.test_content import melody

    speech = audio.load(resource("assets", "demo") / "speech16k_fillets-nl.flac", sample_rate=SR, mono=True)[0]
    music = audio.resample(melody(seconds=4.0), 44100, SR)
    spans = []
    for first, then in ((speech, music), (music, speech)):
        analyzer = extend.Analyzer(1, SR, MODEL_SR, HOP)
        analyzer.push(np.concatenate([first, then, then], axis=1))
        analyzer.take(first.shape[1] * MODEL_SR // SR // HOP, last=False)  # the latent frames of ``first``
        spans.append(analyzer.span)
    assert spans == [extend.SPEECH_SPAN, extend.SPAN]
    analyzer = extend.Analyzer(1, SR, MODEL_SR, HOP)  # the check reruns once the input is CONTENT_SECONDS further
    analyzer.push(np.concatenate([speech] + [music] * 4, axis=1))
    for end in (speech.shape[1], speech.shape[1] + music.shape[1], speech.shape[1] + 4 * music.shape[1]):
        analyzer.take(end * MODEL_SR // SR // HOP, last=False)
        spans.append(analyzer.span)
    assert spans[2:] == [extend.SPEECH_SPAN, extend.SPEECH_SPAN, extend.SPAN]
    for x, span in ((speech, extend.SPEECH_SPAN), (music, extend.SPAN)):
        data = codec.compress(x, SR, quality=5)
        h = Reader(io.BytesIO(data)).header
        layers = h.channels * (2 if "refine" in h.codec else 1) + ("layout" in h.codec)
        assert {last_field(c.payload, layers)[1][2] for c in Reader(io.BytesIO(data))} == {span}
    with pytest.raises(ValueError, match="span 3"):
        extend.encode(*envelope(speech), span=3)


def test_no_tonal_artefacts_on_noise():
    """On a noise-like signal the extended band's LTAS ripple is at most 1.5 times the original's."""
    x = signal(4.0, channels=1, tonal=False)
    levels, noise = envelope(x)
    y = sosfilt(butter(10, 7800, fs=SR, output="sos"), x).astype(np.float32)
    ext = extend.Extender(1, SR, MODEL_SR)
    ext.envelope(levels, noise)
    out = np.concatenate([ext.push(y), ext.flush()], axis=1)
    band = (8500.0, 18500.0)
    assert metrics.ltas_ripple(out[0], SR, band=band) <= 1.5 * metrics.ltas_ripple(x[0], SR, band=band)


def test_codec_fills_the_band_and_streams_like_the_whole_file(codec, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_FRAMES", 40)  # several chunks
    x = signal(2.5)
    data = codec.compress(x, SR, quality=6)
    assert Reader(io.BytesIO(data)).header.codec["extend"] == extend.VERSION
    plain = codec.compress(x, SR, quality=6, extend=False)
    assert "extend" not in Reader(io.BytesIO(plain)).header.codec and len(data) > len(plain)
    enc = codec.stream_encoder(SR, 2, quality=6, length=x.shape[1])
    pushed = b"".join([enc(x[:, i : i + 7777]) for i in range(0, x.shape[1], 7777)] + [enc.finish()])
    assert pushed == data
    y, sr = codec.decompress(data)
    blocks = list(codec.stream_decode(Reader(io.BytesIO(data))))
    np.testing.assert_allclose(np.concatenate(blocks, axis=1), y, atol=1e-6)
    old, _ = codec.decompress(plain)
    assert sr == SR and y.shape == x.shape == old.shape
    for lo in range(9000, 18000, 1000):
        assert np.abs(band_db(y, SR, lo, lo + 1000) - band_db(x, SR, lo, lo + 1000)).max() < 3.0, lo
        assert (band_db(old, SR, lo, lo + 1000) < band_db(x, SR, lo, lo + 1000) - 20).all()


def test_extension_off_gives_the_output_of_a_file_without_it(codec):
    """A file written without the layer (as before it existed) decodes as before; extension off writes it."""
    x = signal(1.5, channels=1)
    plain = codec.compress(x, SR, quality=5, extend=False)
    h = Reader(io.BytesIO(plain)).header
    assert set(h.codec) == {"entropy_sha256", "layout", "samples"}
    y, _ = codec.decompress(plain)
    z = np.concatenate(list(stream.to_rate(codec._decode_chunks(Reader(io.BytesIO(plain)), h), MODEL_SR, SR, 1,
                                           h.codec["samples"], h.original_length)), axis=1)
    np.testing.assert_array_equal(y, z)


def test_files_of_extension_version_1_decode_as_before():
    """Written by the codec before version 2 (commit 03ea08f: music24k, quality 8, ``0.04 * signal(0.7, 44100,
    channels=1, seed=3)``); the FLAC next to it (16-bit) is its audio decoded by the shipped decoder (written again
    when the comb-free music24k decoder shipped, which lists the earlier weights in ``decodes_sha256``)."""
    data = (DATA / "extend1_music44k.avae").read_bytes()
    assert Reader(io.BytesIO(data)).header.codec["extend"] == 1
    y, sr = Codec("music24k").decompress(data)
    ref, ref_sr = sf.read(DATA / "extend1_music44k.flac", dtype="float32", always_2d=True)
    assert sr == ref_sr and y.shape == ref.T.shape
    np.testing.assert_allclose(y, ref.T, atol=1e-4)


def test_files_of_extension_version_2_decode_as_before():
    """Written by the codec at version 2 (commit f17d322: music24k, quality 8,
    ``0.04 * signal(0.7, 44100, channels=1, seed=3)``); the float WAV next to it is its audio decoded by the shipped
    decoder (as for version 1), equal to the bit on the machine that wrote it (the tolerance is for another
    machine's float rounding; version 3's layout starts the band 0.06 of the Nyquist frequency lower and changes
    samples by far more)."""
    data = (DATA / "extend2_music44k.avae").read_bytes()
    assert Reader(io.BytesIO(data)).header.codec["extend"] == 2
    y, sr = Codec("music24k").decompress(data)
    ref, ref_sr = sf.read(DATA / "extend2_music44k.wav", dtype="float32", always_2d=True)
    assert sr == ref_sr and y.shape == ref.T.shape
    np.testing.assert_allclose(y, ref.T, rtol=0, atol=1e-6)


def test_kbps_counts_the_extension(codec):
    x = signal(3.0)
    for kbps in (6.0, 12.0):
        data = codec.compress(x, SR, kbps=kbps)
        assert "extend" in Reader(io.BytesIO(data)).header.codec
        assert len(data) * 8 / 3.0 / 1000 <= kbps or Reader(io.BytesIO(data)).header.quality == 1


def test_where_there_is_no_band_to_extend(codec):
    x = signal(1.0, sr=16000, channels=1)
    assert "extend" not in Reader(io.BytesIO(codec.compress(x, 16000, quality=3))).header.codec
    with pytest.raises(CodecError, match="no band to extend"):
        codec.compress(signal(1.0, sr=17000, channels=1), 17000, quality=3, extend=True)


def test_hostile_extension_fields_give_one_line_errors(codec):
    x = signal(1.0, channels=1)
    data = codec.compress(x, SR, quality=4)
    h = Reader(io.BytesIO(data)).header
    chunks = list(Reader(io.BytesIO(data)))

    def rewrite(header, payload=None):
        buf = io.BytesIO()
        with Writer(buf, header) as w:
            for c in chunks:
                w.write_chunk(payload(c.payload) if payload else c.payload, c.frames)
        return buf.getvalue()

    def with_envelope(envelope):
        def edit(p):
            head, _ = last_field(p, 2)  # the chunk head and the channel
            return head + struct.pack("<I", len(envelope)) + envelope
        return edit

    cases = [rewrite(replace(h, codec={**h.codec, "extend": 9})),
             rewrite(replace(h, original_sample_rate=17000, original_length=17000,
                             codec={**h.codec, "samples": 16000})),
             rewrite(h, with_envelope(struct.pack("<H", 0xFFFF) + b"\0" * 64)),
             rewrite(h, with_envelope(b"\x05")),
             rewrite(h, lambda p: p[: len(p) - 1]),
             rewrite(h, with_envelope(struct.pack("<HB", 10, 0) + b"\x7f\x00" * 8 + b"\0" + b"\xff" * 40))]
    for bad in cases:
        with pytest.raises((AudioVAEError, FormatError)) as e:
            codec.read(io.BytesIO(bad), name="bad.avae")
        assert "\n" not in str(e.value) and str(e.value).startswith("bad.avae: ")


def test_cli_no_extend(model_dir, tmp_path):
    import soundfile as sf
    from typer.testing import CliRunner

    from audiovae.cli import app

    wav = tmp_path / "in.wav"
    sf.write(wav, signal(1.0).T, SR)
    runner = CliRunner()
    for flag, expect in [([], True), (["--no-extend"], False)]:
        out = tmp_path / f"out{len(flag)}.avae"
        result = runner.invoke(app, ["compress", str(wav), str(out), "--model", str(model_dir), "--quality",
                                     "4", *flag])
        assert result.exit_code == 0, result.output
        assert ("extend" in Reader(io.BytesIO(out.read_bytes())).header.codec) == expect
        back = tmp_path / f"back{len(flag)}.wav"
        result = runner.invoke(app, ["decompress", str(out), str(back), "--model", str(model_dir)])
        assert result.exit_code == 0, result.output
        y, sr = sf.read(back)
        assert sr == SR and y.shape == (SR, 2)
