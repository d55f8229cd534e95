"""Audio I/O: read any common format to float32 (channels, samples), resample, write atomically.

Arrays are always shaped (channels, samples), float32. Integer formats decode to [-1, 1); float
files are passed through unclipped (clipping would silently lose data), writing integer formats
clips. Every failure raises ``AudioError`` with one line naming the file and the problem.

libsndfile (bundled with soundfile) decodes WAV, FLAC, Ogg Vorbis, Ogg Opus, MP3, AIFF, AU, ...;
ffmpeg, when installed, is used only for what libsndfile does not recognise (e.g. M4A/AAC).
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audiovae.errors import AudioVAEError
from audiovae.files import replaced

MAX_CHANNELS = 8
# Sample rates a file may declare: below, resampling a few header bytes up to a model's rate would run for
# hours; above, one block of samples would not fit in memory.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".m4a")
WRITE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}
# libsndfile error codes meaning "not a format I know" (1: unrecognised, 4: unsupported encoding,
# 7: what its MP3 reader answers for bytes that are not MPEG audio): worth asking ffmpeg.
_SF_UNRECOGNISED = {1, 4, 7}
# After a seek, MP3 frames depend on earlier ones (bit reservoir, overlap): decode a few frames
# before the target and drop them, so a segment equals the same span of a full decode.
_MP3_FRAME = 1152
_MP3_PREROLL = 4 * _MP3_FRAME


class AudioError(AudioVAEError):
    """Unreadable, empty, non-finite or otherwise unusable audio."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _oneline(s: str, limit: int = 200) -> str:
    s = " ".join(re.sub(r"\[[\w:]+ @ 0x[0-9a-f]+\] ", "", str(s)).split())  # ffmpeg's "[mp3 @ 0x55..] "
    return s if len(s) <= limit else "..." + s[-limit:]


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")
    return p


def _check_channels(name: str, channels: int) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{name}: unsupported channel count {channels} (1 to {MAX_CHANNELS} supported)")


def check_sample_rate(name: str, sample_rate: int) -> None:
    """Refuse a rate outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] Hz, before anything is sized by it."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{name}: unsupported sample rate {sample_rate} Hz "
                         f"({MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz supported)")


def _sf_open(p: Path) -> sf.SoundFile | None:
    """Open with libsndfile; None when it does not know the format (ffmpeg may)."""
    try:
        return sf.SoundFile(str(p))
    except TypeError:  # a suffix libsndfile takes for headerless RAW (.raw): it needs a rate we lack
        return None
    except sf.LibsndfileError as e:
        if e.code in _SF_UNRECOGNISED:
            return None
        raise AudioError(f"{p}: malformed or unreadable audio file ({_oneline(e.error_string)})") from None


def _ffmpeg_to_wav(p: Path, out: Path, offset: float = 0.0, duration: float | None = None) -> None:
    """Decode the first audio stream of ``p`` with ffmpeg into the float WAV ``out``."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioError(f"{p}: not an audio file, or a format soundfile cannot read "
                         "(ffmpeg, which reads more formats, is not installed: apt-get install ffmpeg)")
    cmd = [exe, "-nostdin", "-hide_banner", "-v", "error"]
    if offset:
        cmd += ["-ss", f"{offset:.6f}"]
    cmd += ["-i", f"file:{p}", "-map", "0:a:0"]  # file: so names like "a:b.mp3" are not protocols
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    cmd += ["-c:a", "pcm_f32le", "-rf64", "auto", "-f", "wav", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if r.returncode != 0 or not out.exists():
        detail = _oneline(r.stderr) or f"exit status {r.returncode}"
        raise AudioError(f"{p}: not an audio file, or one that cannot be decoded (ffmpeg: {detail})")


def _ffmpeg_decode(p: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    """Decode with ffmpeg into a temporary float WAV, read back with soundfile."""
    with tempfile.TemporaryDirectory(prefix="audiovae-") as d:
        out = Path(d) / "decoded.wav"
        _ffmpeg_to_wav(p, out, offset, duration)
        x, sr = sf.read(str(out), dtype="float32", always_2d=True)
    return np.ascontiguousarray(x.T), int(sr)


def info(path: str | os.PathLike) -> AudioInfo:
    """Header information without decoding the samples.

    MP3 headers only estimate the length, so MP3 frames are counted by decoding (in blocks); formats
    only ffmpeg reads are decoded to a temporary file.
    """
    p = _check_path(path)
    f = _sf_open(p)
    if f is None:
        with tempfile.TemporaryDirectory(prefix="audiovae-") as d:
            _ffmpeg_to_wav(p, Path(d) / "decoded.wav")
            i = sf.info(str(Path(d) / "decoded.wav"))
        check_sample_rate(str(p), int(i.samplerate))
        return AudioInfo(str(p), int(i.samplerate), int(i.channels), int(i.frames), "ffmpeg", "FLOAT")
    with f:
        check_sample_rate(str(p), int(f.samplerate))
        frames = f.frames
        if f.format == "MP3" or not 0 <= frames < 2**62:
            buf = np.empty((65536, f.channels), dtype=np.float32)
            frames = 0
            try:
                while (n := len(f.read(out=buf))) > 0:
                    frames += n
            except sf.LibsndfileError as e:
                raise AudioError(f"{p}: could not be decoded ({_oneline(e.error_string)})") from None
        return AudioInfo(str(p), int(f.samplerate), int(f.channels), int(frames), f.format, f.subtype)


def _read_segment(p: Path, f: sf.SoundFile, start: int, frames: int | None) -> np.ndarray:
    pre = min(start, _MP3_PREROLL) if f.format == "MP3" else 0
    try:
        f.seek(start - pre)
        x = f.read(-1 if frames is None else frames + pre, dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        if start > 0 and e.code == 39:  # seek past the end
            return np.zeros((f.channels, 0), dtype=np.float32)
        raise AudioError(f"{p}: could not be decoded ({_oneline(e.error_string)})") from None
    return np.ascontiguousarray(x[pre:].T)


def load(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = False,
    offset: float = 0.0,
    duration: float | None = None,
) -> tuple[np.ndarray, int]:
    """Read ``path`` (optionally a segment) as float32 (channels, samples); resample if asked.

    ``offset`` and ``duration`` are in seconds of the file's own rate, rounded to whole samples: a
    segment is exactly that span of a full decode for WAV/FLAC/Ogg/MP3 read by soundfile (ffmpeg
    seeks are accurate to a few samples). A segment may be shorter than ``duration`` at the end.
    Returns ``(audio, rate)`` where ``rate`` is ``sample_rate`` when given, else the file's rate.
    """
    p = _check_path(path)
    if offset < 0 or (duration is not None and duration <= 0):
        raise AudioError(f"{p}: need offset >= 0 and duration > 0 (got {offset}, {duration})")
    if sample_rate is not None:
        check_sample_rate(f"{p}: target", sample_rate)
    f = _sf_open(p)
    if f is None:
        x, sr = _ffmpeg_decode(p, offset, duration)
        check_sample_rate(str(p), sr)
    else:
        with f:
            sr = int(f.samplerate)
            check_sample_rate(str(p), sr)  # before decoding what would be refused anyway
            _check_channels(str(p), f.channels)
            frames = None if duration is None else max(1, round(duration * sr))
            x = _read_segment(p, f, round(offset * sr), frames)
    if x.shape[1] == 0 and offset > 0:
        raise AudioError(f"{p}: offset {offset:g} s is at or past the end of the audio")
    validate(x, name=str(p))
    if mono:
        x = x.mean(axis=0, keepdims=True)
    if sample_rate is not None and sample_rate != sr:
        x = resample(x, sr, sample_rate)
        sr = sample_rate
    return x, sr


def blocks(path: str | os.PathLike, frames: int) -> Iterator[np.ndarray]:
    """Decode ``path`` as float32 (channels, n) blocks of ``frames`` samples (the last may be shorter),
    each validated: memory stays bounded however long the file is."""
    p = _check_path(path)
    f = _sf_open(p)
    if f is None:
        with tempfile.TemporaryDirectory(prefix="audiovae-") as d:
            _ffmpeg_to_wav(p, Path(d) / "decoded.wav")
            yield from _sf_blocks(sf.SoundFile(str(Path(d) / "decoded.wav")), p, frames)
        return
    yield from _sf_blocks(f, p, frames)


def _sf_blocks(f: sf.SoundFile, p: Path, frames: int) -> Iterator[np.ndarray]:
    """Blocks read with ``read(out=)``, which reads past an MP3 header's length estimate. libsndfile 1.2's
    MP3 reads glitch where one read ends and the next begins, so there each block is read as a segment: a
    seek to a multiple of the MPEG frame, at least ``_MP3_PREROLL`` samples before it, decoded and dropped
    (this equals a one-piece decode exactly; unaligned seeks do not)."""
    with f:
        check_sample_rate(str(p), int(f.samplerate))
        _check_channels(str(p), f.channels)
        mp3 = f.format == "MP3"
        buf = np.empty((frames + (_MP3_PREROLL + _MP3_FRAME if mp3 else 0), f.channels), dtype=np.float32)
        start = 0
        try:
            while True:
                back = min(start, _MP3_PREROLL + start % _MP3_FRAME) if mp3 else 0
                if mp3:
                    f.seek(start - back)
                n = len(f.read(out=buf[: frames + back])) - back
                if n > 0:
                    x = buf[back : back + n].T.copy()
                    validate(x, name=str(p))
                    yield x
                    start += n
                if n < frames:
                    return
        except sf.LibsndfileError as e:
            raise AudioError(f"{p}: could not be decoded ({_oneline(e.error_string)})") from None


def validate(x: np.ndarray, name: str = "audio") -> None:
    """Reject what no model can use: wrong shape, no samples, too many channels, NaN/Inf."""
    if x.ndim != 2:
        raise AudioError(f"{name}: expected (channels, samples), got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise AudioError(f"{name}: no audio samples (0 frames)")
    _check_channels(name, x.shape[0])
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: contains NaN or Inf samples")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (channels, samples) float32 with soxr (high quality); length becomes n * sr_out / sr_in."""
    check_sample_rate("resampling from", sr_in)
    check_sample_rate("resampling to", sr_out)
    if sr_in == sr_out:
        return x
    y = soxr.resample(np.ascontiguousarray(x.T, dtype=np.float32), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(y.T, dtype=np.float32)


def resampled_length(n: int, sr_in: int, sr_out: int) -> int:
    """Samples that ``resample`` (and a flushed ``soxr.ResampleStream``) gives for ``n``: round half up."""
    return (2 * n * sr_out + sr_in) // (2 * sr_in)


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Mix down to mono (mean), or repeat mono; other conversions are refused."""
    if x.shape[0] == channels:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    if x.shape[0] == 1 and 1 <= channels <= MAX_CHANNELS:
        return np.repeat(x, channels, axis=0)
    raise AudioError(f"cannot convert {x.shape[0]} channels to {channels} "
                     "(only mixing down to mono or repeating mono is supported)")


IN_MEMORY_FORMATS = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "OPUS"}


def wav_bytes(x: np.ndarray, sample_rate: int, fmt: str = "WAV") -> bytes:
    """(channels, samples) float32 -> an audio file in memory (clipped to [-1, 1]): 16-bit WAV, 16-bit FLAC
    (lossless, half the size) or Ogg Opus (``fmt="OGG"``, lossy and small, for listening pages; Opus takes
    8, 12, 16, 24 or 48 kHz)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0).T, sample_rate, format=fmt, subtype=IN_MEMORY_FORMATS[fmt])
    return buf.getvalue()


def save(path: str | os.PathLike, x: np.ndarray, sample_rate: int, overwrite: bool = True) -> Path:
    """Write WAV or FLAC (16-bit) atomically: a temp file in the same folder, then a rename.

    An existing ``path`` is either left untouched or fully replaced; on failure no temp file remains.
    With ``overwrite=False`` an existing ``path`` is refused (also one created while writing).
    """
    validate(x, name=str(path))
    return save_blocks(path, [x], sample_rate, x.shape[0], overwrite)


def save_blocks(path: str | os.PathLike, blocks: Iterable[np.ndarray], sample_rate: int, channels: int,
                overwrite: bool = True) -> Path:
    """``save`` for audio that arrives in (channels, n) blocks, written as they come (bounded memory)."""
    p = Path(path)
    fmt = WRITE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise AudioError(f"{p}: cannot write this format (use {', '.join(WRITE_FORMATS)})")
    if not overwrite and p.exists():
        raise AudioError(f"{p}: already exists (not overwriting it)")
    if not p.parent.is_dir():
        raise AudioError(f"{p}: folder {p.parent} does not exist")
    check_sample_rate(str(p), sample_rate)
    try:
        with replaced(p, overwrite) as tmp:
            frames = 0
            with sf.SoundFile(str(tmp), "w", sample_rate, channels, subtype=fmt[1], format=fmt[0]) as f:
                for x in blocks:
                    if x.shape[1]:
                        validate(x, name=str(p))
                        f.write(np.clip(x, -1.0, 1.0).T)
                        frames += x.shape[1]
            if frames == 0:
                raise AudioError(f"{p}: no audio samples (0 frames)")
    except FileExistsError:
        raise AudioError(f"{p}: already exists (not overwriting it)") from None
    except (OSError, sf.LibsndfileError) as e:
        raise AudioError(f"{p}: cannot write ({_oneline(getattr(e, 'strerror', None) or e)})") from None
    return p


def loudness_lufs(x: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770) in LUFS; -inf for silence or clips shorter than 0.4 s.

    BS.1770 weights at most 5 channels (L, R, C, Ls, Rs); more channels are measured as their mean.
    """
    import pyloudnorm

    if x.shape[1] < int(0.4 * sample_rate):
        return -math.inf
    if x.shape[0] > 5:
        x = x.mean(axis=0, keepdims=True)
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(x.T.astype(np.float64)))


def find_audio_files(root: str | os.PathLike) -> list[Path]:
    """Audio files under ``root`` by extension, sorted; hidden files and folders (``.x``, ``._x``) skipped."""
    r = Path(root)
    if r.is_file():
        return [r]
    if not r.is_dir():
        raise AudioError(f"{r}: no such file or folder")
    return sorted(
        q for q in r.rglob("*")
        if q.suffix.lower() in AUDIO_EXTENSIONS and q.is_file()
        and not any(part.startswith(".") for part in q.relative_to(r).parts)
    )
