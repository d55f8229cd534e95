"""Joint channel coding (payload layout 2): mid/side stereo and silence that costs almost nothing.

Each chunk starts with a head: for stereo the chunk's mode (left/right, or mid ``M = (L + R) / 2`` and side
``S = (L - R) / 2`` coded as ``S - alpha M``, the part of the side that the mid does not predict), then per coded
channel a mask of the latent frames whose audio is silent (a peak at most ``SILENT_DB`` dBFS) or, for the side,
negligible (``SIDE_DB`` below the mid). Masked frames decode to exact zeros, and the latents of a masked frame more
than ``GUARD`` frames from an unmasked one (or the chunk's edge) are not coded: the decoder holds the last coded
frame's. The encoder codes a stereo chunk as mid/side where the side is mostly masked, so that identical channels
cost one channel and decode identical, and a mono source panned anywhere costs one channel too.

Masks and modes apply to the output at the original rate: latent frame ``t`` covers the samples ``j`` with
``j * model_rate // (hop * rate) == t``, after every other layer (refinement, resampling, extension).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

LAYOUT = 2  # the header's codec key "layout"; files without it have layout 1 (no heads, channels as they are)
LR, MS = 0, 1  # a stereo chunk's modes
SILENT_DB = -90.0
SIDE_DB = 40.0
GUARD = 1
SIDE_COST = 3  # a coded side frame counts this many frames when the encoder chooses a stereo mode
_SILENT = 10 ** (SILENT_DB / 20)
_SIDE = 10 ** (SIDE_DB / 10)


@dataclass(frozen=True)
class Plan:
    """One chunk's mode (None: not stereo), its side prediction ``alpha`` (mid/side: the side is coded less
    ``alpha / 127`` times the mid), its masks (channels, frames), and which frames' latents are coded."""

    mode: int | None
    masks: np.ndarray
    alpha: int = 0

    @property
    def coded(self) -> np.ndarray:
        """(channels, frames): False for a masked frame whose ``GUARD`` neighbours each side are masked too
        (frames outside the chunk count as unmasked, so the first and last frames are always coded)."""
        run = np.cumsum(np.pad(self.masks, ((0, 0), (GUARD + 1, GUARD))), axis=1)  # masked frames so far
        return run[:, 2 * GUARD + 1 :] - run[:, : -2 * GUARD - 1] < 2 * GUARD + 1

    def head(self) -> bytes:
        """The head's bytes: the mode (stereo only; mid/side: then ``alpha`` as an i8), then per channel u8 ``K``
        and ``K`` masked runs, each a u8 gap (unmasked frames before it) and a u8 length (chunks hold at most 250
        frames)."""
        out = bytearray([] if self.mode is None else [self.mode, self.alpha & 0xFF] if self.mode == MS else [LR])
        for mask in self.masks:
            edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
            starts, ends = edges[::2], edges[1::2]
            out.append(starts.size)
            for gap, length in zip(starts - np.concatenate([[0], ends[:-1]]), ends - starts, strict=True):
                out += bytes([gap, length])
        return bytes(out)

    @classmethod
    def read(cls, data: bytes, channels: int, frames: int) -> Plan:
        """Parse and check a head of ``channels`` masks over ``frames`` frames; ValueError says what is wrong."""
        pos, mode, alpha = 0, None, 0
        if channels == 2:
            if not data or data[0] not in (LR, MS):
                raise ValueError(f"stereo mode {data[0] if data else 'missing'} is not 0 (left/right) or 1 (mid/side)")
            pos, mode = 1 + data[0], data[0]
            alpha = int.from_bytes(data[1:2], "little", signed=True) if mode == MS else 0
        masks = np.zeros((channels, frames), bool)
        for c in range(channels):
            if pos >= len(data):
                raise ValueError(f"the chunk head ends before channel {c}'s mask")
            runs, pos, end = data[pos], pos + 1, 0
            if pos + 2 * runs > len(data):
                raise ValueError(f"the chunk head ends in channel {c}'s mask")
            for k in range(runs):
                gap, length = data[pos + 2 * k], data[pos + 2 * k + 1]
                if length == 0 or (gap == 0 and k > 0) or end + gap + length > frames:
                    raise ValueError(f"channel {c}'s mask has a run that is empty, touches the previous one or "
                                     f"passes the chunk's {frames} frames")
                masks[c, end + gap : end + gap + length] = True
                end += gap + length
            pos += 2 * runs
        if pos != len(data):
            raise ValueError(f"the chunk head has {len(data) - pos} bytes after its masks")
        return cls(mode, masks, alpha)


def held(coded: np.ndarray) -> np.ndarray:
    """For each frame of a channel, the index among its coded frames of the last one at or before it."""
    return np.cumsum(coded) - 1


def frame_of(samples: np.ndarray, rate: int, model_rate: int, hop: int) -> np.ndarray:
    """The latent frame of each sample index at ``rate``."""
    return samples * model_rate // (hop * rate)


class Planner:
    """Encoder side: (channels, n) blocks at the input ``rate`` -> the blocks to code and each chunk's ``Plan``.
    A stereo chunk's samples are held until the chunk is complete, then released as left/right or mid/side."""

    def __init__(self, channels: int, rate: int, model_rate: int, hop: int, chunk_frames: int):
        self.stereo, self.chunk, self.frame = channels == 2, chunk_frames, (rate, model_rate, hop)
        self.peak, self.energy = np.zeros((channels, 0)), np.zeros((channels, 0))  # coded signals', from ``first``
        self.first = self.planned = self.seen = 0  # frames; samples measured
        self.pending = np.zeros((channels, 0), np.float32)  # stereo samples not yet released
        self.received = 0
        self.modes: list[tuple[int, int]] = []  # stereo: per chunk, its mode and alpha

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        if not self.stereo:
            self._measure(block)
            return [block]
        self.pending = np.concatenate([self.pending, block.astype(np.float32)], axis=1)
        self.received += block.shape[1]
        out = []
        while self.received >= (end := self._start((len(self.modes) + 1) * self.chunk)):
            out.append(self._release(end))
        return out

    def finish(self) -> list[np.ndarray]:
        """The stereo samples still held, as the last chunk's mode has them."""
        return [self._release(self.received)] if self.pending.shape[1] else []

    def plan(self, frames: int) -> Plan:
        """The next chunk's plan (frames after the signal are silent; a chunk past the decided ones is left/right)."""
        k, lo = self.planned // self.chunk, self.planned - self.first
        mode, alpha = (self.modes[k] if k < len(self.modes) else (LR, 0)) if self.stereo else (None, 0)
        peak, energy = (np.pad(a[:, lo : lo + frames], ((0, 0), (0, frames - a[:, lo : lo + frames].shape[1])))
                        for a in (self.peak, self.energy))
        plan = Plan(mode, _masks(peak, energy, mode == MS), alpha)
        self.planned += frames
        drop = min(self.planned - self.first, self.peak.shape[1])
        self.peak, self.energy, self.first = self.peak[:, drop:], self.energy[:, drop:], self.first + drop
        return plan

    def _start(self, frame: int) -> int:
        rate, model_rate, hop = self.frame
        return -(-frame * hop * rate // model_rate)

    def _stats(self, x: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The frames that samples ``first ..`` of ``x`` (signals, n) fall in, and their peaks and energies there."""
        rate, model_rate, hop = self.frame
        last = frame_of(first + x.shape[1] - 1, *self.frame) if x.shape[1] else -1
        frames = np.arange(frame_of(first, *self.frame), last + 1)
        starts = np.maximum(-(-frames * hop * rate // model_rate) - first, 0)  # each frame's first sample in x
        return frames, np.maximum.reduceat(np.abs(x), starts, axis=1), \
            np.add.reduceat(np.square(x, dtype=np.float64), starts, axis=1)

    def _measure(self, x: np.ndarray) -> None:
        """Add the peaks and energies of the coded signals ``x`` (signals, n) to their frames'."""
        if x.shape[1] == 0:
            return
        frames, peak, energy = self._stats(x, self.seen)
        frames -= self.first
        grow = max(0, frames[-1] + 1 - self.peak.shape[1])
        self.peak, self.energy = (np.pad(a, ((0, 0), (0, grow))) for a in (self.peak, self.energy))
        self.peak[:, frames] = np.maximum(self.peak[:, frames], peak)
        self.energy[:, frames] += energy
        self.seen += x.shape[1]

    def _release(self, end: int) -> np.ndarray:
        """The held samples up to ``end``, coded as the chunk that they complete codes them: mid/side (the side
        predicted from the mid) where that leaves fewer frames to code, a side frame counting ``SIDE_COST`` (its
        coding errors do not cancel in either channel), else left/right."""
        lr, self.pending = self.pending[:, : end - self.seen], self.pending[:, end - self.seen :]
        mid, side = (lr[0] + lr[1]) / 2, (lr[0] - lr[1]) / 2
        power = float(np.dot(mid.astype(np.float64), mid))
        alpha = int(np.clip(np.rint(127 * np.dot(side.astype(np.float64), mid) / power), -127, 127)) if power else 0
        ms = np.stack([mid, side - np.float32(alpha / 127) * mid]).astype(np.float32)
        lr_coded, ms_coded = (Plan(mode, _masks(*self._stats(x, self.seen)[1:], mode == MS)).coded.sum(1)
                              for mode, x in ((LR, lr), (MS, ms)))
        mode, out = (MS, ms) if ms_coded[0] + SIDE_COST * ms_coded[1] < lr_coded.sum() else (LR, lr)
        self.modes.append((mode, alpha if mode == MS else 0))
        self._measure(out)
        return out


class MaskLog:
    """The masks of the latent frames planned so far, for the layers whose frames span latent frames: which of
    their frames lie over masked latent frames only (audio that is zeroed: their parameters are free). Latent
    frames outside the signal count as masked. Queries come in order, so frames before the last one's are let go."""

    def __init__(self, channels: int):
        self.masks, self.first = np.zeros((channels, 0), bool), 0

    def push(self, masks: np.ndarray) -> None:
        self.masks = np.concatenate([self.masks, masks], axis=1)

    def over(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """(channels, n): whether every latent frame ``lo[i] .. hi[i]`` is masked."""
        unmasked = np.pad(np.cumsum(~self.masks, axis=1), ((0, 0), (1, 0)))
        size = self.masks.shape[1]
        lo, hi = np.clip(lo - self.first, 0, size), np.clip(hi + 1 - self.first, 0, size)
        out = unmasked[:, hi] == unmasked[:, lo]
        if lo.size:
            self.masks, self.first = self.masks[:, lo.min() :], self.first + lo.min()
        return out

    def extension(self, levels: np.ndarray, noise: np.ndarray, first: int, hop: int, rate: int, model_rate: int,
                  model_hop: int) -> tuple[np.ndarray, np.ndarray]:
        """The extension's levels and noise flags (channels, bands, n) of its frames ``first ..`` (``hop`` at the
        input ``rate``), with those of a channel after the first over masked latent frames the first's (free)."""
        j = np.arange(first, first + levels.shape[-1])
        quiet = self.over(frame_of(np.maximum(j - 1, 0) * hop, rate, model_rate, model_hop),
                          frame_of((j + 1) * hop - 1, rate, model_rate, model_hop))[1:, None]
        return tuple(np.concatenate([a[:1], np.where(quiet, a[:1], a[1:])]) for a in (levels, noise))


def cut(a: np.ndarray, by: np.ndarray) -> np.ndarray:
    """``a`` (..., frames) without the last frames in which ``by`` is all zero: a layer's frames that the last chunk
    need not carry (a frame that no chunk carries is zero to a decoder: no gain, no band)."""
    nonzero = np.flatnonzero(by.reshape(-1, by.shape[-1]).any(0))
    return a[..., : nonzero[-1] + 1 if nonzero.size else 0]


def _masks(peak: np.ndarray, energy: np.ndarray, side: bool) -> np.ndarray:
    """Frames whose peak is silent, and with ``side`` second signal's frames ``SIDE_DB`` below the first's."""
    masks = peak <= _SILENT
    if side:
        masks[1] |= energy[1] * _SIDE <= energy[0]
    return masks


class Joiner:
    """Decoder side: each chunk's plan as it is read, then the decoded blocks (channels, n) at the original
    ``rate`` -> the output: masked frames zeroed, mid/side frames turned back into left/right. Samples past the
    last chunk's frames (none in a valid file) keep the last frame's mode and are not masked."""

    def __init__(self, channels: int, rate: int, model_rate: int, hop: int):
        self.frame = (rate, model_rate, hop)
        self.modes = np.zeros(0, np.int8)  # per frame from ``first``
        self.alphas = np.zeros(0, np.float32)
        self.masks = np.zeros((channels, 0), bool)
        self.first = self.done = 0

    def push(self, plan: Plan) -> None:
        n = plan.masks.shape[1]
        self.modes = np.concatenate([self.modes, np.full(n, LR if plan.mode is None else plan.mode, np.int8)])
        self.alphas = np.concatenate([self.alphas, np.full(n, plan.alpha / 127, np.float32)])
        self.masks = np.concatenate([self.masks, plan.masks], axis=1)

    def run(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for y in blocks:
            yield self._apply(y)

    def _apply(self, y: np.ndarray) -> np.ndarray:
        n = y.shape[1]
        if n == 0 or self.modes.size == 0:
            self.done += n
            return y
        lo, hi = (frame_of(i, *self.frame) - self.first for i in (self.done, self.done + n - 1))
        if hi >= self.modes.size or self.masks[:, lo : hi + 1].any() or (self.modes[lo : hi + 1] == MS).any():
            t = frame_of(np.arange(self.done, self.done + n, dtype=np.int64), *self.frame) - self.first
            known = t < self.modes.size
            t = np.minimum(t, self.modes.size - 1)
            y = np.where(self.masks[:, t] & known, np.float32(0), y)
            ms = self.modes[t] == MS
            if ms.any():
                mid, side = y[0, ms], y[1, ms] + self.alphas[t[ms]] * y[0, ms]  # alpha 0: the side as decoded
                y[:, ms] = np.stack([mid + side, mid - side])
        drop = min(hi, self.modes.size - 1)
        self.modes, self.alphas, self.masks = self.modes[drop:], self.alphas[drop:], self.masks[:, drop:]
        self.first += drop
        self.done += n
        return y
