"""Audio I/O: formats, errors, resampling, channels, segments, atomic writes, loudness, file discovery."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from audiovae import audio
from audiovae.audio import AudioError, AudioInfo

HAS_FFMPEG = shutil.which("ffmpeg") is not None
Q16 = 2 / 32768  # 16-bit round trip: libsndfile writes x * 32767 and reads n / 32768


def tone(freq=1000.0, sr=44100, seconds=1.0, amp=0.5, channels=1) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    x = np.stack([amp * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)])
    return x.astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int, **kw) -> Path:
    sf.write(str(path), x.T, sr, **kw)
    return path


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def error_of(fn, *args, **kw) -> str:
    with pytest.raises(AudioError) as ei:
        fn(*args, **kw)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture(params=["with-ffmpeg", "without-ffmpeg"])
def ffmpeg(request, monkeypatch):
    """Run a test both with ffmpeg (where installed) and as if it were not installed."""
    if request.param == "with-ffmpeg":
        if not HAS_FFMPEG:
            pytest.skip("ffmpeg not on PATH")
    else:
        monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    return request.param


# ---------------------------------------------------------------- one-line errors naming the file


@pytest.mark.parametrize("fn", [audio.load, audio.info])
def test_missing_file(tmp_path, fn):
    p = tmp_path / "nope.wav"
    msg = error_of(fn, p)
    assert str(p) in msg and "no such file" in msg


@pytest.mark.parametrize("fn", [audio.load, audio.info])
def test_directory(tmp_path, fn):
    d = tmp_path / "folder.wav"
    d.mkdir()
    msg = error_of(fn, d)
    assert str(d) in msg and "directory" in msg


@pytest.mark.parametrize("fn", [audio.load, audio.info])
def test_empty_file(tmp_path, fn):
    p = tmp_path / "empty.flac"
    p.touch()
    msg = error_of(fn, p)
    assert str(p) in msg and "empty file (0 bytes)" in msg


@pytest.mark.parametrize("fn", [audio.load, audio.info])
def test_text_renamed_wav(tmp_path, fn, ffmpeg):
    p = tmp_path / "notes.wav"
    p.write_text("these are my notes, not audio\n" * 20)
    msg = error_of(fn, p)
    assert str(p) in msg and "not an audio file" in msg


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_random_bytes(tmp_path, suffix, ffmpeg):
    p = tmp_path / f"noise{suffix}"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    msg = error_of(audio.load, p)
    assert str(p) in msg and "not an audio file" in msg


def test_ffmpeg_missing_message(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    p = tmp_path / "song.m4a"
    p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    msg = error_of(audio.load, p)
    assert str(p) in msg and "ffmpeg" in msg and "not installed" in msg


def test_zero_samples(tmp_path):
    p = write(tmp_path / "silent.wav", np.zeros((1, 0), np.float32), 16000)
    assert p.stat().st_size > 0 and audio.info(p).frames == 0
    msg = error_of(audio.load, p)
    assert str(p) in msg and "no audio samples (0 frames)" in msg


def test_truncated_header(tmp_path):
    full = write(tmp_path / "full.wav", tone(), 44100)
    p = tmp_path / "cut.wav"
    p.write_bytes(full.read_bytes()[:30])
    msg = error_of(audio.load, p)
    assert str(p) in msg and "malformed" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = tone()
    x[0, 100] = bad
    p = write(tmp_path / "bad.wav", x, 44100, subtype="FLOAT")
    msg = error_of(audio.load, p)
    assert str(p) in msg and "NaN or Inf" in msg


def test_too_many_channels(tmp_path):
    p = write(tmp_path / "nine.wav", np.zeros((9, 100), np.float32) + 0.1, 8000)
    msg = error_of(audio.load, p)
    assert str(p) in msg and "unsupported channel count 9" in msg
    assert audio.info(p).channels == 9  # the header itself is readable


def test_eight_channels_ok(tmp_path):
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (8, 500)).astype(np.float32)
    y, sr = audio.load(write(tmp_path / "eight.wav", x, 8000, subtype="FLOAT"))
    assert sr == 8000 and np.array_equal(x, y)


def test_bad_segment_arguments(tmp_path):
    p = write(tmp_path / "a.wav", tone(seconds=0.5), 44100)
    msg = error_of(audio.load, p, offset=0.6)
    assert str(p) in msg and "past the end" in msg
    assert str(p) in error_of(audio.load, p, offset=-1)
    assert str(p) in error_of(audio.load, p, duration=0)


# ---------------------------------------------------------------- formats


LOSSY = {  # suffix: (soundfile format, subtype, rate)
    ".ogg": ("OGG", "VORBIS", 44100),
    ".opus": ("OGG", "OPUS", 48000),
    ".mp3": ("MP3", "MPEG_LAYER_III", 44100),
}


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_lossless_round_trip(tmp_path, suffix, channels):
    x = tone(440, 22050, 0.5, 0.8, channels)
    p = audio.save(tmp_path / f"a{suffix}", x, 22050)
    meta = audio.info(p)
    assert (meta.sample_rate, meta.channels, meta.frames) == (22050, channels, x.shape[1])
    assert meta.format == suffix[1:].upper() and meta.subtype == "PCM_16"
    y, sr = audio.load(p)
    assert sr == 22050 and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() <= Q16


def test_float_wav_passes_through_unclipped(tmp_path):
    x = tone(amp=1.5, channels=2)
    y, _ = audio.load(write(tmp_path / "loud.wav", x, 44100, subtype="FLOAT"))
    assert y.dtype == np.float32 and np.array_equal(x, y) and y.max() > 1.4


@pytest.mark.parametrize("suffix", list(LOSSY))
def test_lossy_formats_decode_natively(tmp_path, suffix, monkeypatch):
    """libsndfile 1.2 writes and reads Ogg Vorbis, Ogg Opus and MP3 itself: no ffmpeg involved."""
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    fmt, subtype, sr = LOSSY[suffix]
    x = tone(1000, sr, 1.0, 0.5, 2)
    p = write(tmp_path / f"a{suffix}", x, sr, format=fmt, subtype=subtype)
    meta = audio.info(p)
    assert (meta.format, meta.subtype, meta.sample_rate, meta.channels) == (fmt, subtype, sr, 2)
    y, rate = audio.load(p)
    assert rate == sr and y.dtype == np.float32 and y.shape[0] == 2
    assert meta.frames == y.shape[1]
    assert np.array_equal(np.concatenate(list(audio.blocks(p, 1000)), axis=1), y)  # decoded in blocks, same samples
    assert abs(y.shape[1] - x.shape[1]) <= 1152
    for c in range(2):
        assert abs(peak_hz(y[c], sr) - 1000 * (c + 1)) <= 2
    assert 0.3 < np.abs(y).max() < 0.7


@pytest.mark.parametrize("suffix", list(LOSSY))
def test_lossy_segments_match_full_decode(tmp_path, suffix):
    fmt, subtype, sr = LOSSY[suffix]
    t = np.arange(3 * sr) / sr
    chirp = 0.4 * np.sin(2 * np.pi * (200 * t + 300 * t**2))  # tonal (MP3 seeks go wrong on tones), aperiodic
    x = np.stack([chirp, chirp[::-1]]).astype(np.float32)
    p = write(tmp_path / f"a{suffix}", x, sr, format=fmt, subtype=subtype)
    full, _ = audio.load(p)
    for frames in (1000, 65536):  # decoding in blocks gives the same samples (MP3: see audio._sf_blocks)
        assert np.array_equal(np.concatenate(list(audio.blocks(p, frames)), axis=1), full)
    for start in (0, 1, 4000, 33333, 2 * sr + 17):
        seg, _ = audio.load(p, offset=start / sr, duration=2000 / sr)
        assert seg.shape == (2, 2000)
        assert np.abs(seg - full[:, start:start + 2000]).max() < 1e-4, start


@pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg not on PATH")
def test_ffmpeg_fallback_m4a_multichannel(tmp_path):
    """AAC in MP4 is not a libsndfile format: decoded through ffmpeg, channel layout kept (5.1 = 6)."""
    src = write(tmp_path / "src.wav", tone(500, 48000, 1.0, 0.3, 6), 48000)
    p = tmp_path / "six.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(src), "-c:a", "aac", str(p)], check=True)
    meta = audio.info(p)
    assert (meta.format, meta.sample_rate, meta.channels) == ("ffmpeg", 48000, 6)
    y, sr = audio.load(p)
    assert sr == 48000 and y.shape[0] == 6 and abs(y.shape[1] - 48000) <= 2048
    assert np.array_equal(np.concatenate(list(audio.blocks(p, 10000)), axis=1), y)
    seg, _ = audio.load(p, offset=0.25, duration=0.5)
    assert seg.shape[0] == 6 and abs(seg.shape[1] - 24000) <= 2


@pytest.mark.skipif(shutil.which("lame") is None, reason="lame not on PATH")
def test_mp3_without_length_header_is_counted(tmp_path):
    """An MP3 without a Xing/LAME tag: the header only estimates the length, info() counts it."""
    src = audio.save(tmp_path / "src.wav", tone(seconds=2.0, channels=2), 44100)
    p = tmp_path / "notag.mp3"
    subprocess.run(["lame", "--quiet", "-t", str(src), str(p)], check=True)
    y, _ = audio.load(p)
    assert audio.info(p).frames == y.shape[1]
    assert np.array_equal(np.concatenate(list(audio.blocks(p, 4096)), axis=1), y)  # past the header's estimate


# ---------------------------------------------------------------- resampling, channels, segments


def test_resample_keeps_frequency_and_length():
    x = tone(1000, 44100, 1.0, 0.5)
    y = audio.resample(x, 44100, 16000)
    assert y.dtype == np.float32 and y.shape[0] == 1 and abs(y.shape[1] - 16000) <= 2
    assert abs(peak_hz(y[0], 16000) - 1000) <= 1
    ref = tone(1000, 16000, 1.0, 0.5)[0]
    n = min(len(ref), y.shape[1])
    assert np.abs(y[0, 200:n - 200] - ref[200:n - 200]).max() < 1e-3  # same phase, away from the edges


def test_load_resamples(tmp_path):
    p = audio.save(tmp_path / "a.flac", tone(1000, 44100, 1.0, 0.5, 2), 44100)
    y, sr = audio.load(p, sample_rate=16000, mono=True)
    assert sr == 16000 and y.shape[0] == 1 and abs(y.shape[1] - 16000) <= 2
    assert audio.resample(y, 16000, 16000) is y


@settings(max_examples=30, deadline=None, derandomize=True)
@given(n=st.integers(1, 5000), sr_in=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
       sr_out=st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]))
def test_resample_length_property(n, sr_in, sr_out):
    y = audio.resample(np.zeros((2, n), np.float32), sr_in, sr_out)
    assert y.shape[0] == 2 and y.shape[1] == audio.resampled_length(n, sr_in, sr_out)


def test_channel_conversions():
    stereo = np.array([[1.0, 0.0, -1.0], [0.0, 0.5, -0.5]], np.float32)
    assert np.allclose(audio.to_channels(stereo, 1), [[0.5, 0.25, -0.75]])
    mono = stereo[:1]
    assert np.array_equal(audio.to_channels(mono, 2), np.repeat(mono, 2, axis=0))
    assert audio.to_channels(stereo, 2) is stereo
    msg = error_of(audio.to_channels, np.zeros((3, 4), np.float32), 2)
    assert "3 channels to 2" in msg


def test_load_mono_is_channel_mean(tmp_path):
    x = tone(channels=2)
    p = write(tmp_path / "s.wav", x, 44100, subtype="FLOAT")
    y, _ = audio.load(p, mono=True)
    assert y.shape == (1, x.shape[1]) and np.allclose(y[0], x.mean(axis=0))


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_segments_exact(tmp_path, suffix):
    sr = 16000
    x = np.random.default_rng(3).uniform(-0.9, 0.9, (2, sr)).astype(np.float32)
    p = audio.save(tmp_path / f"a{suffix}", x, sr)
    full, _ = audio.load(p)
    for start, length in [(0, 1), (1, 100), (12345, 1000), (sr - 10, 10)]:
        seg, _ = audio.load(p, offset=start / sr, duration=length / sr)
        assert np.array_equal(seg, full[:, start:start + length]), (start, length)
    tail, _ = audio.load(p, offset=(sr - 10) / sr, duration=1.0)  # past the end: what is there
    assert np.array_equal(tail, full[:, -10:])
    rest, _ = audio.load(p, offset=0.5)
    assert np.array_equal(rest, full[:, sr // 2:])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(channels=st.integers(1, 8), n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1),
       suffix=st.sampled_from([".wav", ".flac"]), sr=st.sampled_from([8000, 16000, 44100]))
def test_save_load_round_trip_property(channels, n, seed, suffix, sr):
    x = np.random.default_rng(seed).uniform(-1, 1, (channels, n)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        p = audio.save(Path(d) / f"x{suffix}", x, sr)
        y, rate = audio.load(p)
        assert os.listdir(d) == [p.name]
        assert rate == sr and y.shape == x.shape and np.abs(y - x).max() <= Q16
        start, length = n // 3, max(1, n // 4)
        seg, _ = audio.load(p, offset=start / sr, duration=length / sr)
        assert np.array_equal(seg, y[:, start:start + length])


# ---------------------------------------------------------------- atomic save


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), RuntimeError("crash")])
def test_save_failure_keeps_original(tmp_path, monkeypatch, exc):
    out = audio.save(tmp_path / "out.wav", tone(), 44100)
    before = out.read_bytes()
    real_write = sf.SoundFile.write

    def half_write(self, data):
        real_write(self, data[: len(data) // 2])  # something on disk, then the failure
        raise exc

    monkeypatch.setattr(sf.SoundFile, "write", half_write)
    with pytest.raises((AudioError, RuntimeError)) as ei:
        audio.save(out, tone(300, channels=2), 44100)
    if isinstance(exc, OSError):
        assert isinstance(ei.value, AudioError) and str(out) in str(ei.value)
        assert "No space left" in str(ei.value)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.wav"]


def test_save_overwrite_false(tmp_path):
    out = audio.save(tmp_path / "out.flac", tone(), 44100)
    before = out.read_bytes()
    msg = error_of(audio.save, out, tone(300), 44100, overwrite=False)
    assert str(out) in msg and "already exists" in msg
    assert out.read_bytes() == before
    new = audio.save(tmp_path / "new.flac", tone(), 44100, overwrite=False)
    assert new.exists() and sorted(os.listdir(tmp_path)) == ["new.flac", "out.flac"]


def test_save_replaces_and_permissions(tmp_path):
    out = audio.save(tmp_path / "out.wav", tone(), 44100)
    audio.save(out, tone(channels=2), 44100)
    assert audio.info(out).channels == 2 and sorted(os.listdir(tmp_path)) == ["out.wav"]
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600


def test_save_refusals(tmp_path):
    assert "cannot write this format" in error_of(audio.save, tmp_path / "a.mp3", tone(), 44100)
    assert "does not exist" in error_of(audio.save, tmp_path / "no" / "a.wav", tone(), 44100)
    assert "NaN or Inf" in error_of(audio.save, tmp_path / "a.wav", tone() * np.nan, 44100)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- loudness, discovery


def test_loudness_of_known_sines():
    stereo = tone(1000, 48000, 1.0, 0.1, 1).repeat(2, axis=0)  # -20 dBFS peak on both channels
    assert audio.loudness_lufs(stereo, 48000) == pytest.approx(-20.0, abs=0.3)
    assert audio.loudness_lufs(stereo[:1], 48000) == pytest.approx(-23.0, abs=0.3)
    assert audio.loudness_lufs(np.zeros((1, 48000), np.float32), 48000) == -np.inf
    assert audio.loudness_lufs(stereo[:, :1000], 48000) == -np.inf
    assert np.isfinite(audio.loudness_lufs(np.repeat(stereo, 4, axis=0), 48000))  # 8 channels


def test_find_audio_files(tmp_path):
    for rel in ["b/c.FLAC", "a.wav", "z.mp3", "b/d.txt", ".hidden/e.wav", "._f.wav", "b/song.opus"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "folder.wav").mkdir()
    found = audio.find_audio_files(tmp_path)
    assert found == [tmp_path / "a.wav", tmp_path / "b/c.FLAC", tmp_path / "b/song.opus", tmp_path / "z.mp3"]
    assert audio.find_audio_files(tmp_path / "a.wav") == [tmp_path / "a.wav"]
    assert str(tmp_path / "gone") in error_of(audio.find_audio_files, tmp_path / "gone")


def test_audio_info_duration():
    assert AudioInfo("x.wav", 16000, 1, 8000, "WAV", "PCM_16").duration == 0.5


def test_save_blocks_writes_blocks_in_order_and_refuses_nothing(tmp_path):
    x = tone(1000, channels=2)
    blocks = [x[:, :10], x[:, 10:10], x[:, 10:700], x[:, 700:]]
    out = audio.save_blocks(tmp_path / "b.flac", iter(blocks), 44100, 2)
    y, _ = audio.load(out)
    assert np.abs(y - x).max() <= Q16
    with pytest.raises(AudioError, match="no audio samples"):
        audio.save_blocks(tmp_path / "empty.wav", [np.zeros((1, 0), np.float32)], 44100, 1)
    assert sorted(os.listdir(tmp_path)) == ["b.flac"]


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_wav_bytes_formats_decode_to_the_same_length(fmt):
    import io

    x = (0.3 * np.sin(np.arange(2, 16000) / 7.0)).astype(np.float32)[None].repeat(2, 0)
    y, sr = sf.read(io.BytesIO(audio.wav_bytes(x, 16000, fmt)), dtype="float32", always_2d=True)
    assert sr == 16000 and y.shape == (x.shape[1], 2)
    if fmt != "OGG":  # lossless up to 16-bit rounding
        assert np.abs(y.T - x).max() < 1e-4
