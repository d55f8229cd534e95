"""Bandwidth extension: an optional layer of the codec that rebuilds the band above the model's Nyquist.

The model codes the signal at its own rate (speech16k: 8 kHz of band, music24k: 12 kHz), so a 44.1 kHz
input came back without its top octave. With the extension, the encoder measures the original's envelope
above the model's Nyquist frequency, at the original rate: per frame and band a level in ``STEP_DB`` decibel
steps and a noise flag, coded after the chunk's latents (a few hundred bits per second). The decoder takes its
output after resampling to the original rate, fills the band by translating the decoded band below the
crossover upwards (spectral band replication, shifted by an even number of bins so that the 50 % overlapped
frames stay in phase), whitened against its running mean power so that the decoded band's stationary lines and
notches are not copied, mixed with noise (all noise where the flag says the original is noise-like and its source
band is not), and scales each band to the coded level.

Frames are those of refine.py at the original rate with ``hop`` about ``sample_rate // FRAME_RATE``. Version 2 codes
the envelope at points every ``span`` frames of a chunk (and at its last), the span written in the chunk, and the
decoder interpolates the levels between them; its encoder leaves out the levels far below a channel's loudest,
and takes span 2 for a chunk that content.py's music-or-speech check calls speech (reading the last
``CONTENT_SECONDS`` up to the chunk's end: causal), span 1 otherwise. Channels after the first are coded as
differences from the first: channels that agree cost almost nothing.
Version 3 codes as version 2 but starts the band at ``EDGE`` / 1000 of the model's Nyquist frequency: the decoder's
resampler (soxr HQ) is -3 dB at 0.95 of it and -39 dB at 0.983, so a band from the Nyquist frequency up left a notch
there (a dark line at 11.4-12 kHz in decoded music); versions 1 and 2 keep their layout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import numpy as np
import scipy.fft
from scipy.signal import lfilter

from audiovae.codec.content import MUSIC_FROM, music_probability
from audiovae.codec.entropy import _CATEGORICAL, RADIUS, TOTAL, _models, _queue, exact_pmf, logistic_tables
from audiovae.codec.refine import _Frames, frame_count

VERSION = 3
VERSIONS = (1, 2, 3)  # the versions ``decode`` reads: 1 has a point every frame, 3 its band lower
FRAME_RATE = 40  # frames per second: hop = sample_rate // FRAME_RATE (25 ms), window twice that
BANDS = 8  # bands of equal width from the crossover to the top
EDGE = 940  # version 3: the band starts at EDGE / 1000 of the model's Nyquist (the resampler's passband edge)
TOP_HZ = 20000  # the band ends here, or at the input's Nyquist frequency below it
MIN_WIDTH_HZ = 1000  # a narrower band above the model's is not extended
STEP_DB = 3.0
SPANS = (1, 2, 4, 8)  # version 2: the frames from one point of the envelope to the next that a decoder reads
SPAN = 1  # ``encode``'s default, and the encoder's for a chunk that sounds like music (or is too short to tell)
SPEECH_SPAN = 2  # the encoder's for a chunk that sounds like speech: a third fewer bits, same ViSQOL (music: -0.05)
CONTENT_SECONDS = 10.0  # the music-or-speech check (content.py) reads at most this much audio up to a chunk's end
MIN_CONTENT_SECONDS = 0.5  # and needs this much
FLOOR = 16  # steps: the encoder leaves out a level this far below the loudest of its channel in the chunk
HOLD = 0.75  # steps: the encoder keeps a band's level while it is off by less (at most 2.25 dB)
LEVELS = 48  # level 0: silent; level s > 0: mean bin power (rfft of a windowed frame, / hop) 3 (s - ZERO) dB
ZERO = 36
MODES = 4  # per channel: 0 coded against channel 0, 1 + w in time with band weight w / 2 (channel 0: 1 .. 3)
CENTER_LIMIT = 32  # |band centers| of the coded residuals: with |residual| <= 2 LEVELS no symbol escapes
NOISE_MARGIN = 0.2  # a band is noise when its flatness exceeds that of its source band by this much
SNAP = 1  # steps: a channel this close to channel 0 plus its mean offset over the chunk takes that level
MIX = 0.5  # the share of noise in the power of a band that is not flagged as noise
DECAY = 0.95  # per frame: the running mean power that whitens the source bins spans about a second
_TABLES = logistic_tables()
_PMF = exact_pmf(_TABLES)
_COST = np.log2(TOTAL / _TABLES[:, 0])  # (scales, symbols): tables centred on the band's center
_FLAG_PMF = exact_pmf(np.array([[TOTAL - (TOTAL >> (k + 1)), TOTAL >> (k + 1)] for k in range(16)]))
_FLAG_COST = np.log2(TOTAL / np.array([[TOTAL - (TOTAL >> (k + 1)), TOTAL >> (k + 1)] for k in range(16)]))
_UNIFORM = _models.Uniform(LEVELS)
_BAND = struct.Struct("<bB")  # a band's residual center and table index
_SPAN = struct.Struct("<HB")  # version 2: the chunk's frames and span
_SMOOTH = np.array([1 - DECAY, 1, -DECAY], np.float32)  # the whitening's running mean: b, then a
_PHASES = np.exp(2j * np.pi * np.arange(256) / 256).astype(np.complex64)  # the noise's phases


def possible(sample_rate: int, model_rate: int) -> bool:
    """Whether an input at ``sample_rate`` has at least ``MIN_WIDTH_HZ`` of band above the model's."""
    return min(sample_rate, 2 * TOP_HZ) - model_rate >= 2 * MIN_WIDTH_HZ


def fast_hop(hop: int) -> int:
    """The least ``h >= hop`` whose frame length ``2 h`` has no prime factor above 5 (a fast FFT)."""
    while True:
        n = 2 * hop
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        if n == 1:
            return hop
        hop += 1


class _Frames32(_Frames):
    """refine.py's frames, held and transformed in single precision."""

    def __init__(self, channels: int, hop: int):
        super().__init__(channels, hop)
        self.buf, self.window = self.buf.astype(np.float32), self.window.astype(np.float32)

    def push(self, block: np.ndarray) -> None:
        super().push(np.asarray(block, np.float32))

    def take(self, n: int) -> np.ndarray:
        frames = np.lib.stride_tricks.sliding_window_view(self.buf[:, : (n + 1) * self.hop], 2 * self.hop, axis=-1)
        spectra = scipy.fft.rfft(frames[:, :: self.hop] * self.window, axis=-1)
        self.buf, self.next = self.buf[:, n * self.hop :], self.next + n
        return spectra


class Layout:
    """Frame hop, band edges (rfft bins of a ``2 * hop`` frame) and the source bin of every extended bin."""

    def __init__(self, sample_rate: int, model_rate: int, version: int = VERSION):
        if not possible(sample_rate, model_rate):
            raise ValueError(f"no band to extend from {model_rate} Hz to {sample_rate} Hz")
        self.hop = hop = fast_hop(sample_rate // FRAME_RATE)
        edge = EDGE if version >= 3 else 1000  # versions 1 and 2: from the model's Nyquist frequency
        low = -(-model_rate * hop * edge // (1000 * sample_rate))  # ceil(edge * model Nyquist / bin width)
        top = min(hop, -(-2 * TOP_HZ * hop // sample_rate))
        self.edges = low + (top - low) * np.arange(BANDS + 1) // BANDS
        shift = min(top - low, low // 2) // 2 * 2  # even: frames hop by half their length
        self.source = low - shift + (np.arange(low, top) - low) % shift
        self.source_bins, self.take = np.unique(self.source, return_inverse=True)
        self.band = np.repeat(np.arange(BANDS), np.diff(self.edges))  # band of each extended bin

    def frames_until(self, model_samples: int, model_rate: int, sample_rate: int) -> int:
        """Frames complete within the input that the first ``model_samples`` samples at the model's rate span."""
        return max(0, model_samples * sample_rate // model_rate // self.hop - 1)

    def max_frames(self, model_samples: int, model_rate: int, sample_rate: int) -> int:
        """The most frames an input can have whose first ``model_samples`` samples at the model's rate (its
        padded length) decode: the decoder's bound on the frames a file carries."""
        return frame_count(model_samples * sample_rate // model_rate + sample_rate // model_rate + 1, self.hop)


def _flatness(power: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Spectral flatness (geometric over arithmetic mean) per band: (..., bins) -> (..., BANDS)."""
    count = np.bincount(band, minlength=BANDS)
    log_mean = _band_sum(np.log(power + 1e-30), band) / count
    return np.exp(log_mean) / (_band_sum(power, band) / count + 1e-30)


def _band_sum(values: np.ndarray, band: np.ndarray) -> np.ndarray:
    starts = np.flatnonzero(np.r_[True, band[1:] != band[:-1]])
    return np.add.reduceat(values, starts, axis=-1)


class Analyzer:
    """Encoder side: the original (channels, n) at its rate, pushed as it comes -> levels and noise flags
    (channels, BANDS, frames) of the frames a chunk carries."""

    def __init__(self, channels: int, sample_rate: int, model_rate: int, model_hop: int):
        self.layout = Layout(sample_rate, model_rate)  # the encoder writes VERSION
        self.rates, self.model_hop = (model_rate, sample_rate), model_hop
        self.x = _Frames32(channels, self.layout.hop)
        self.received = 0
        self.last = np.full((channels, BANDS), -LEVELS)  # the previous frame's levels
        self.mono, self.mono_start = [], 0  # blocks of the mixdown from input sample ``mono_start`` on
        self.span = SPAN  # the last chunk's: SPEECH_SPAN where it sounds like speech
        self.checked = None  # the input sample at which the last content check ended

    def push(self, block: np.ndarray) -> None:
        self.x.push(block)
        self.mono.append(np.asarray(block, np.float32).mean(0))  # joined only when the check reads it
        self.received += block.shape[1]

    def take(self, model_frames: int, last: bool) -> tuple[np.ndarray, np.ndarray]:
        """The frames complete within the first ``model_frames`` latent frames; the ``last`` chunk's: all the
        rest of the signal received (zeros after it). Sets ``span`` from the chunk's content (``choose_span``)."""
        if last:
            n = frame_count(self.received, self.x.hop)
            self.x.pad_to(n)
        else:
            n = self.layout.frames_until(model_frames * self.model_hop, *self.rates)
        end = self.received if last else min(self.received, model_frames * self.model_hop * self.rates[1]
                                             // self.rates[0])
        self.span = self.choose_span(end)
        return self._measure(min(max(0, n - self.x.next), self.x.ready()))  # ready: always, short of a bug

    def choose_span(self, end: int) -> int:
        """The span of a chunk whose input ends at sample ``end``, from the last ``CONTENT_SECONDS`` before it
        (causal: nothing after the chunk): ``SPEECH_SPAN`` where content.py calls it speech, else ``SPAN``. The
        check runs again only once the input has moved ``CONTENT_SECONDS`` past the last one, so that it reads
        each sample once; the chunks in between keep its span."""
        sr, size = self.rates[1], round(CONTENT_SECONDS * self.rates[1])
        if self.checked is not None and end - self.checked < size:
            return self.span
        start = max(0, end - size)
        mono = np.concatenate(self.mono) if self.mono else np.zeros(0, np.float32)
        window = mono[start - self.mono_start : end - self.mono_start]
        if len(window) < MIN_CONTENT_SECONDS * sr:
            self.mono, self.mono_start = [mono[start - self.mono_start :]], start
            return SPAN
        self.mono, self.mono_start, self.checked = [mono[end - self.mono_start :]], end, end  # next: from here
        return SPAN if music_probability(window[None], sr) >= MUSIC_FROM else SPEECH_SPAN

    def _measure(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        lay = self.layout
        spectra = self.x.take(n)
        power = spectra.real**2 + spectra.imag**2  # (channels, n, bins)
        band = power[..., lay.edges[0] : lay.edges[-1]]
        energy = _band_sum(band, lay.band) / np.diff(lay.edges)
        steps = np.clip(10 * np.log10(energy / lay.hop + 1e-30) / STEP_DB + ZERO, 0, LEVELS - 1)
        levels = np.empty(steps.shape, np.int32)
        for c, b in np.ndindex(self.last.shape):  # in plain Python: a few operations per frame
            if held := _hold(self.last[c, b], steps[c, :, b].tolist()):
                levels[c, :, b], self.last[c, b] = held, held[-1]
        noise = _flatness(band, lay.band) > _flatness(power[..., lay.source], lay.band) + NOISE_MARGIN
        levels = levels.transpose(0, 2, 1)
        if n:  # stereo: a channel within a step of channel 0 plus its mean offset takes that (almost no bits)
            offset = np.rint((levels[1:] - levels[:1]).mean(-1, keepdims=True)).astype(np.int32)
            follow = np.clip(levels[:1] + offset, 0, LEVELS - 1)
            near = (np.abs(levels[1:] - follow) <= SNAP) & (levels[1:] > 0) & (follow > 0)
            levels[1:] = np.where(near, follow, levels[1:])
        return levels, noise.transpose(0, 2, 1).astype(np.int32)


def _hold(level: float, steps: list[float]) -> list[float]:
    """Hysteresis: the level moves to a frame's rounded step only when it is off by ``HOLD`` or more (fewer bits
    on steady bands)."""
    out = []
    for step in steps:
        if abs(step - level) >= HOLD:
            level = round(step)
        out.append(level)
    return out


class Extender:
    """Decoder side: decoded audio (channels, n) at the original rate and the coded envelope, pushed as they
    come -> the audio with its band filled, ``hop`` samples behind; ``flush`` returns the rest. A frame that
    no chunk carries gets no band."""

    def __init__(self, channels: int, sample_rate: int, model_rate: int, version: int = VERSION):
        self.layout = lay = Layout(sample_rate, model_rate, version)
        self.y = _Frames32(channels, lay.hop)
        self.levels = np.zeros((channels, BANDS, 0), np.int32)  # from frame ``first_envelope`` on
        self.noise = np.zeros((channels, BANDS, 0), np.int32)
        self.first_envelope = 0
        self.raw = np.zeros((channels, 0), np.float32)  # decoded samples not yet returned
        self.tail = np.zeros((channels, lay.hop))  # the last frame's second half
        self.mean = np.zeros((channels, len(lay.source_bins)), np.float32)  # the source bins' running mean power
        self.rng = np.random.Generator(np.random.PCG64(0))  # noise, drawn frame by frame in order
        self.samples = 0

    def run(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Extended audio, block by block (the envelope pushed meanwhile), then the rest."""
        for y in blocks:
            yield self.push(y)
        yield self.flush()

    def envelope(self, levels: np.ndarray, noise: np.ndarray) -> None:
        self.levels = np.concatenate([self.levels, levels], axis=-1)
        self.noise = np.concatenate([self.noise, noise], axis=-1)

    def push(self, y: np.ndarray) -> np.ndarray:
        self.y.push(y)
        self.raw = np.concatenate([self.raw, y], axis=1)
        self.samples += y.shape[1]
        return self._run(self.y.ready())

    def flush(self) -> np.ndarray:
        frames = frame_count(self.samples, self.layout.hop)
        self.y.pad_to(frames)
        return self._run(max(0, frames - self.y.next))

    def _envelope(self, first: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Levels and flags of frames ``first .. first + n - 1`` (zeros where none came); drops them."""
        skip = first - self.first_envelope  # > 0 where frames were done before their envelope came
        levels, noise = self.levels[..., skip : skip + n], self.noise[..., skip : skip + n]
        drop = min(skip + n, self.levels.shape[-1])
        self.levels, self.noise = self.levels[..., drop:], self.noise[..., drop:]
        self.first_envelope += drop
        pad = ((0, 0), (0, 0), (0, n - levels.shape[-1]))
        return np.pad(levels, pad), np.pad(noise, pad)

    def _run(self, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros((self.raw.shape[0], 0), np.float32)
        lay, hop, first = self.layout, self.layout.hop, self.y.next
        spectra = self.y.take(n)  # (channels, n, bins)
        levels, noise = self._envelope(first, n)
        patch = spectra[..., lay.source_bins]
        power = patch.real**2 + patch.imag**2
        # long-term whitening: stationary notches and lines of the decoded band are not copied upwards
        mean, self.mean = lfilter(_SMOOTH[:1], _SMOOTH[1:], power, axis=1, zi=self.mean[:, None])
        self.mean = self.mean[:, 0]
        t = first + np.arange(1, n + 1)
        white = patch[..., lay.take] / np.sqrt(mean / (1 - DECAY ** t).astype(np.float32)[:, None]
                                               + np.float32(1e-30))[..., lay.take]
        wpow = _band_sum(white.real**2 + white.imag**2, lay.band) / np.diff(lay.edges)
        target = np.where(levels > 0, 10.0 ** ((levels - ZERO) * STEP_DB / 10) * hop, 0.0).transpose(0, 2, 1)
        use_noise = (noise.transpose(0, 2, 1) > 0) | (wpow < 1e-12)  # (channels, n, BANDS)
        mix = np.where(use_noise, 1.0, MIX)
        phases = _PHASES[self.rng.integers(0, len(_PHASES), (n, *white.shape[::2]))].transpose(1, 0, 2)  # by frame
        gain = np.sqrt((1 - mix) * target / (wpow + 1e-30)).astype(np.float32)
        noise_gain = np.sqrt(2 * mix * target).astype(np.float32)
        fill = white * gain[..., lay.band] + phases * noise_gain[..., lay.band]  # random phases: half a frame's power
        full = np.zeros_like(spectra)
        full[..., lay.edges[0] : lay.edges[-1]] = fill
        frames = scipy.fft.irfft(full, n=2 * hop, axis=-1) * self.y.window
        out = frames[..., :hop] + np.concatenate([self.tail[:, None], frames[:, :-1, hop:]], axis=1)
        self.tail = frames[:, -1, hop:]
        out = out.reshape(out.shape[0], -1)[:, hop if first == 0 else 0 :]  # frame 0 starts before the signal
        out = out[:, : self.raw.shape[1]]
        done, self.raw = self.raw[:, : out.shape[1]] + out, self.raw[:, out.shape[1] :]
        return done.astype(np.float32)


def encode(levels: np.ndarray, noise: np.ndarray, span: int | None = None) -> bytes:
    """Levels and noise flags (channels, BANDS, frames) -> bytes of versions 2 and 3 (docs/format.md, "Bandwidth
    extension"): a channel's levels ``FLOOR`` steps or more below its loudest in the chunk are left out (0, no flag),
    and the levels and flags of every ``span``-th frame (of SPANS; None: ``SPAN``) and the last are coded."""
    n, span = levels.shape[-1], SPAN if span is None else span
    if span not in SPANS:
        raise ValueError(f"extension span {span} is not one of {SPANS}")
    quiet = levels <= levels.max(axis=(1, 2), keepdims=True, initial=0) - FLOOR
    at = points(n, span)
    return _SPAN.pack(n, span) + _encode_points(np.where(quiet, 0, levels)[..., at], np.where(quiet, 0, noise)[..., at])


def decode(data: bytes, channels: int, max_frames: int, version: int = VERSION) -> tuple[np.ndarray, np.ndarray]:
    """Bytes of ``encode`` (or of version 1) -> levels (interpolated between the points) and noise flags (the
    nearest point's) (channels, BANDS, frames); every field is checked before it is used, more than ``max_frames``
    frames is an error."""
    if version == 1:
        return _decode_points(data, channels, max_frames)
    if len(data) < _SPAN.size:
        raise ValueError("extension data is shorter than its frame count and span")
    n, span = _SPAN.unpack_from(data)
    if n > max_frames:
        raise ValueError(f"extension data holds {n} frames, more than the {max_frames} the latents allow")
    if span not in SPANS:
        raise ValueError(f"extension span {span} is not one of {SPANS}")
    at = points(n, span)
    if len(data) >= _SPAN.size + 2 and struct.unpack_from("<H", data, _SPAN.size)[0] != at.size:
        raise ValueError(f"extension data holds {struct.unpack_from('<H', data, _SPAN.size)[0]} points, not the "
                         f"{at.size} of {n} frames")
    values, flags = _decode_points(data[_SPAN.size :], channels, at.size)
    return _interpolate(values, at, n), flags[..., _nearest(at, n)]


def points(n: int, span: int) -> np.ndarray:
    """The frames of a chunk of ``n`` that carry the envelope: every ``span``-th and the last."""
    return np.unique(np.r_[np.arange(0, n, span), n - 1]) if n else np.zeros(0, np.int64)


def _nearest(at: np.ndarray, n: int) -> np.ndarray:
    """Each frame's nearest point (the earlier one of two as near)."""
    i = np.searchsorted(at, np.arange(n), "right") - 1  # the point at or before
    later = (i + 1 < at.size) & (at[np.minimum(i + 1, at.size - 1)] - np.arange(n) < np.arange(n) - at[i])
    return i + later


def _interpolate(values: np.ndarray, at: np.ndarray, n: int) -> np.ndarray:
    """Levels at the points ``at`` (..., points) -> at every frame (..., n), linear between points."""
    if at.size < 2:
        return np.broadcast_to(values, (*values.shape[:-1], n)).astype(np.float64)
    i = np.clip(np.searchsorted(at, np.arange(n), "right") - 1, 0, at.size - 2)
    w = (np.arange(n) - at[i]) / (at[i + 1] - at[i])
    return values[..., i] * (1 - w) + values[..., i + 1] * w


def _encode_points(levels: np.ndarray, noise: np.ndarray) -> bytes:
    """Levels and noise flags (channels, BANDS, points) -> bytes (all of version 1)."""
    channels, _, n = levels.shape
    if n == 0:
        return struct.pack("<H", 0)
    q = levels.astype(np.int64)
    modes = [1 + int(np.argmin([_cost(_field(q, 0, m)) for m in range(1, MODES)]))]
    modes += [int(np.argmin([_cost(_field(q, c, m)) for m in range(MODES)])) for c in range(1, channels)]
    changes = [noise[0] ^ np.concatenate([np.zeros((BANDS, 1), noise.dtype), noise[0, :, :-1]], axis=1)]
    changes += [noise[c] ^ noise[0] for c in range(1, channels)]
    head = struct.pack("<H", n) + bytes(modes)
    symbols, pmfs = [], []
    for c, mode in enumerate(modes):
        r = _field(q, c, mode)
        center = _centers(r)
        sym = r - center[:, None] + RADIUS
        scale = _COST[:, sym].sum(-1).argmin(0) if r.size else np.zeros(BANDS, np.int64)
        head += b"".join(_BAND.pack(int(c), int(s)) for c, s in zip(center, scale, strict=True))
        symbols.append(sym.T.ravel())
        pmfs.append(_PMF[np.tile(scale, sym.shape[1]), 0])
    flag_tables = [int(_FLAG_COST[:, f.ravel()].sum(-1).argmin()) for f in changes]
    head += bytes(flag_tables)
    coder = _queue.RangeEncoder()
    _code(coder, q[np.array(modes) > 0, :, 0].ravel(), np.concatenate(symbols), np.concatenate(pmfs),
          np.concatenate([f.T.ravel() for f in changes]), np.repeat(flag_tables, BANDS * n))
    return head + coder.get_compressed().astype("<u4").tobytes()


def _decode_points(data: bytes, channels: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Bytes of ``_encode_points`` -> levels and noise flags (channels, BANDS, points), all checked."""
    if len(data) < 2:
        raise ValueError("extension data is shorter than its frame count")
    (n,) = struct.unpack_from("<H", data)
    if n > max_frames:
        raise ValueError(f"extension data holds {n} frames, more than the {max_frames} the latents allow")
    if n == 0:
        if len(data) != 2:
            raise ValueError("extension data of no frames has bytes after its frame count")
        return np.zeros((channels, BANDS, 0), np.int32), np.zeros((channels, BANDS, 0), np.int32)
    size = 2 + channels * (2 + BANDS * _BAND.size)
    if len(data) < size or (len(data) - size) % 4:
        raise ValueError("extension data is not a whole header and 32-bit words")
    modes = np.frombuffer(data[2 : 2 + channels], np.uint8).astype(np.int64)
    bands = np.array(list(_BAND.iter_unpack(data[2 + channels : size - channels])), np.int64)
    bands = bands.reshape(channels, BANDS, 2)
    flag_tables = np.frombuffer(data[size - channels : size], np.uint8).astype(np.int64)
    if not 0 < modes[0] < MODES or (modes >= MODES).any() or (np.abs(bands[..., 0]) > CENTER_LIMIT).any() \
            or (bands[..., 1] >= len(_TABLES)).any() or (flag_tables >= len(_FLAG_PMF)).any():
        raise ValueError("extension data has a field outside its range")
    timed = modes > 0  # channels coded in time (a first frame, then steps) rather than against channel 0
    counts = BANDS * np.where(timed, n - 1, n)
    pmf = np.concatenate([_PMF[np.tile(bands[c, :, 1], k // BANDS), 0] for c, k in enumerate(counts)])
    flag_pmf = _FLAG_PMF[np.repeat(flag_tables, BANDS * n)]
    coder = _queue.RangeDecoder(np.frombuffer(data[size:], dtype="<u4").astype(np.uint32))
    first = coder.decode(_UNIFORM, BANDS * int(timed.sum())).astype(np.int64)
    sym = coder.decode(_CATEGORICAL, pmf).astype(np.int64)
    flags = coder.decode(_CATEGORICAL, flag_pmf).astype(np.int64)
    levels, pos, starts = np.zeros((channels, BANDS, n), np.int64), 0, iter(first.reshape(-1, BANDS))
    for c, k in enumerate(counts):
        r = sym[pos : pos + k].reshape(-1, BANDS).T + bands[c, :, :1] - RADIUS
        pos += k
        levels[c] = levels[0] + r if not timed[c] else \
            np.concatenate([next(starts)[:, None], _undo_residuals(r, modes[c] - 1)], axis=1).cumsum(1)
        if levels[c].min() < 0 or levels[c].max() >= LEVELS:  # before channel c + 1 builds on it
            raise ValueError("extension data decodes to levels out of range")
    changes = flags.reshape(channels, n, BANDS).transpose(0, 2, 1)
    noise = changes.copy()
    noise[0] = np.bitwise_xor.accumulate(changes[0], axis=1)
    noise[1:] ^= noise[0]
    check = _queue.RangeEncoder()
    _code(check, first, sym, pmf, flags, np.repeat(flag_tables, BANDS * n))
    if check.get_compressed().astype("<u4").tobytes() != data[size:]:  # also catches words left over or missing
        raise ValueError("extension data is not the coding of its envelope")
    return levels.astype(np.int32), noise.astype(np.int32)


def _code(coder, first: np.ndarray, sym: np.ndarray, pmf: np.ndarray, flags: np.ndarray, tables: np.ndarray):
    """The range coder's symbols in order: the first frame's levels, the level residuals, the flag changes."""
    coder.encode(np.asarray(first, np.int32), _UNIFORM)
    coder.encode(np.asarray(sym, np.int32), _CATEGORICAL, pmf)
    coder.encode(np.asarray(flags, np.int32), _CATEGORICAL, _FLAG_PMF[np.asarray(tables, np.int64)])


def _field(q: np.ndarray, c: int, mode: int) -> np.ndarray:
    """What channel ``c``'s levels are coded as: in ``mode`` 0 their difference from channel 0's (BANDS, frames),
    else their steps in time less ``(mode - 1) / 2`` of the band below's step in the frame (BANDS, frames - 1)."""
    if mode == 0:
        return q[c] - q[0]
    d = np.diff(q[c], axis=1)
    return d - (((mode - 1) * np.concatenate([np.zeros_like(d[:1]), d[:-1]])) >> 1)


def _undo_residuals(r: np.ndarray, weight: int) -> np.ndarray:
    d = r.copy()
    for b in range(1, BANDS):
        d[b] += (weight * d[b - 1]) >> 1
    return d


def _centers(r: np.ndarray) -> np.ndarray:
    if not r.size:
        return np.zeros(BANDS, np.int64)
    return np.clip(np.rint(r.mean(1)), -CENTER_LIMIT, CENTER_LIMIT).astype(np.int64)


def _cost(r: np.ndarray) -> float:
    """Bits of residuals (BANDS, n) under each band's cheapest table."""
    return float(_COST[:, r - _centers(r)[:, None] + RADIUS].sum(-1).min(0).sum()) if r.size else 0.0
