"""Audio I/O: read any common format to float32 (channels, samples), resample, write atomically.

Arrays are always shaped (channels, samples), float32. Integer formats decode to [-1, 1); float
files are passed through unclipped (clipping would silently lose data), writing integer formats
clips. Every failure raises ``AudioError`` with one line naming the file and the problem.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audiovae.errors import AudioVAEError

MAX_CHANNELS = 8
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".m4a")
WRITE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}


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


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")
    return p


def info(path: str | os.PathLike) -> AudioInfo:
    """Header information without decoding the samples (falls back to a full decode via ffmpeg)."""
    p = _check_path(path)
    try:
        i = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError):
        x, sr = _ffmpeg_decode(p, None, None)
        return AudioInfo(str(p), sr, x.shape[0], x.shape[1], "ffmpeg", "float")
    frames = i.frames
    if frames <= 0 or frames > 2**62:  # some containers (mp3, ogg) report no length: count by decoding
        frames = _decode_sf(p, 0, None)[0].shape[1]
    return AudioInfo(str(p), int(i.samplerate), int(i.channels), int(frames), i.format, i.subtype)


def _decode_sf(p: Path, start: int, frames: int | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(p)) as f:
        if start:
            f.seek(start)
        x = f.read(frames if frames is not None else -1, dtype="float32", always_2d=True)
        return x.T, int(f.samplerate)


def _ffmpeg_decode(p: Path, offset: float | None, duration: float | None) -> tuple[np.ndarray, int]:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioError(f"{p}: not a readable audio file (soundfile cannot decode it; "
                         "installing ffmpeg adds more formats: apt-get install ffmpeg)")
    probe = subprocess.run([exe, "-hide_banner", "-i", str(p)], capture_output=True, text=True)
    sr, ch = _parse_ffmpeg_stream(probe.stderr)
    if sr is None:
        raise AudioError(f"{p}: not an audio file (no audio stream found)")
    cmd = [exe, "-v", "error", "-nostdin"]
    if offset:
        cmd += ["-ss", f"{offset:.6f}"]
    cmd += ["-i", str(p)]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
    out = subprocess.run(cmd, capture_output=True)
    if out.returncode != 0:
        raise AudioError(f"{p}: could not be decoded ({out.stderr.decode(errors='replace').strip()[:200]})")
    x = np.frombuffer(out.stdout, dtype="<f4").reshape(-1, ch).T.copy()
    return x, sr


def _parse_ffmpeg_stream(stderr: str) -> tuple[int | None, int]:
    for line in stderr.splitlines():
        if "Audio:" in line:
            parts = [s.strip() for s in line.split("Audio:", 1)[1].split(",")]
            sr = next((int(s.split()[0]) for s in parts if s.endswith("Hz")), None)
            layout = parts[2] if len(parts) > 2 else "mono"
            ch = {"mono": 1, "stereo": 2}.get(layout.split("(")[0], None)
            if ch is None:
                ch = int(layout.split()[0]) if layout.split()[0].isdigit() else 2
            return sr, ch
    return None, 0


def load(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = False,
    offset: float = 0.0,
    duration: float | None = None,
) -> tuple[np.ndarray, int]:
    """Read ``path`` (optionally a segment) as float32 (channels, samples); resample if asked.

    Returns ``(audio, rate)`` where ``rate`` is ``sample_rate`` when given, else the file's rate.
    """
    p = _check_path(path)
    try:
        with sf.SoundFile(str(p)) as f:
            sr = int(f.samplerate)
        start = int(round(offset * sr))
        frames = None if duration is None else int(round(duration * sr))
        x, sr = _decode_sf(p, start, frames)
    except (sf.LibsndfileError, RuntimeError) as e:
        if "unrecognised" not in str(e).lower() and "format" not in str(e).lower():
            raise AudioError(f"{p}: could not be decoded ({str(e).splitlines()[0]})") from None
        x, sr = _ffmpeg_decode(p, offset or None, duration)
    validate(x, name=str(p))
    if mono:
        x = x.mean(axis=0, keepdims=True)
    if sample_rate is not None and sample_rate != sr:
        x = resample(x, sr, sample_rate)
        sr = sample_rate
    return x, sr


def validate(x: np.ndarray, name: str = "audio") -> None:
    """Reject what no model can use: wrong shape, no samples, too many channels, NaN/Inf."""
    if x.ndim != 2:
        raise AudioError(f"{name}: expected (channels, samples), got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise AudioError(f"{name}: no audio samples (0 frames)")
    if not 1 <= x.shape[0] <= MAX_CHANNELS:
        raise AudioError(f"{name}: unsupported channel count {x.shape[0]} (1 to {MAX_CHANNELS} supported)")
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: contains NaN or Inf samples")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (channels, samples) float32 with soxr (high quality)."""
    if sr_in == sr_out:
        return x
    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(y.T, dtype=np.float32)


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Mix down to mono, or repeat mono; other conversions are refused."""
    if x.shape[0] == channels:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    if x.shape[0] == 1:
        return np.repeat(x, channels, axis=0)
    raise AudioError(f"cannot convert {x.shape[0]} channels to {channels}")


def save(path: str | os.PathLike, x: np.ndarray, sample_rate: int, overwrite: bool = True) -> Path:
    """Write WAV or FLAC (16-bit) atomically: a temp file in the same folder, then a rename."""
    p = Path(path)
    fmt = WRITE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise AudioError(f"{p}: cannot write this format (use {', '.join(WRITE_FORMATS)})")
    if p.exists() and not overwrite:
        raise AudioError(f"{p}: already exists (use --force to overwrite)")
    validate(x, name=str(p))
    if not p.parent.is_dir():
        raise AudioError(f"{p}: folder {p.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(x, -1.0, 1.0).T, sample_rate, format=fmt[0], subtype=fmt[1])
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def loudness_lufs(x: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770) in LUFS; -inf for silence or clips shorter than 0.4 s."""
    import pyloudnorm

    if x.shape[1] < int(0.4 * sample_rate):
        return -math.inf
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(x.T.astype(np.float64)))


def find_audio_files(root: str | os.PathLike) -> list[Path]:
    """All audio files under ``root`` (by extension), sorted for determinism."""
    r = Path(root)
    if r.is_file():
        return [r]
    return sorted(q for q in r.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS)
