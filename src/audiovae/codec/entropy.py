"""Quantization and entropy models for VAE latents, coded exactly with constriction's range coder.

A latent frame (latent_dim values) is quantized to int32 symbols ``q = rint(mean / step)``, per quality
level (1 = coarsest) one step ``steps[level] * multipliers[level, channel]`` per channel (multipliers of
one give a single step for all channels, the only kind before version 2). Each symbol is range coded
(``constriction.stream.queue``, FIFO, so a decoder emits frames in order while it reads) with an integer
probability table: ``tables[scale, offset]`` holds counts summing to ``2**PRECISION`` over residuals
``q - center`` in ``[-RADIUS, RADIUS]`` plus an escape; an escaped residual follows as an Exp-Golomb
code of uniform fields.

Per symbol, ``center``, ``offset`` (sub-symbol part of the mean) and ``scale`` (table index) come from
integer arithmetic on symbols already coded, with integer parameters stored in the model:
- frame 0 of a chunk: a fixed mean and scale per channel (this alone is the ``factorized`` model);
- frame t > 0 (``context``): the mean is a fixed-point linear prediction from frame t - 1, the scale a
  lookup by channel and a binned activity ``sum |q[t-1] - q[t-2]|``.
Floats appear only when fitting and when quantizing at the encoder; coding uses integers alone, so
encoder and decoder agree bit for bit on any machine. Every chunk (one ``encode`` call) is independent.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import constriction
import numpy as np

PRECISION = 24  # constriction's fixed-point precision for its default coders
TOTAL = 1 << PRECISION
RADIUS = 127  # residuals coded through a table; larger ones escape
WIDTH = 2 * RADIUS + 2
ESCAPE = WIDTH - 1
OFFSET_BITS = 4  # sub-symbol resolution of a table's mean
FRAC_BITS = 12  # fixed-point fraction bits of the predictor's weights and means
CLIP = (1 << 15) - 1  # context symbols are clipped to +-CLIP, so products fit int64
WEIGHT_LIMIT = 1 << 16  # |weights| (16 in real units) and |means| (2**24 symbols) bound table centers,
MEAN_LIMIT = 1 << 36  # so an escaped residual of an int32 symbol stays below 2**32 for latent_dim <= 2**11
BINS = 8  # activity bins of the context model
BATCH = 32  # frames per call of the range encoder (it codes symbol by symbol: the bits do not depend on it)
SCALES = np.geomspace(0.11, 16.0, 48)  # table standard deviations, in symbols
DEFAULT_STEPS = tuple(2.0 ** (1.5 - k / 2) for k in range(16))  # quality 1..16: step 2.83 .. 0.0156
KINDS = ("factorized", "context")
VERSION = 2  # 2 added the per-channel multipliers; a version 1 state loads with multipliers of one

_queue, _models = constriction.stream.queue, constriction.stream.model
# constriction fetches NumPy's C API on first use, running Python code from inside Rust; a signal handler that
# raises there (the CLI's SIGTERM handler) becomes a Rust panic and a traceback. Fetch it once, at import.
_queue.RangeDecoder(np.zeros(1, dtype=np.uint32))
_CATEGORICAL = _models.Categorical(perfect=False)  # lazy family: one table row per symbol (see _pmf)
_UNIFORM = _models.Uniform()  # family: one size per symbol
_BIT_COUNT, _SIGN = _models.Uniform(32), _models.Uniform(2)
_LAYOUT = {"version": VERSION, "precision": PRECISION, "radius": RADIUS, "offset_bits": OFFSET_BITS,
           "frac_bits": FRAC_BITS, "clip": CLIP}
_ARRAYS = ("steps", "tables", "start_mean", "start_scale", "weights", "bias", "thresholds", "scale_index",
           "multipliers")


def quantize(mean: np.ndarray, step: float | np.ndarray) -> np.ndarray:
    """Symbols ``rint(mean / step)`` as int32 (saturating); an encoder-side float operation. ``step`` is a
    number or broadcasts against ``mean`` (per channel: (latent_dim, 1))."""
    x = np.rint(np.asarray(mean, dtype=np.float64) / step)
    if not np.isfinite(x).all():
        raise ValueError("latents contain NaN or infinity")
    return np.clip(x, -(2**31), 2**31 - 1).astype(np.int32)


def dequantize(symbols: np.ndarray, step: float | np.ndarray) -> np.ndarray:
    """Latents ``symbols * step`` as float32 (bin midpoints)."""
    return (np.asarray(symbols, dtype=np.float64) * step).astype(np.float32)


def step_multipliers(a, b, steps: Sequence[float] = DEFAULT_STEPS) -> np.ndarray:
    """(len(steps), C) per-channel multipliers ``exp(a_c + b_c ln step)`` (trained by train/rd.py)."""
    return np.exp(np.asarray(a, np.float64)[None] + np.asarray(b, np.float64)[None] * np.log(steps)[:, None])


def logistic_tables(scales: np.ndarray = SCALES) -> np.ndarray:
    """Integer tables (scales, 2**OFFSET_BITS, WIDTH) of discretized logistics with standard deviation
    ``scales`` and mean ``(offset + 0.5) / 2**OFFSET_BITS``; the escape gets the tails' mass."""
    s = np.asarray(scales, dtype=np.float64)[:, None, None] * np.sqrt(3.0) / np.pi
    mu = (np.arange(1 << OFFSET_BITS) + 0.5)[None, :, None] / (1 << OFFSET_BITS)
    edges = np.arange(-RADIUS - 0.5, RADIUS + 1.0)[None, None, :]
    cdf = 0.5 * (1.0 + np.tanh((edges - mu) / (2.0 * s)))
    p = np.diff(cdf, axis=-1)
    p = np.concatenate([p, np.clip(1.0 - p.sum(-1, keepdims=True), 0.0, None)], axis=-1)
    counts = np.floor(p * (TOTAL - WIDTH)).astype(np.int64) + 1  # every symbol >= 1, sum <= TOTAL
    top = counts.argmax(-1)[..., None]
    np.put_along_axis(counts, top, np.take_along_axis(counts, top, -1) + TOTAL - counts.sum(-1, keepdims=True), -1)
    return counts.astype(np.int32)


def exact_pmf(tables: np.ndarray) -> np.ndarray:
    """Rows of integer ``tables`` as constriction categorical probabilities whose CDF is exactly their
    cumulative counts: constriction (0.5, categorical.rs fast_quantized_cdf) turns floats p into
    floor(sum(p[:i]) * (2**24 - n) / sum(p)) + i, and p = counts - 1 (exact small integers summing to
    2**24 - n) makes the factor exactly 1. Every partial sum is an integer below 2**24, exact in float32,
    which halves what a coder call copies (the code is the same as from float64: tests/test_entropy.py)."""
    return (np.asarray(tables) - 1).astype(np.float32)


@dataclass(eq=False)
class EntropyModel:
    """Integer entropy model over ``latent_dim`` channels for each quality level (see module doc).

    Means are in ``2**-FRAC_BITS`` symbol units; scales index ``tables``.
    """

    kind: str
    steps: np.ndarray  # (Q,) float64, decreasing: quality i + 1 uses steps[i]
    tables: np.ndarray  # (S, 2**OFFSET_BITS, WIDTH) int32 counts, each row summing to 2**PRECISION
    start_mean: np.ndarray  # (Q, C) int64: frame 0 of a chunk
    start_scale: np.ndarray  # (Q, C) int32
    weights: np.ndarray  # (Q, C, C) int64: mean of frame t = weights @ q[t-1] + bias
    bias: np.ndarray  # (Q, C) int64
    thresholds: np.ndarray  # (Q, B - 1) int64, increasing: activity bin edges
    scale_index: np.ndarray  # (Q, C, B) int32: scale by channel and activity bin
    multipliers: np.ndarray | None = None  # (Q, C) float64 > 0: channel c of quality i + 1 uses steps[i] * [i, c]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"entropy model kind '{self.kind}' is not one of {', '.join(KINDS)}")
        if self.multipliers is None:
            self.multipliers = np.ones(np.shape(self.start_mean))
        for name, dtype in zip(_ARRAYS, ("f8", "i4", "i8", "i4", "i8", "i8", "i8", "i4", "f8"), strict=True):
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
        q, c = self.start_mean.shape
        shapes = {"steps": (q,), "tables": (len(self.tables), 1 << OFFSET_BITS, WIDTH), "start_scale": (q, c),
                  "weights": (q, c, c), "bias": (q, c), "scale_index": (q, c, self.thresholds.shape[1] + 1),
                  "multipliers": (q, c)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"entropy model: {name} has shape {getattr(self, name).shape}, expected {shape}")
        if (self.tables < 1).any() or (self.tables.sum(-1, dtype=np.int64) != TOTAL).any():
            raise ValueError(f"entropy model: tables need counts >= 1 summing to 2**{PRECISION}")
        for idx in (self.start_scale, self.scale_index):
            if idx.size and (idx.min() < 0 or idx.max() >= len(self.tables)):
                raise ValueError("entropy model: a scale index is outside the tables")
        if (np.abs(self.weights) > WEIGHT_LIMIT).any() or (np.abs(self.start_mean) > MEAN_LIMIT).any() \
                or (np.abs(self.bias) > MEAN_LIMIT).any():
            raise ValueError("entropy model: weights or means out of range")
        if not (np.isfinite(self.steps).all() and (self.steps > 0).all() and (np.diff(self.steps) < 0).all()):
            raise ValueError("entropy model: steps must be positive and decreasing")
        if not (np.isfinite(self.multipliers).all() and (self.multipliers > 0).all()):
            raise ValueError("entropy model: step multipliers must be positive and finite")
        self._pmf = exact_pmf(self.tables)

    @property
    def latent_dim(self) -> int:
        return self.start_mean.shape[1]

    @property
    def qualities(self) -> int:
        """Quality levels are 1..qualities."""
        return len(self.steps)

    def step(self, quality: int) -> np.ndarray:
        """Per-channel steps (latent_dim, 1) of ``quality``."""
        i = self._level(quality)
        return (self.steps[i] * self.multipliers[i])[:, None]

    def quantize(self, mean: np.ndarray, quality: int) -> np.ndarray:
        return quantize(mean, self.step(quality))

    def dequantize(self, symbols: np.ndarray, quality: int) -> np.ndarray:
        return dequantize(symbols, self.step(quality))

    def bits(self, symbols: np.ndarray, quality: int) -> float:
        """Ideal code length of ``encode(symbols, quality)`` in bits (-log2 of the integer probabilities)."""
        q, i = self._symbols(symbols), self._level(quality)
        center, offset, scale = self._params(i, q, np.arange(q.shape[1]))
        r = q - center
        esc = np.abs(r) > RADIUS
        counts = self.tables[scale, offset, np.where(esc, ESCAPE, r + RADIUS)]
        return float(np.log2(TOTAL / counts).sum() + _escape_bits(r[esc]).sum())

    def encode(self, symbols: np.ndarray, quality: int) -> bytes:
        """One independent chunk of int32 symbols (latent_dim, frames) -> bytes (little-endian words)."""
        q, i = self._symbols(symbols), self._level(quality)
        center, offset, scale = self._params(i, q, np.arange(q.shape[1]))
        r = q - center
        esc = np.abs(r) > RADIUS
        symbols, escaped = np.where(esc, ESCAPE, r + RADIUS).astype(np.int32), esc.any(0)
        coder = _queue.RangeEncoder()
        start = 0
        while start < q.shape[1]:  # frames in order, many per call: up to BATCH, or to one with escapes
            end = min(start + BATCH, q.shape[1])
            if (hits := np.flatnonzero(escaped[start:end])).size:
                end = start + int(hits[0]) + 1
            coder.encode(symbols[:, start:end].T.ravel(), _CATEGORICAL,
                         self._pmf[scale[:, start:end].T.ravel(), offset[:, start:end].T.ravel()])
            if escaped[end - 1]:  # its escape codes follow the frame's symbols
                _encode_escapes(coder, r[esc[:, end - 1], end - 1])
            start = end
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, quality: int, frames: int) -> np.ndarray:
        """Bytes of one chunk -> int32 symbols (latent_dim, frames)."""
        i = self._level(quality)
        if len(data) % 4 or frames < 0:
            raise ValueError(f"entropy decode: {len(data)} bytes is not whole 32-bit words, or frames {frames} < 0")
        coder = _queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        check = _queue.RangeEncoder()  # the frames coded again as they come: the data must be their coding
        q = np.zeros((frames, self.latent_dim), dtype=np.int64)
        # _params for one frame at a time, unrolled: the clipped previous two frames are carried along. Means are
        # kept RADIUS symbols low (offsets unchanged), so that a table symbol adds to their center directly.
        low = RADIUS << FRAC_BITS
        weights, bias, thresholds = self.weights[i], self.bias[i] - low, self.thresholds[i].tolist()
        first_row = self.scale_index[i].T << OFFSET_BITS  # (bins, C): each channel's first table row per bin
        mean, row, prev, prev2 = self.start_mean[i] - low, self.start_scale[i] << OFFSET_BITS, None, None
        pmf = self._pmf.reshape(-1, WIDTH)
        for t in range(frames):
            if t:
                mean = weights @ prev + bias
                row = first_row[bisect.bisect_right(thresholds, int(np.abs(prev - prev2).sum()))]
            rows = pmf.take(row + ((mean >> (FRAC_BITS - OFFSET_BITS)) & ((1 << OFFSET_BITS) - 1)), axis=0)
            idx = coder.decode(_CATEGORICAL, rows)
            check.encode(idx, _CATEGORICAL, rows)
            q[t] = (mean >> FRAC_BITS) + idx
            if idx.max() == ESCAPE:  # the last symbol
                esc = idx == ESCAPE
                r = _decode_escapes(coder, int(esc.sum()))
                _encode_escapes(check, r)
                q[t, esc] += r - (ESCAPE - RADIUS)
            clipped = np.minimum(np.maximum(q[t], -CLIP), CLIP)  # (np.clip is slower on small arrays)
            prev, prev2 = clipped, prev if t else clipped
        if q.size and (q.min() < -(2**31) or q.max() >= 2**31):
            raise ValueError("entropy decode: symbols out of int32 range (corrupt data or wrong model/quality)")
        if check.get_compressed().astype("<u4").tobytes() != bytes(data):  # also catches bytes left over or missing
            raise ValueError("entropy decode: the data is not the coding of its symbols (corrupt data or wrong "
                             "model/quality)")
        return q.T.astype(np.int32)

    def bits_per_quality(self, means: np.ndarray) -> np.ndarray:
        """Ideal code length in bits of ``means`` (latent_dim, frames) coded as one chunk, at each quality."""
        return np.array([self.bits(self.quantize(means, q), q) for q in range(1, self.qualities + 1)])

    def to_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Plain arrays (for safetensors) and a JSON-able dict; ``from_state`` inverts it."""
        return {name: getattr(self, name).copy() for name in _ARRAYS}, {"kind": self.kind, **_LAYOUT}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> EntropyModel:
        layout = {k: meta.get(k) for k in _LAYOUT}
        if layout != _LAYOUT and layout != {**_LAYOUT, "version": 1}:
            raise ValueError(f"entropy model layout {layout} is not a supported one ({_LAYOUT}, or version 1)")
        if layout["version"] == 1:  # one step for all channels
            if "multipliers" in arrays:
                raise ValueError("entropy model: a version 1 state has no multipliers")
            arrays = {**arrays, "multipliers": np.ones(np.shape(arrays.get("start_mean")))}
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"entropy model state lacks arrays: {', '.join(missing)}")
        return cls(meta.get("kind"), *(np.asarray(arrays[name]) for name in _ARRAYS))

    def _level(self, quality: int) -> int:
        valid = isinstance(quality, int | np.integer) and not isinstance(quality, bool)
        if not (valid and 1 <= quality <= len(self.steps)):
            raise ValueError(f"quality {quality!r} is not an integer in 1..{len(self.steps)}")
        return int(quality) - 1

    def _symbols(self, symbols: np.ndarray) -> np.ndarray:
        s = np.asarray(symbols)
        if s.dtype.kind not in "iu" or s.ndim != 2 or s.shape[0] != self.latent_dim:
            raise ValueError(f"symbols must be integers shaped ({self.latent_dim}, frames), got {s.dtype} {s.shape}")
        if s.size and (s.min() < -(2**31) or s.max() >= 2**31):
            raise ValueError("symbols must fit in int32")
        return s.astype(np.int64)

    def _context(self, i: int, q: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-point means (C, n) and activities (n,) of frames ``t``, from the symbols ``q`` of the
        frames before them (integer arithmetic only)."""
        prev = np.clip(q[:, np.maximum(t - 1, 0)], -CLIP, CLIP)
        activity = np.abs(prev - np.clip(q[:, np.maximum(t - 2, 0)], -CLIP, CLIP)).sum(0)
        mean = np.where(t == 0, self.start_mean[i][:, None], self.weights[i] @ prev + self.bias[i][:, None])
        return mean, activity

    def _params(self, i: int, q: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Table center, offset and scale indices (C, n) of frames ``t``."""
        mean, activity = self._context(i, q, t)
        bins = np.searchsorted(self.thresholds[i], activity, side="right")
        scale = np.where(t == 0, self.start_scale[i][:, None], self.scale_index[i][:, bins])
        return *_split(mean), scale


def _empty(latent_dim: int, steps: Sequence[float]) -> tuple:
    """Fresh arrays of a model with zero weights, one activity bin and the default tables."""
    def zeros(*shape):
        return np.zeros((len(steps), *shape), dtype=np.int64)
    return (np.array(steps, dtype=np.float64), logistic_tables(), zeros(latent_dim), zeros(latent_dim),
            zeros(latent_dim, latent_dim), zeros(latent_dim), zeros(0), zeros(latent_dim, 1))


def _split(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point means -> integer table centers and sub-symbol offsets."""
    return mean >> FRAC_BITS, (mean >> (FRAC_BITS - OFFSET_BITS)) & ((1 << OFFSET_BITS) - 1)


# Escaped residual r (|r| > RADIUS): v = |r| - RADIUS >= 1 as n = floor(log2 v) (uniform over 32), the sign
# (uniform over 2), then the n bits of v below its leading one in fields of at most 16 bits.
def _escape_fields(n: np.ndarray, rest: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    low, high = n >= 1, n > 16
    sizes = np.concatenate([1 << np.minimum(n[low], 16), 1 << (n[high] - 16)])
    if rest is None:
        return sizes, None
    return sizes, np.concatenate([rest[low] & 0xFFFF, rest[high] >> 16])


def _escape_bits(r: np.ndarray) -> np.ndarray:
    return 6.0 + np.frexp((np.abs(r) - RADIUS).astype(np.float64))[1] - 1


def _encode_escapes(coder: _queue.RangeEncoder, r: np.ndarray) -> None:
    v = np.abs(r) - RADIUS
    n = np.frexp(v.astype(np.float64))[1].astype(np.int64) - 1  # exact: v < 2**32 (see MEAN_LIMIT)
    coder.encode(n.astype(np.int32), _BIT_COUNT)
    coder.encode((r < 0).astype(np.int32), _SIGN)
    sizes, fields = _escape_fields(n, v - (1 << n))
    if sizes.size:
        coder.encode(fields.astype(np.int32), _UNIFORM, sizes.astype(np.int32))


def _decode_escapes(coder: _queue.RangeDecoder, count: int) -> np.ndarray:
    n = coder.decode(_BIT_COUNT, count).astype(np.int64)
    negative = coder.decode(_SIGN, count).astype(bool)
    sizes, _ = _escape_fields(n)
    fields = coder.decode(_UNIFORM, sizes.astype(np.int32)).astype(np.int64) if sizes.size else sizes
    low, high = n >= 1, n > 16
    rest = np.zeros(count, dtype=np.int64)
    rest[low] = fields[: low.sum()]
    rest[high] += fields[low.sum():] << 16
    v = (1 << n) + rest + RADIUS
    return np.where(negative, -v, v)


def fit_entropy_model(latents: Sequence[np.ndarray], steps: Sequence[float] = DEFAULT_STEPS,
                      kind: str = "context", multipliers: np.ndarray | None = None) -> EntropyModel:
    """Fit a ``kind`` model on latents [(latent_dim, frames), ...] for each step (decreasing), per channel
    times ``multipliers`` (len(steps), latent_dim) when given.

    Frame 0 (every frame if factorized): the mean of the symbols and the scale that minimizes the real
    code length over the tables. Context: a least-squares predictor from the previous frame, rounded to
    fixed point; activity bins at quantiles of the training activity; per channel and bin the scale
    that minimizes the code length.
    """
    latents = [np.asarray(x) for x in latents]
    if not latents or any(x.ndim != 2 or x.shape[0] != latents[0].shape[0] for x in latents):
        raise ValueError("latents must be a non-empty list of (latent_dim, frames) arrays")
    if sum(x.shape[1] for x in latents) == 0:
        raise ValueError("latents have no frames")
    levels, dim, bins = len(steps), latents[0].shape[0], BINS if kind == "context" else 1
    model = EntropyModel(kind, *_empty(dim, steps), multipliers)
    model.thresholds = np.full((levels, bins - 1), np.iinfo(np.int64).max)
    model.scale_index = np.zeros((levels, dim, bins), dtype=np.int32)
    cost = np.log2(TOTAL / model.tables)
    for i in range(levels):
        qs = [quantize(x, model.step(i + 1)).astype(np.int64) for x in latents]
        q = np.concatenate(qs, axis=1)
        model.start_mean[i] = model.bias[i] = np.rint(np.clip(q.mean(1) * (1 << FRAC_BITS), -MEAN_LIMIT, MEAN_LIMIT))
        model.start_scale[i] = _best_scales(cost, q, model.start_mean[i][:, None], np.zeros(q.shape[1], int), 1)[:, 0]
        model.scale_index[i] = model.start_scale[i][:, None]
        qs = [x for x in qs if x.shape[1] > 1]
        if kind == "factorized" or not qs:
            continue
        prev = np.clip(np.concatenate([x[:, :-1] for x in qs], axis=1), -CLIP, CLIP)
        target = np.concatenate([x[:, 1:] for x in qs], axis=1)
        design = np.vstack([prev, np.ones(prev.shape[1])]).T.astype(np.float64)
        coef = np.linalg.lstsq(design, target.T.astype(np.float64), rcond=None)[0] * (1 << FRAC_BITS)
        model.weights[i] = np.rint(np.clip(coef[:-1].T, -WEIGHT_LIMIT, WEIGHT_LIMIT))
        model.bias[i] = np.rint(np.clip(coef[-1], -MEAN_LIMIT, MEAN_LIMIT))
        mean, activity = (np.concatenate(a, axis=-1) for a in zip(
            *(model._context(i, x, np.arange(1, x.shape[1])) for x in qs), strict=True))
        edges = np.unique(np.ceil(np.quantile(activity, np.arange(1, bins) / bins)).astype(np.int64))
        model.thresholds[i, : len(edges)] = edges
        groups = np.searchsorted(model.thresholds[i], activity, side="right")
        model.scale_index[i] = _best_scales(cost, target, mean, groups, bins)
    return EntropyModel.from_state(*model.to_state())


def _best_scales(cost: np.ndarray, q: np.ndarray, mean: np.ndarray, groups: np.ndarray, bins: int) -> np.ndarray:
    """(C, bins) table indices minimizing the code length of symbols q (C, n) with fixed-point means
    (C, n) or (C, 1), per group; an empty group gets its channel's best index."""
    center, offset = _split(np.broadcast_to(mean, q.shape))
    r = q - center
    cell = (offset * WIDTH + np.where(np.abs(r) > RADIUS, ESCAPE, r + RADIUS)).astype(np.int64)
    key = (np.arange(len(q))[:, None] * bins + groups) * cost[0].size + cell
    hist = np.bincount(key.ravel(), minlength=len(q) * bins * cost[0].size).reshape(len(q), bins, -1)
    total = hist @ cost.reshape(len(cost), -1).T.astype(np.float64)  # (C, bins, S) code lengths
    return (total + total.sum(1, keepdims=True) / max(q.shape[1], 1)).argmin(-1).astype(np.int32)
