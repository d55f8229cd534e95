"""Decoding uploaded bytes that nothing vouches for, with bounded time and memory.

libsndfile reads what it recognises from memory (WAV, FLAC, Ogg, MP3, AIFF, ...). Other content goes to
ffmpeg only when its first bytes name a container we allow; ffmpeg then gets that demuxer forced
(``-f``), the bytes on stdin and only the ``pipe`` protocol, so no upload (an ``ffconcat`` list, an HLS
playlist) can make it open a file or a URL. Decoding stops as soon as the clip passes ``max_seconds``,
counted in decoded samples, whatever the headers say.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import threading

import numpy as np
import soundfile as sf

from audiovae.audio import MAX_CHANNELS, MIN_SAMPLE_RATE, AudioError, validate

MAX_RATE = 192_000  # Hz, below audio.MAX_SAMPLE_RATE: it keeps a clip of max_seconds in the server's memory
# (offset, magic bytes, ffmpeg demuxer): the containers ffmpeg may open, none of which reads other files.
CONTAINERS = (
    (4, b"ftyp", "mp4"),  # MP4 / M4A (AAC, ALAC)
    (0, b"\x1a\x45\xdf\xa3", "matroska"),  # Matroska / WebM
    (0, b"OggS", "ogg"),
    (0, b"wvpk", "wv"),  # WavPack
    (0, b"ID3", "mp3"),
    (0, b"fLaC", "flac"),
    (0, b"RIFF", "wav"),  # WAV codecs libsndfile lacks
    (0, b"\xff\xf1", "aac"),  # ADTS AAC (MPEG-4, MPEG-2)
    (0, b"\xff\xf9", "aac"),
)
_AU = struct.Struct(">4sIIIII")  # ffmpeg's AU output: magic, data offset, size, encoding (6: float), rate, channels


class TooLong(AudioError):
    """A clip longer than the server accepts."""


class Job:
    """The subprocesses of one worker-thread job, killed when the job is abandoned (its time ran out)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.abandoned = False

    def start(self, cmd: list[str]) -> subprocess.Popen:
        with self._lock:
            if self.abandoned:
                raise AudioError("the request ran out of time")
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self._procs.add(proc)
            return proc

    def stop(self, proc: subprocess.Popen) -> None:
        """Kill (if still running) and reap ``proc``."""
        proc.kill()
        proc.wait()
        with self._lock:
            self._procs.discard(proc)

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            procs = list(self._procs)
        for proc in procs:
            proc.kill()


def _limit(name: str, sample_rate: int, channels: int, max_seconds: float) -> int:
    """Frames allowed at this rate, after checking the rate and channels."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_RATE:
        raise AudioError(f"{name}: sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE} to {MAX_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{name}: unsupported channel count {channels} (1 to {MAX_CHANNELS} supported)")
    return int(max_seconds * sample_rate)


def _too_long(name: str, max_seconds: float) -> TooLong:
    return TooLong(f"{name}: longer than the limit of {max_seconds:g} s")


def _soundfile(f: sf.SoundFile, name: str, max_seconds: float) -> tuple[np.ndarray, int]:
    """One read into a buffer one frame longer than allowed (pages are committed only as they fill)."""
    with f:
        limit = _limit(name, f.samplerate, f.channels, max_seconds)
        buf = np.empty((limit + 1, f.channels), dtype=np.float32)
        try:
            n = len(f.read(out=buf))
        except sf.LibsndfileError as e:
            raise AudioError(f"{name}: could not be decoded ({e.error_string})") from None
        if n > limit:
            raise _too_long(name, max_seconds)
        return np.ascontiguousarray(buf[:n].T), int(f.samplerate)


def _demuxer(data: bytes) -> str | None:
    return next((fmt for at, magic, fmt in CONTAINERS if data[at : at + len(magic)] == magic), None)


def _ffmpeg(data: bytes, fmt: str, name: str, max_seconds: float, job: Job) -> tuple[np.ndarray, int]:
    """Decode with ffmpeg from stdin to float AU on stdout, read into a buffer one value longer than allowed."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioError(f"{name}: a format this server reads only with ffmpeg, which is not installed")
    cmd = [exe, "-nostdin", "-hide_banner", "-v", "error", "-protocol_whitelist", "pipe", "-f", fmt, "-i", "pipe:0",
           "-map", "0:a:0", "-t", f"{max_seconds + 1:g}", "-c:a", "pcm_f32be", "-f", "au", "pipe:1"]
    proc = job.start(cmd)
    errors = bytearray()
    threads = [threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True),
               threading.Thread(target=_drain, args=(proc.stderr, errors), daemon=True)]
    for t in threads:
        t.start()
    try:
        head = proc.stdout.read(_AU.size)
        if len(head) < _AU.size:
            proc.wait()
            threads[1].join()
            detail = " ".join(errors.decode("utf-8", "replace").split())[:200] or "no audio stream"
            raise AudioError(f"{name}: not an audio file, or one that cannot be decoded (ffmpeg: {detail})")
        magic, offset, _, encoding, rate, channels = _AU.unpack(head)
        if magic != b".snd" or encoding != 6 or not _AU.size <= offset <= 4096:
            raise AudioError(f"{name}: unexpected output from ffmpeg")
        limit = _limit(name, rate, channels, max_seconds)
        proc.stdout.read(offset - _AU.size)
        buf = np.empty(limit * channels + 1, dtype=">f4")
        view, n = memoryview(buf).cast("B"), 0
        while n < len(view) and (k := proc.stdout.readinto(view[n:])):
            n += k
        if job.abandoned:
            raise AudioError("the request ran out of time")
        if n == len(view):
            raise _too_long(name, max_seconds)
    finally:
        job.stop(proc)
        for t in threads:
            t.join()
    frames = n // (4 * channels)
    return np.ascontiguousarray(buf[: frames * channels].reshape(frames, channels).T, dtype=np.float32), rate


def _feed(pipe, data: bytes) -> None:
    """Write ``data`` to ``pipe`` and close it."""
    try:
        with pipe:
            pipe.write(data)
    except BrokenPipeError:
        pass  # ffmpeg stopped reading (done, refused the input, or killed): its output says what happened


def _drain(pipe, keep: bytearray, size: int = 4096) -> None:
    """Read ``pipe`` to its end (so that the writer never blocks), keeping its first ``size`` bytes."""
    while chunk := pipe.read(1 << 16):
        keep += chunk[: max(0, size - len(keep))]


def decode(data: bytes, name: str, max_seconds: float, job: Job) -> tuple[np.ndarray, int]:
    """Uploaded bytes -> float32 (channels, samples) and rate; ``AudioError`` (``TooLong`` over ``max_seconds``)
    with one line naming ``name``, never a server path."""
    if not data:
        raise AudioError(f"{name}: empty file (0 bytes)")
    try:
        x, sr = _soundfile(sf.SoundFile(io.BytesIO(data)), name, max_seconds)
    except sf.LibsndfileError as e:
        fmt = _demuxer(data)
        if fmt is None:
            raise AudioError(f"{name}: not an audio file, or a format this server does not read "
                             f"({e.error_string.rstrip('.')})") from None
        x, sr = _ffmpeg(data, fmt, name, max_seconds, job)
    validate(x, name=name)
    return x, sr
