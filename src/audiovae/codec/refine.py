"""Envelope refinement: an optional layer of the codec that corrects the decoder's spectral envelope.

The VAE decoder renders band energies several dB off at fine time resolution (too little energy in loud
frames above 1 kHz; docs/training.md, "What caps the 12 kbps point"), more than finer latents can mend. With
refinement the encoder decodes its own latents, measures per frame and band the energy of the original over
that of the decoded audio, quantizes it to ``STEP_DB`` decibels and codes it after the latents (``Encoder``); the
decoder scales each band of its output by that gain (``Refiner``). Version 3 codes a chunk's gains on a grid whose
cells merge adjacent bands and frames (a ``GRIDS`` entry): the coarser grids cost a quarter to a tenth of the
finest's 2 kbps and fit beside the coarsest latents at 3 kbps, where the finest does not.

Frames are sqrt-Hann windows of ``2 * hop`` samples every ``hop`` (the model's ``hop_length``): frame ``j``
covers samples ``[(j - 1) hop, (j + 1) hop)`` of the decoded signal, zeros outside it, so a signal of ``n``
samples has ``(n - 1) // hop + 2`` frames. Analysis and synthesis use the same window, so unit gains give
the decoded audio back. A frame without a coded gain keeps unit gains.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

from audiovae.codec import joint
from audiovae.codec.entropy import _CATEGORICAL, RADIUS, TOTAL, _queue, exact_pmf, logistic_tables
from audiovae.models.vae import VAE

VERSION = 3
VERSIONS = (1, 2, 3)  # what ``decode`` reads: 1 codes each band's gains about its mean in the chunk, 2 about a
# prediction, 3 as 2 on a grid of merged bands and frames
GRIDS = ((1, 1), (2, 2), (3, 2), (3, 3), (3, 4))  # the grids an encoder tries, finest first: (bands, frames) per gain
WEIGHTS = (0, 4, 8, 12, 16)  # version 2: how far (in 1/16) a band's prediction moves from its mean to its last gain
STEP_DB = 3.0
LIMIT = 8  # gains are clipped to +-LIMIT steps (+-24 dB)
EDGES_HZ = (150, 300, 450, 600, 800, 1000, 1250, 1500, 1800, 2100, 2500, 3000, 3500, 4200, 5000, 6000, 7000,
            8000, 10000, 12500, 16000, 20000)  # band edges; the last band ends at the Nyquist frequency
_TABLES = logistic_tables()
_PMF = exact_pmf(_TABLES)
_COST = np.log2(TOTAL / _TABLES)
_BAND = {1: struct.Struct("<hB"), 2: struct.Struct("<bB"), 3: struct.Struct("<bB")}  # mean (1/16 step), weight/table


def band_starts(sample_rate: int, hop: int) -> np.ndarray:
    """First rfft bin of each band of a ``2 * hop`` frame (bands without a bin are dropped)."""
    bins = np.ceil(np.array(EDGES_HZ) * 2 * hop / sample_rate).astype(int)
    return np.unique(np.concatenate([[0], bins[bins < hop]]))


def frame_count(samples: int, hop: int) -> int:
    return (samples - 1) // hop + 2 if samples > 0 else 0


class _Frames:
    """A signal pushed in (channels, n) blocks, cut into the module's frames as soon as they are complete."""

    def __init__(self, channels: int, hop: int):
        self.hop, self.window = hop, np.sqrt(0.5 - 0.5 * np.cos(np.pi * np.arange(2 * hop) / hop))
        self.buf = np.zeros((channels, hop), np.float64)  # starts at sample (next - 1) * hop
        self.next = 0

    def push(self, block: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, block], axis=1)

    def pad_to(self, frames: int) -> None:
        """Zeros after the signal, so that ``frames`` frames are complete."""
        need = (frames - self.next + 1) * self.hop
        self.buf = np.pad(self.buf, ((0, 0), (0, max(0, need - self.buf.shape[1]))))

    def ready(self) -> int:
        return max(0, self.buf.shape[1] // self.hop - 1)

    def take(self, n: int) -> np.ndarray:
        """rfft spectra (channels, n, hop + 1) of the next ``n`` frames."""
        idx = np.arange(n)[:, None] * self.hop + np.arange(2 * self.hop)
        spectra = np.fft.rfft(self.buf[:, idx] * self.window, axis=-1)
        self.buf, self.next = self.buf[:, n * self.hop :], self.next + n
        return spectra


def _band_energy(spectra: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(channels, bands, n) energies from spectra (channels, n, bins)."""
    return np.add.reduceat(np.abs(spectra) ** 2, starts, axis=-1).transpose(0, 2, 1)


class Analyzer:
    """Encoder side: original and decoded audio (channels, n) at the model's rate, pushed separately as they
    come, -> their band energies (channels, 2, bands, frames) in every frame complete in both (``gains`` makes
    them gains)."""

    def __init__(self, channels: int, sample_rate: int, hop: int):
        self.starts = band_starts(sample_rate, hop)
        self.x, self.y = _Frames(channels, hop), _Frames(channels, hop)

    def push(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> np.ndarray:
        if x is not None:
            self.x.push(x)
        if y is not None:
            self.y.push(y)
        return self._energies(min(self.x.ready(), self.y.ready()))

    def finish(self, samples: int) -> np.ndarray:
        """The remaining frames of a ``samples``-long signal (zeros after it)."""
        frames = frame_count(samples, self.x.hop)
        self.x.pad_to(frames)
        self.y.pad_to(frames)
        return self._energies(max(0, frames - self.x.next))

    def _energies(self, n: int) -> np.ndarray:
        return np.stack([_band_energy(self.x.take(n), self.starts), _band_energy(self.y.take(n), self.starts)], 1)


def gains(energies: np.ndarray, grid: tuple[int, int] = GRIDS[0]) -> np.ndarray:
    """Energies (..., 2, bands, frames) of the original and the decoded audio -> gain symbols (..., bands', frames')
    on ``grid``: each the ratio of the two energies summed over the bands and frames its cell merges."""
    e = np.add.reduceat(energies, np.arange(0, energies.shape[-2], grid[0]), axis=-2)
    if e.shape[-1]:
        e = np.add.reduceat(e, np.arange(0, e.shape[-1], grid[1]), axis=-1)
    db = 10 * np.log10((e[..., 0, :, :] + 1e-10) / (e[..., 1, :, :] + 1e-10))
    return np.clip(np.rint(db / STEP_DB), -LIMIT, LIMIT).astype(np.int32)


def expand(gains: np.ndarray, bands: int, frames: int, grid: tuple[int, int]) -> np.ndarray:
    """Gains on ``grid`` (..., bands', frames') -> every band's gain in each of ``frames`` frames."""
    return np.repeat(np.repeat(gains, grid[0], axis=-2)[..., :bands, :], grid[1], axis=-1)[..., :frames]


class Refiner:
    """Decoder side: decoded audio (channels, n) and gain symbols (channels, bands, frames) pushed as they
    come -> refined audio, ``hop`` samples behind; ``flush`` returns the rest of the signal."""

    def __init__(self, channels: int, sample_rate: int, hop: int):
        self.starts, self.hop = band_starts(sample_rate, hop), hop
        self.bands = np.repeat(np.arange(len(self.starts)), np.diff(np.append(self.starts, hop + 1)))
        self.y = _Frames(channels, hop)
        self.gains = np.zeros((channels, len(self.starts), 0), np.int32)
        self.tail = np.zeros((channels, hop))
        self.samples = 0  # decoded samples received

    def push(self, y: np.ndarray, gains: np.ndarray | None = None) -> np.ndarray:
        self.y.push(y)
        self.samples += y.shape[1]
        if gains is not None:
            self.gains = np.concatenate([self.gains, gains], axis=-1)
        return self._run(min(self.y.ready(), self.gains.shape[-1]))

    def flush(self, y: np.ndarray | None = None) -> np.ndarray:
        """The rest of the signal, ``y`` (its last decoded samples) included."""
        if y is not None:
            self.y.push(y)
            self.samples += y.shape[1]
        frames = frame_count(self.samples, self.hop)
        self.y.pad_to(frames)
        done = (self.y.next - 1) * self.hop if self.y.next else 0
        out = self._run(max(0, frames - self.y.next))
        return out[:, : max(0, self.samples - done)]

    def _run(self, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros((self.tail.shape[0], 0), np.float32)
        first = self.y.next
        spectra = self.y.take(n)
        gains = np.zeros((spectra.shape[0], len(self.starts), n), np.int32)
        have = min(n, self.gains.shape[-1])
        gains[..., :have], self.gains = self.gains[..., :have], self.gains[..., have:]
        scale = 10.0 ** (gains[:, self.bands] * (STEP_DB / 20))  # (channels, bins, n)
        frames = np.fft.irfft(spectra * scale.transpose(0, 2, 1), n=2 * self.hop, axis=-1) * self.y.window
        heads, tails = frames[..., : self.hop], frames[..., self.hop :]
        out = heads + np.concatenate([self.tail[:, None], tails[:, :-1]], axis=1)
        self.tail = tails[:, -1]
        out = out.reshape(out.shape[0], -1)
        out = out[:, self.hop :] if first == 0 else out  # frame 0's first half lies before the signal
        return out.astype(np.float32)


class Encoder:
    """Encoder side of a stream: decodes the coded latents of each chunk as a decoder will (``model``'s streaming
    decoder), measures the band energies of the original and the decoded audio, and codes them on ``grid``."""

    def __init__(self, model: VAE, channels: int, grid: tuple[int, int] = GRIDS[0]):
        _check(grid)
        self.dec, self.samples, self.done, self.grid = model.stream_decoder(), 0, 0, grid
        self.analyzer = Analyzer(channels, model.sample_rate, model.hop_length)
        self.masks = joint.MaskLog(channels)

    def __call__(self, x: np.ndarray, z: np.ndarray, last: bool, masks: np.ndarray) -> list[bytes]:
        """Per channel, the coded gains of the frames that chunk (samples ``x``, latents ``z``, ``masks``)
        completes; the ``last`` chunk's include every frame left up to the last gain that is not 0. A channel after
        the first whose gains are all 0 gets nothing."""
        return encode_block(self.measure(x, z, last, masks), self.grid, last)

    def measure(self, x: np.ndarray, z: np.ndarray, last: bool, masks: np.ndarray) -> np.ndarray:
        """The band energies (channels, 2, bands, frames) of the frames that chunk completes. A frame over masked
        latent frames only (its audio is zeroed) counts no energy: a cell of such frames gets gain 0, which costs
        least."""
        self.samples += x.shape[1]
        self.masks.push(masks)
        energies = [self.analyzer.push(x, self.dec(torch.from_numpy(z)).numpy())]
        if last:
            energies += [self.analyzer.push(y=self.dec.flush().numpy()), self.analyzer.finish(self.samples)]
        e = np.concatenate(energies, axis=-1)
        frames = np.arange(self.done, self.done + e.shape[-1])  # frame j spans latent frames j - 1 and j
        self.done += e.shape[-1]
        return np.where(self.masks.over(frames - 1, frames)[:, None, None], 0, e)


def _predict(prev: np.ndarray, mean: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Predictions in 1/16 steps: each band's ``mean`` moved towards its previous frame's gain ``prev`` (1/16
    steps; the mean before a chunk's first frame) by ``weights`` / 16."""
    return mean + (weights * (prev - mean) >> 4)


def _predictions(q: np.ndarray, mean: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Every gain's prediction (..., bands, frames) from gains ``q`` (bands, frames), ``weights`` (..., bands, 1)."""
    return _predict(np.concatenate([mean[:, None], q[:, :-1] * 16], axis=1), mean[:, None], weights)


def _words(q: np.ndarray, pred: np.ndarray, tables: np.ndarray) -> bytes:
    """Gains (bands, frames) and their predictions -> the range coder's u32 words: frame by frame, band by band,
    each gain about its prediction under its band's table."""
    pmf = _PMF[tables[:, None], pred & 15].transpose(1, 0, 2).reshape(-1, _PMF.shape[-1])
    coder = _queue.RangeEncoder()
    coder.encode((q - (pred >> 4) + RADIUS).T.ravel().astype(np.int32), _CATEGORICAL, pmf)
    return coder.get_compressed().astype("<u4").tobytes()


def encode(gains: np.ndarray, frames: int | None = None, grid: tuple[int, int] = GRIDS[0]) -> bytes:
    """One channel's gain symbols on ``grid`` (bands', frames') of a ``frames``-frame block (default: every
    cell's frames) -> bytes of version ``VERSION``: u16 frames, u8 grid (merged bands << 4 | merged frames), per band
    of the grid an i8 mean (1/16 step) and a u8 index of its predictor weight and table, then the range coder's u32
    words (the symbols cell by cell in time, each about the prediction from its band's previous cell)."""
    bands, n = gains.shape
    frames = n * grid[1] if frames is None else frames
    _check(grid)
    if not 0 <= n * grid[1] - frames < grid[1]:
        raise ValueError(f"{n} cells of grid {grid} do not make {frames} frames")
    if frames == 0:
        return struct.pack("<H", 0)
    q = gains.astype(np.int64)
    mean = np.clip(np.rint(q.mean(1) * 16), -128, 127).astype(np.int64)
    pred = _predictions(q, mean, np.array(WEIGHTS)[:, None, None])  # (weights, bands, n)
    cost = _COST[:, pred & 15, q - (pred >> 4) + RADIUS].sum(-1)  # (tables, weights, bands)
    tables, weight = np.unravel_index(cost.reshape(-1, bands).argmin(0), cost.shape[:2])
    band = _BAND[VERSION]
    head = struct.pack("<HB", frames, grid[0] << 4 | grid[1]) + b"".join(
        band.pack(int(m), int(w * len(_TABLES) + t)) for m, w, t in zip(mean, weight, tables, strict=True))
    return head + _words(q, pred[weight, np.arange(bands)], tables)


def _check(grid: tuple[int, int]) -> None:
    if not (0 < grid[0] < 16 and 0 < grid[1] < 16):
        raise ValueError(f"refinement grid {grid}: bands and frames per gain must be 1..15")


def encode_block(energies: np.ndarray, grid: tuple[int, int], cut: bool = False) -> list[bytes]:
    """A block's energies (channels, 2, bands, frames) -> each channel's ``encode`` of its gains on ``grid``; with
    ``cut``, without the last frames whose gains are 0 in every channel (a frame no chunk carries keeps gains 0).
    A channel after the first whose gains are all 0 gets no bytes; a grid wider than the bands covers them all."""
    grid = (min(grid[0], energies.shape[-2]), grid[1])
    g, n = gains(energies, grid), energies.shape[-1]
    if cut:
        n = joint.cut(np.arange(n), expand(g, energies.shape[-2], n, grid)).size
    return [encode(c, n, grid) if c.any() or not i else b"" for i, c in enumerate(g[..., : -(-n // grid[1])])]


def decode(data: bytes, bands: int, max_frames: int = 0xFFFF, version: int = VERSION) -> np.ndarray:
    """Bytes of ``encode`` (or of another of ``VERSIONS``) -> gain symbols (bands, frames); more than
    ``max_frames`` frames is an error."""
    if len(data) < 2:
        raise ValueError("refinement data is shorter than its frame count")
    (n,) = struct.unpack_from("<H", data)
    if n > max_frames:
        raise ValueError(f"refinement data holds {n} frames, more than the {max_frames} the latents allow")
    if n == 0:
        return np.zeros((bands, 0), np.int32)
    grid, at = (1, 1), 2
    if version >= 3:
        if len(data) < 3:
            raise ValueError("refinement data is shorter than its grid")
        grid, at = divmod(data[2], 16), 3
        if not (0 < grid[0] <= bands and grid[1] > 0):
            raise ValueError(f"refinement data has a grid of {grid[0]} bands by {grid[1]} frames")
    rows, cells = -(-bands // grid[0]), -(-n // grid[1])
    band = _BAND[version]
    words = data[at + rows * band.size :]
    if len(words) % 4 or len(data) < at + rows * band.size:
        raise ValueError("refinement data is not a whole header and 32-bit words")
    mean, index = np.array(list(band.iter_unpack(data[at : at + rows * band.size])), np.int64).T
    weight, tables = np.divmod(index, len(_TABLES))
    if (weight >= (len(WEIGHTS) if version > 1 else 1)).any() or (np.abs(mean) > 16 * LIMIT).any():
        raise ValueError("refinement data has a band outside the tables")
    weights = np.array(WEIGHTS)[weight]
    decoder = _queue.RangeDecoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
    pmfs, row = _PMF[tables], np.arange(rows)
    q, prev = np.empty((rows, cells), np.int64), mean
    for t in range(cells):  # a cell's predictions need the cell before
        pred = _predict(prev, mean, weights)
        g = decoder.decode(_CATEGORICAL, pmfs[row, pred & 15]) + (pred >> 4) - RADIUS
        q[:, t], prev = g, g * 16
    if np.abs(q).max() > LIMIT:
        raise ValueError("refinement data decodes to gains out of range")
    if _words(q, _predictions(q, mean, weights[:, None]), tables) != words:  # also catches words left over or missing
        raise ValueError("refinement data is not the coding of its gains")
    return expand(q, bands, n, grid).astype(np.int32)
