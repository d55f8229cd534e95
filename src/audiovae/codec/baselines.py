"""Classic codecs for side-by-side benchmarks: Opus (opus-tools), Codec2 and MP3 (lame), run as the
command-line tools users have. The bitrate is measured from the encoded file's size."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from audiovae.audio import resample
from audiovae.errors import AudioVAEError

TOOLS = {"opus": (("opusenc", "opusdec"), "opus-tools"), "codec2": (("c2enc", "c2dec"), "codec2"),
         "mp3": (("lame",), "lame")}


@dataclass
class Coded:
    """A round trip through a codec: decoded audio at the input rate and what it cost."""

    audio: np.ndarray
    bytes: int
    kbps: float
    encode_s: float
    decode_s: float


def missing_tools(codecs=TOOLS) -> list[str]:
    """apt packages to install for the codecs whose tools are not on PATH."""
    return sorted({pkg for name in codecs for pkg in [TOOLS[name][1]]
                   if any(shutil.which(t) is None for t in TOOLS[name][0])})


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise AudioVAEError(f"{cmd[0]} failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def roundtrip(codec: str, x: np.ndarray, sample_rate: int, kbps: float) -> Coded:
    """Encode and decode mono float32 ``x`` with ``codec`` (opus, codec2, mp3) at nominal ``kbps``."""
    if codec not in TOOLS:
        raise AudioVAEError(f"unknown baseline codec '{codec}' (known: {', '.join(TOOLS)})")
    if missing_tools([codec]):
        raise AudioVAEError(f"{codec}: tools missing; install them with: apt-get install {TOOLS[codec][1]}")
    with tempfile.TemporaryDirectory(prefix="audiovae-baseline-") as d:
        tmp = Path(d)
        if codec == "codec2":
            return _codec2(x, sample_rate, int(kbps * 1000), tmp)
        sf.write(tmp / "in.wav", x, sample_rate, subtype="PCM_16")
        if codec == "opus":
            enc = _run(["opusenc", "--quiet", "--bitrate", f"{kbps:g}", str(tmp / "in.wav"), str(tmp / "c.opus")])
            dec = _run(["opusdec", "--quiet", "--rate", str(sample_rate), str(tmp / "c.opus"), str(tmp / "out.wav")])
            coded = tmp / "c.opus"
        else:
            enc = _run(["lame", "--quiet", "-m", "m", "-b", f"{int(kbps)}", str(tmp / "in.wav"), str(tmp / "c.mp3")])
            dec = _run(["lame", "--quiet", "--decode", str(tmp / "c.mp3"), str(tmp / "out.wav")])
            coded = tmp / "c.mp3"
        y, sr = sf.read(tmp / "out.wav", dtype="float32", always_2d=True)
        y = resample(y.T, sr, sample_rate)[0]
        return _finish(x, y, coded.stat().st_size, sample_rate, enc, dec)


def _codec2(x: np.ndarray, sample_rate: int, bps: int, tmp: Path) -> Coded:
    pcm = np.clip(resample(x[None], sample_rate, 8000)[0], -1, 1)
    (tmp / "in.raw").write_bytes((pcm * 32767).astype("<i2").tobytes())
    enc = _run(["c2enc", str(bps), str(tmp / "in.raw"), str(tmp / "c.c2")])
    dec = _run(["c2dec", str(bps), str(tmp / "c.c2"), str(tmp / "out.raw")])
    y = np.frombuffer((tmp / "out.raw").read_bytes(), dtype="<i2").astype(np.float32) / 32768
    return _finish(x, resample(y[None], 8000, sample_rate)[0], (tmp / "c.c2").stat().st_size, sample_rate, enc, dec)


def align(x: np.ndarray, y: np.ndarray, max_lag: int = 4096) -> np.ndarray:
    """``y`` shifted by the lag (within +-max_lag samples) that best correlates it with ``x``: lame and
    Codec2 add their codec delay to the decoded file."""
    n = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    max_lag = min(max_lag, n // 2 - 1)  # short clips: lags past half the FFT length would wrap around
    corr = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    lag = int(lags[np.argmax(corr[lags])])
    y = y[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, y.dtype), y])
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]


def _finish(x: np.ndarray, y: np.ndarray, size: int, sample_rate: int, enc: float, dec: float) -> Coded:
    y = align(x, y.astype(np.float32))
    return Coded(y, size, size * 8 / (len(x) / sample_rate) / 1000, enc, dec)
