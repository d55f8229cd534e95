"""The neural codec: VAE posterior means -> quantized symbols -> entropy-coded chunks in an .avae file.

A file holds independent chunks of ``CHUNK_FRAMES`` latent frames (5 s at 50 Hz): each payload is a chunk head
(joint.py: stereo mode, silence masks), then per channel a u32 little-endian byte length followed by that channel's
range-coded symbols (``EntropyModel.encode``). Chunks are entropy-decodable on their own; audio continuity comes
from the VAE decoder's streaming state, which runs across chunks.
"""

from __future__ import annotations

import io
import math
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from audiovae.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, resampled_length, validate
from audiovae.codec import extend as extend_layer
from audiovae.codec import joint
from audiovae.codec import refine as refine_layer
from audiovae.codec.entropy import VERSION as ENTROPY_VERSION
from audiovae.codec.entropy import EntropyModel, fit_entropy_model, step_multipliers
from audiovae.codec.format import HASH_PREFIX_DIGITS, FormatError, Header, Reader, Writer, last_field, payload_fields
from audiovae.errors import AudioVAEError, shown
from audiovae.inference import EncodeStream, block_frames, encode_means, split, to_model_rate, to_rate
from audiovae.models.vae import VAE
from audiovae.registry import ModelLoadError, decoded_weights, load, load_entropy_state, save_entropy_model

CHUNK_FRAMES = 250  # the most frames a chunk holds (a decoder refuses more; a chunk head counts them in bytes)
CHANNEL_GROUP = 8  # channels decoded together: the channel count does not multiply the decoder's memory
_CODEC_KEYS = {"entropy_sha256": str, "samples": int, "streamed": bool, "refine": int, "extend": int, "layout": int,
               "frames": int, "chunk_frames": int}  # codec keys and their JSON types (the last two: version 1)
_JSON_TYPES = {str: "a string", int: "an integer", bool: "true or false"}
DEFAULT_QUALITY = 7
REFINE_FROM = 1  # --kbps adds the envelope refinement from this quality on (docs/codec.md, session 26)


class CodecError(AudioVAEError):
    """A file that this model cannot decode, or a bad request."""


def check_kbps(kbps: float) -> None:
    """Refuse a rate target that is not a positive, finite number (nan included)."""
    if not 0 < kbps < math.inf:
        raise CodecError(f"--kbps must be a positive, finite bitrate (got {kbps:g})")


class Codec:
    """``Codec("speech16k").compress(wave, sr, kbps=6)`` -> bytes; ``decompress(bytes)`` -> (wave, sr)."""

    def __init__(self, model: str | VAE = "speech16k"):
        self.model = load(model) if not isinstance(model, VAE) else model
        self.entropy = EntropyModel.from_state(*load_entropy_state(self.model))
        self.entropy_sha256 = self.model.card["entropy"]["sha256"]

    def compress(self, wave: np.ndarray, sample_rate: int, kbps: float | None = None,
                 quality: int | None = None, refine: bool | None = None, extend: bool | None = None) -> bytes:
        out = io.BytesIO()
        self.write(out, wave, sample_rate, kbps=kbps, quality=quality, refine=refine, extend=extend)
        return out.getvalue()

    def write(self, fileobj, wave: np.ndarray, sample_rate: int, kbps: float | None = None,
              quality: int | None = None, refine: bool | None = None, extend: bool | None = None) -> int:
        """Encode ``wave`` (channels, samples) into ``fileobj``; returns the quality used (see ``write_blocks``)."""
        wave = wave[None] if wave.ndim == 1 else wave
        validate(wave)
        blocks = split(wave, block_frames(sample_rate))
        return self.write_blocks(fileobj, blocks, sample_rate, wave.shape[0], wave.shape[1], kbps, quality, refine,
                                 extend)

    def write_blocks(self, fileobj, blocks: Iterable[np.ndarray], sample_rate: int, channels: int, length: int,
                     kbps: float | None = None, quality: int | None = None, refine: bool | None = None,
                     extend: bool | None = None) -> int:
        """Encode a ``length``-sample signal arriving as (channels, n) blocks into ``fileobj``, chunk by
        chunk; returns the quality used. Blocks of ``block_frames(sample_rate)`` give the bytes of ``write``.

        With ``kbps``, the highest quality whose whole file (container included) fits the target, quality
        1 when none does: a first pass keeps the latents (and the signal, for refinement) in a temporary file
        and sums each quality's ideal code length, then the file is coded (again at lower qualities while it
        is too large). ``refine`` (the envelope refinement layer): None adds it with ``kbps`` from quality
        ``REFINE_FROM`` on, where it is worth more than finer latents (not to a silent file), and leaves it out
        with a quality; its size is estimated from the first chunk's (exact for files of one chunk). ``extend``
        (the bandwidth extension, extend.py): None adds it where the input has band above the model's; its bytes
        do not depend on the quality and come off the budget. Silent frames and joint stereo (joint.py) count
        as they are coded: only the latents of coded frames, and each chunk's head."""
        if kbps is not None:
            check_kbps(kbps)
        if kbps is None:
            enc = self.stream_encoder(sample_rate, channels, DEFAULT_QUALITY if quality is None else quality,
                                      length=length, refine=bool(refine), extend=extend)
            for block in blocks:
                fileobj.write(enc(block))
            fileobj.write(enc.finish())
            return enc.quality
        if quality is not None:
            raise CodecError("give --kbps or --quality, not both")
        extend = self._extend(extend, sample_rate)
        chunker = _Chunker(self.model, sample_rate, channels, length, keep_samples=refine is not False,
                           extend=extend)
        budget = kbps * 1000 * length / sample_rate / 8  # bytes
        sizes, bits, envelopes, plans = [], np.zeros(self.entropy.qualities), [], []
        shape = (channels, self.model.latent_dim)
        with tempfile.TemporaryFile() as spool:
            for means, x, envelope, plan in chunker.run(blocks):
                spool.write(means.astype("<f4").tobytes())
                if x is not None:
                    spool.write(x.astype("<f4").tobytes())
                sizes.append(means.shape[-1])
                envelopes.append(envelope)
                plans.append(plan)
                bits += sum(self.entropy.bits_per_quality(m[:, k]) for m, k in zip(means, plan.coded, strict=True))

            def chunks():
                spool.seek(0)
                for i, n in enumerate(sizes):
                    means = np.frombuffer(spool.read(4 * n * shape[0] * shape[1]), "<f4").reshape(*shape, n)
                    x = None if chunker.samples is None else \
                        np.frombuffer(spool.read(4 * n * self.model.hop_length * channels), "<f4").reshape(channels, -1)
                    yield means, x, envelopes[i], plans[i], i == len(sizes) - 1

            # the extension's and the chunk heads' bytes
            fixed = sum(4 + len(e) for e in envelopes if e is not None) + sum(4 + len(p.head()) for p in plans)

            def best(extra: float = fixed) -> int:
                """The highest quality whose file fits with ``extra`` bytes besides the latents; 0 if none."""
                fits = np.flatnonzero(bits / 8 + extra <= budget)
                return int(fits[-1]) + 1 if fits.size else 0

            silent = all(p.masks.all() for p in plans)  # nothing to refine
            container = len(self.header(channels, sample_rate, max(best(), 1), length, True, extend).to_bytes()) + 30 \
                + 16 * len(sizes) + fixed  # preamble, header, trailer, chunk records, extension, heads

            def layer(grids: tuple) -> tuple[tuple[int, int] | None, int]:
                """The first of ``grids`` whose refined file should fit from quality ``REFINE_FROM`` on, and that
                quality; grids coarser than the finest at quality 1 only, beside a file of quality 1 without them (or
                with ``refine``). Else the coarsest grid at quality 1 with ``refine``, or no layer."""
                for grid in grids:
                    coarse = grid != refine_layer.GRIDS[0]
                    if coarse and best(container) > 1 and not refine:
                        break
                    q = self._refined_quality(first, 1 if coarse else max(best(), 1), sum(sizes), container,
                                              best, grid, measured)
                    if q >= REFINE_FROM:
                        return grid, q
                return (refine_layer.GRIDS[-1], 1) if refine else (None, max(best(), 1))

            measured, first = {}, next(chunks())  # what ``_refined_quality`` keeps per quality; the first chunk
            use = refine or (refine is None and not silent)
            grid, quality = layer(refine_layer.GRIDS) if use else (None, max(best(), 1))
            while True:
                with tempfile.TemporaryFile() as out:
                    writer = Writer(out, self.header(channels, sample_rate, quality, length, grid is not None, extend))
                    refiner = refine_layer.Encoder(self.model, channels, grid) if grid else None
                    for means, x, envelope, plan, last in chunks():
                        writer.write_chunk(self.chunk_payload(means, quality, plan, x, refiner, last, envelope),
                                           means.shape[-1])
                    writer.close()
                    coarser = refine_layer.GRIDS[refine_layer.GRIDS.index(grid) + 1 :] if grid else ()
                    if out.tell() <= budget or (quality == 1 and not coarser and (refine or grid is None)):
                        out.seek(0)
                        shutil.copyfileobj(out, fileobj)
                        return quality
                    extra = out.tell() - bits[quality - 1] / 8  # the container's and the layers' bytes
                if grid and best(extra) < REFINE_FROM:  # the layer costs more than the latents can give up
                    grid, quality = layer(coarser)
                elif grid:
                    quality = max(min(quality - 1, best(extra)), 1)
                else:
                    quality -= 1

    def _refined_quality(self, first_chunk: tuple, quality: int, frames: int, container: int, best,
                         grid: tuple[int, int], measured: dict) -> int:
        """The quality at which the file refined on ``grid`` should fit, 0 if none: ``best(extra bytes)``
        with the layer's bytes extrapolated from the first chunk's to ``frames``, measured again as the quality
        drops (coarser latents leave the decoder more to refine). ``measured`` keeps ``_measure`` per quality."""
        means, last = first_chunk[0], first_chunk[-1]
        for _ in range(3):
            if quality not in measured:
                measured[quality] = self._measure(first_chunk, quality)
            energies, rest = measured[quality]
            layer = rest + sum(map(len, refine_layer.encode_block(energies, grid, last)))
            extra = layer * (1 + (frames / means.shape[-1] - 1) * 1.03) + container
            if best(extra) >= quality:
                break
            if quality == 1:
                return 0  # the layer fits at no quality
            quality = max(best(extra), 1)
        return quality

    def _measure(self, first_chunk: tuple, quality: int) -> tuple[np.ndarray, float]:
        """What the refined first chunk at ``quality`` holds whatever the grid: its band energies, and its bytes
        besides the gains' data and the parts ``container`` counts, beyond the latents' ideal length."""
        means, x, envelope, plan, last = first_chunk
        energies = []

        def refiner(*args) -> list[bytes]:  # measures, and leaves the gains' fields empty
            energies.append(refine_layer.Encoder(self.model, means.shape[0]).measure(*args))
            return [b""] * means.shape[0]

        payload = self.chunk_payload(means, quality, plan, x, refiner, last, envelope)
        ideal = sum(self.entropy.bits(self.entropy.quantize(m[:, k], quality), quality)
                    for m, k in zip(means, plan.coded, strict=True)) / 8
        head = 4 + len(plan.head()) + (0 if envelope is None else 4 + len(envelope))  # in ``container``
        return energies[0], len(payload) - ideal - head

    def check_quality(self, quality: int) -> None:
        if not 1 <= quality <= self.entropy.qualities:
            raise CodecError(f"--quality must be 1..{self.entropy.qualities}, got {quality}")

    def _extend(self, extend: bool | None, sample_rate: int) -> bool:
        """Whether to add the bandwidth extension: None where the input has band above the model's."""
        possible = extend_layer.possible(sample_rate, self.model.sample_rate)
        if extend and not possible:
            raise CodecError(f"no band to extend: a {sample_rate} Hz input has less than "
                             f"{extend_layer.MIN_WIDTH_HZ} Hz above the model's {self.model.sample_rate // 2} Hz")
        return possible if extend is None else extend

    def header(self, channels: int, sample_rate: int, quality: int, length: int | None = None,
               refine: bool = False, extend: bool = False) -> Header:
        """The file header of a ``length``-sample signal; None (``original_length`` 0, ``codec['streamed']``)
        when the length is not known up front."""
        m = self.model
        if length is None:
            codec = {"streamed": True}
        else:
            codec = {"samples": resampled_length(length, sample_rate, m.sample_rate)}
        codec["layout"] = joint.LAYOUT
        if refine:
            codec["refine"] = refine_layer.VERSION
        if extend:
            codec["extend"] = extend_layer.VERSION
        return Header(model_id=m.name, model_sha256=m.card["sha256"], sample_rate=m.sample_rate,
                      channels=channels, original_length=length or 0, original_sample_rate=sample_rate,
                      quality=quality, entropy_model=f"{self.entropy.kind}-v{ENTROPY_VERSION}",
                      codec={"entropy_sha256": self.entropy_sha256[:HASH_PREFIX_DIGITS], **codec})

    def chunk_payload(self, means: np.ndarray, quality: int, plan: joint.Plan, x: np.ndarray | None = None,
                      refiner: Callable[..., list[bytes]] | None = None, last: bool = False,
                      envelope: bytes | None = None) -> bytes:
        """(channels, latent_dim, frames) posterior means -> one chunk's payload (see docs/format.md): the
        ``plan``'s head, then each channel's coded frames; with a ``refiner``, each channel's refinement gains
        follow its latents (``x``: the chunk's samples); the coded extension ``envelope``, when given, comes last."""
        symbols = [self.entropy.quantize(c[:, k], quality) for c, k in zip(means, plan.coded, strict=True)]
        parts = [[plan.head()]] + [[self.entropy.encode(q, quality)] for q in symbols]
        if refiner is not None:
            z = np.stack([self.entropy.dequantize(q[:, joint.held(k)], quality)
                          for q, k in zip(symbols, plan.coded, strict=True)])
            for part, gains in zip(parts[1:], refiner(x, z, last, plan.masks), strict=True):
                part.append(gains)
        if envelope is not None:
            parts.append([envelope])
        return b"".join(struct.pack("<I", len(p)) + p for part in parts for p in part)

    def stream_encoder(self, sample_rate: int, channels: int, quality: int = DEFAULT_QUALITY,
                       length: int | None = None, refine: bool = False, extend: bool | None = None,
                       grid: tuple[int, int] = refine_layer.GRIDS[0]) -> StreamEncoder:
        return StreamEncoder(self, sample_rate, channels, quality, length, refine, self._extend(extend, sample_rate),
                             grid)

    @classmethod
    def for_header(cls, header: Header, model: str | VAE | None = None, name: str | None = None) -> Codec:
        """The codec that decodes a file with ``header``: ``model`` when given (a name, folder or VAE; its weights
        must be those the file names), else the shipped model the file names (never a path) in the version it names."""
        from audiovae.registry import load_version

        if model is None:
            try:
                model = load_version(header.model_id, lambda m: _names(header.model_sha256, *decoded_weights(m)))
            except ModelLoadError as e:
                raise CodecError(f"{name}: {e}" if name else str(e)) from None
        codec = cls(model)
        codec.check(header, name)
        return codec

    def decompress(self, data: bytes) -> tuple[np.ndarray, int]:
        return self.read(io.BytesIO(data))

    def read(self, fileobj, name: str | None = None) -> tuple[np.ndarray, int]:
        """Decode an .avae stream: (channels, samples) float32 at the original rate."""
        reader = Reader(fileobj, name=name)
        return np.concatenate(list(self.stream_decode(reader)), axis=1), reader.header.original_sample_rate

    def stream_decode(self, reader: Reader) -> Iterator[np.ndarray]:
        """Decoded audio (channels, n) at the original rate, one block per chunk: bounded memory. The header
        is checked first (``check``). A file of known length is trimmed to it; a streamed one gives every sample."""
        h = reader.header
        self.check(h, reader.name)
        known = "streamed" not in h.codec
        limit, length = (h.codec.get("samples", 0), h.original_length) if known else (None, None)
        joiner = joint.Joiner(h.channels, h.original_sample_rate, h.sample_rate, self.model.hop_length) \
            if "layout" in h.codec else None
        extender = extend_layer.Extender(h.channels, h.original_sample_rate, h.sample_rate, h.codec["extend"]) \
            if "extend" in h.codec else None
        chunks = self._decode_chunks(reader, h, extender, joiner)
        if extender is None:
            out = to_rate(chunks, h.sample_rate, h.original_sample_rate, h.channels, limit, length)
        else:  # the extension sees the decoder's tail, as in a streamed file, and the length is cut after it
            blocks = to_rate(chunks, h.sample_rate, h.original_sample_rate, h.channels)
            out = to_rate(extender.run(blocks), h.original_sample_rate, h.original_sample_rate, h.channels, length,
                          length)
        return out if joiner is None else joiner.run(out)

    def check(self, h: Header, name: str | None = None) -> None:
        """Refuse, before any chunk is read, a header this codec cannot decode as written: another model or
        entropy model, a ``sample_rate`` other than the model's, an ``original_sample_rate`` outside
        ``MIN_SAMPLE_RATE .. MAX_SAMPLE_RATE``, a quality out of range, codec keys unknown or of the wrong type,
        a ``samples`` that is not what ``original_length`` gives at the model's rate."""
        where, m = f"{name}: " if name else "", self.model
        for key, value in h.codec.items():
            if key not in _CODEC_KEYS:
                raise CodecError(f"{where}unknown codec key {shown(key)} in the header")
            if type(value) is not _CODEC_KEYS[key]:  # true is not an integer here
                raise CodecError(f"{where}header codec key '{key}': expected {_JSON_TYPES[_CODEC_KEYS[key]]}, got "
                                 f"{shown(value)}")
        if not _names(h.model_sha256, *decoded_weights(m)):
            raise CodecError(f"{where}encoded with model {shown(h.model_id)} (sha256 {h.model_sha256[:12]}...), "
                             f"not with '{m.name}' ({m.card['sha256'][:12]}...)")
        stored = h.codec.get("entropy_sha256", self.entropy_sha256)  # files before it was recorded: not checked
        if not _names(stored, self.entropy_sha256):
            raise CodecError(f"{where}coded with another entropy model of {shown(h.model_id)} "
                             f"(sha256 {shown(stored[:12])}...) than this one ({self.entropy_sha256[:12]}...)")
        if h.sample_rate != m.sample_rate:
            raise CodecError(f"{where}header sample_rate {h.sample_rate} is not the model's {m.sample_rate} Hz")
        if not MIN_SAMPLE_RATE <= h.original_sample_rate <= MAX_SAMPLE_RATE:
            raise CodecError(f"{where}header original_sample_rate {h.original_sample_rate} is outside "
                             f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
        if not 1 <= h.quality <= self.entropy.qualities or h.quality != int(h.quality):
            raise CodecError(f"{where}quality {h.quality} is not one of this model's 1..{self.entropy.qualities}")
        if h.codec.get("layout", joint.LAYOUT) != joint.LAYOUT:
            raise CodecError(f"{where}payload layout {h.codec['layout']!r} is not supported (this codec reads layout "
                             f"{joint.LAYOUT}, and files without the key)")
        if h.codec.get("refine", refine_layer.VERSION) not in refine_layer.VERSIONS:
            raise CodecError(f"{where}envelope refinement version {h.codec['refine']!r} is not supported "
                             f"(this codec reads versions {', '.join(map(str, refine_layer.VERSIONS))})")
        if h.codec.get("extend", extend_layer.VERSION) not in extend_layer.VERSIONS:
            raise CodecError(f"{where}bandwidth extension version {h.codec['extend']!r} is not supported "
                             f"(this codec reads versions {', '.join(map(str, extend_layer.VERSIONS))})")
        if "extend" in h.codec and not extend_layer.possible(h.original_sample_rate, m.sample_rate):
            raise CodecError(f"{where}a bandwidth extension from {m.sample_rate} Hz to {h.original_sample_rate} Hz "
                             "has no band to extend")
        if "streamed" in h.codec:
            if not h.codec["streamed"] or "samples" in h.codec or h.original_length:
                raise CodecError(f"{where}a streamed file records no length (codec streamed true, no samples, "
                                 "original_length 0)")
            return
        expected = resampled_length(h.original_length, h.original_sample_rate, m.sample_rate)
        if h.codec.get("samples") != expected:
            raise CodecError(f"{where}header codec key 'samples' is {h.codec.get('samples', 'missing')}, but "
                             f"original_length {h.original_length} at {h.original_sample_rate} Hz gives {expected}")

    def _decode_chunks(self, reader: Reader, h: Header, extender: extend_layer.Extender | None = None,
                       joiner: joint.Joiner | None = None) -> Iterator[np.ndarray]:
        """Audio (channels, n) at the model's rate, one block per chunk, then the decoder's tail. Each chunk's
        frames are checked before it is decoded: at most ``CHUNK_FRAMES``, in all exactly the frames that
        ``samples`` needs (a streamed file: any number). Each chunk's extension envelope goes to ``extender``
        (at most the frames that the latents so far can span), its plan (layout 2) to ``joiner``."""
        m, q, where = self.model, int(h.quality), f"{reader.name}: " if reader.name else ""
        need = None if "streamed" in h.codec else m.padded_length(h.codec["samples"]) // m.hop_length
        groups = [slice(c, c + CHANNEL_GROUP) for c in range(0, h.channels, CHANNEL_GROUP)]
        decoders = [m.stream_decoder() for _ in groups]
        refiner = refine_layer.Refiner(h.channels, m.sample_rate, m.hop_length) if "refine" in h.codec else None
        head = "layout" in h.codec
        frames = gain_frames = envelope_frames = 0
        for chunk in reader:
            frames += chunk.frames
            if chunk.frames > CHUNK_FRAMES:
                raise FormatError(f"{where}chunk {chunk.index}: {chunk.frames} frames, more than the {CHUNK_FRAMES} "
                                  "of a chunk (file damaged)")
            if need is not None and frames > need:
                raise FormatError(f"{where}chunk {chunk.index}: the chunks pass the {need} frames that "
                                  f"{h.codec['samples']} samples need (file damaged)")
            try:  # gains: at most one frame more than the latents decoded so far
                payload = chunk.payload
                if extender is not None:
                    payload, envelope = last_field(payload, h.channels * (2 if refiner else 1) + head)
                    bound = extender.layout.max_frames(frames * m.hop_length, m.sample_rate, h.original_sample_rate)
                    envelope = _decoded(extend_layer.decode, envelope, h.channels, bound - envelope_frames,
                                        h.codec["extend"])
                    envelope_frames += envelope[0].shape[-1]
                    extender.envelope(*envelope)
                bands = refiner and len(refiner.starts)
                symbols, gains, plan = self._split(payload, chunk.frames, h.channels, q, bands,
                                                   frames + 1 - gain_frames, head, h.codec.get("refine"))
            except FormatError as e:
                raise FormatError(f"{where}chunk {chunk.index}: {e}") from None
            if joiner is not None:
                joiner.push(plan)
            z = torch.from_numpy(np.stack([self.entropy.dequantize(s, q) for s in symbols])).float()
            y = np.concatenate([dec(z[g]).numpy() for dec, g in zip(decoders, groups, strict=True)])
            if not np.isfinite(y).all():
                raise FormatError(f"{where}chunk {chunk.index}: its latents decode to audio that is not finite")
            if refiner is not None:
                gain_frames += gains.shape[-1]
                if frames - gain_frames > 2 * CHUNK_FRAMES:  # the refiner would hold the audio in between
                    raise FormatError(f"{where}chunk {chunk.index}: the refinement gains lag the latents by more "
                                      f"than {2 * CHUNK_FRAMES} frames (file damaged)")
                y = refiner.push(y, gains)
            yield y
        if need is not None and frames != need:
            raise FormatError(f"{where}the chunks hold {frames} frames, not the {need} that "
                              f"{h.codec['samples']} samples need (file damaged)")
        y = np.zeros((h.channels, 0), np.float32) if decoders[0].state is None else \
            np.concatenate([dec.flush().numpy() for dec in decoders])
        yield y if refiner is None else refiner.flush(y)

    def _split(self, payload: bytes, frames: int, channels: int, quality: int, bands: int | None = None,
               gain_frames: int = 0, head: bool = True, refine: int | None = refine_layer.VERSION
               ) -> tuple[list[np.ndarray], np.ndarray | None, joint.Plan]:
        """A payload's symbols per channel (every frame's: held where not coded), with ``bands`` its refinement
        gains (channels, bands, n; coded in version ``refine``), at most ``gain_frames`` frames of them, and its
        plan (without a ``head``, layout 1: every frame coded, channels as they are)."""
        layers = 2 if bands else 1
        fields = payload_fields(payload, head + channels * layers)
        try:
            plan = joint.Plan.read(fields[0], channels, frames) if head else \
                joint.Plan(None, np.zeros((channels, frames), bool))
            symbols = [self.entropy.decode(d, quality, int(k.sum()))[:, joint.held(k)]
                       for d, k in zip(fields[head::layers], plan.coded, strict=True)]
            gains = [] if bands else None
            for d in fields[head + 1 :: 2] if bands else ():  # layout 2: empty after channel 0, gains 0
                gains.append(np.zeros_like(gains[0]) if head and gains and not d else
                             refine_layer.decode(d, bands, gain_frames, refine))
        except (ValueError, AssertionError, RuntimeError) as e:
            raise FormatError(f"undecodable payload ({e})") from None
        if gains and len({g.shape[-1] for g in gains}) > 1:
            raise FormatError("the payload's channels hold different numbers of refinement frames")
        return symbols, None if gains is None else np.stack(gains), plan


def _decoded(decode, *args):
    """``decode(*args)``, its refusals as a FormatError."""
    try:
        return decode(*args)
    except (ValueError, AssertionError, RuntimeError) as e:
        raise FormatError(f"undecodable payload ({e})") from None


def _names(stored: str, *sha256: str) -> bool:
    """Whether a header's hash (all 64 hex digits, or a prefix of at least 16) is one of ``sha256``."""
    return len(stored) >= HASH_PREFIX_DIGITS and any(s.startswith(stored) for s in sha256)


class _Chunker:
    """(channels, n) audio blocks -> posterior means in chunks of ``CHUNK_FRAMES`` frames (channels, dim, n),
    each with its ``n * hop`` samples at the model's rate when ``keep_samples`` (else None), with ``extend``
    its coded extension envelope (else None), and its plan (joint.py: the channels coded, as the means and
    samples are, and their silence); with ``length``, the signal must have exactly that many samples."""

    def __init__(self, model: VAE, sample_rate: int, channels: int, length: int | None = None,
                 keep_samples: bool = False, extend: bool = False):
        if length is not None and length < 1:
            raise CodecError("no audio samples (length 0)")
        self.planner = joint.Planner(channels, sample_rate, model.sample_rate, model.hop_length, CHUNK_FRAMES)
        self.received = 0
        self.stream = EncodeStream(model, sample_rate, channels, self._keep if keep_samples else None)
        self.channels, self.length, self.hop = channels, length, model.hop_length
        self.pending = np.zeros((channels, model.latent_dim, 0), np.float32)
        self.samples = np.zeros((channels, 0), np.float32) if keep_samples else None
        self.extend = extend_layer.Analyzer(channels, sample_rate, model.sample_rate, model.hop_length) \
            if extend else None
        self.masks, self.rates = joint.MaskLog(channels), (sample_rate, model.sample_rate, model.hop_length)
        self.taken = self.envelope_frames = 0  # frames in the chunks so far, the extension's

    def push(self, block: np.ndarray) -> list[tuple]:
        block = block[None] if block.ndim == 1 else block
        if block.shape[0] != self.channels:
            raise CodecError(f"stream of {self.channels} channel(s) got a block of {block.shape[0]}")
        if block.shape[1]:
            validate(block, "stream block")
        if self.length is not None and self.received + block.shape[1] > self.length:
            raise CodecError(f"the signal is longer than the {self.length} samples announced")
        self.received += block.shape[1]
        return self._code(self.planner.push(block))

    def run(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple]:
        for block in blocks:
            yield from self.push(block)
        yield from self.finish()

    def finish(self) -> list[tuple]:
        if self.length is not None and self.received != self.length:
            raise CodecError(f"the signal has {self.received} samples, not the {self.length} announced")
        chunks = self._code(self.planner.finish())
        self.pending = np.concatenate([self.pending, self.stream.finish().numpy()], axis=-1)
        n = self.pending.shape[-1]
        sizes = [CHUNK_FRAMES] * (n // CHUNK_FRAMES) + [n % CHUNK_FRAMES] * (n % CHUNK_FRAMES > 0)
        return chunks + [self._take(k, last=i == len(sizes) - 1) for i, k in enumerate(sizes)]

    def _code(self, blocks: list[np.ndarray]) -> list[tuple]:
        """The chunks that the planner's ``blocks`` (the channels to code) complete."""
        chunks = []
        for block in blocks:
            if self.extend is not None:
                self.extend.push(block)
            chunks += self._split(self.stream.push(block).numpy())
        return chunks

    def _keep(self, x: np.ndarray) -> None:
        self.samples = np.concatenate([self.samples, x], axis=1)

    def _take(self, frames: int, last: bool = False) -> tuple[np.ndarray, np.ndarray | None, bytes | None, joint.Plan]:
        """The next chunk; the ``last`` one's envelope holds every frame left."""
        means, self.pending = self.pending[..., :frames], self.pending[..., frames:]
        self.taken += frames
        plan, envelope, x = self.planner.plan(frames), None, None
        self.masks.push(plan.masks)
        if self.extend is not None:
            levels = self.masks.extension(*self.extend.take(self.taken, last), self.envelope_frames,
                                          self.extend.layout.hop, *self.rates)
            self.envelope_frames += levels[0].shape[-1]
            envelope = extend_layer.encode(*(joint.cut(a, levels[0]) for a in levels) if last else levels,
                                           span=self.extend.span)
        if self.samples is not None:
            x, self.samples = self.samples[:, : frames * self.hop], self.samples[:, frames * self.hop :]
        return means, x, envelope, plan

    def _split(self, means: np.ndarray) -> list[tuple]:
        self.pending = np.concatenate([self.pending, means], axis=-1)
        chunks = []
        while self.pending.shape[-1] >= CHUNK_FRAMES:
            chunks.append(self._take(CHUNK_FRAMES))
        return chunks


class StreamEncoder:
    """Push-based encoder: feed (channels, n) blocks at ``sample_rate``; each call returns the .avae bytes
    completed so far (the header, then whole chunks), ``finish`` the rest. With ``length`` (samples, known
    up front) the bytes equal ``Codec.compress``'s; without, the header records no length (``streamed``)
    and a decoder returns every decoded sample, the padding tail included. ``refine`` adds the envelope
    refinement layer (refine.py) on the ``grid`` of merged bands and frames, ``extend`` the bandwidth extension
    (extend.py)."""

    def __init__(self, codec: Codec, sample_rate: int, channels: int, quality: int = DEFAULT_QUALITY,
                 length: int | None = None, refine: bool = False, extend: bool = False,
                 grid: tuple[int, int] = refine_layer.GRIDS[0]):
        codec.check_quality(quality)
        self.codec, self.quality = codec, quality
        self.chunker = _Chunker(codec.model, sample_rate, channels, length, keep_samples=refine, extend=extend)
        self.refiner = refine_layer.Encoder(codec.model, channels, grid) if refine else None
        self.out = io.BytesIO()
        self.writer = Writer(self.out, codec.header(channels, sample_rate, quality, length, refine, extend))

    def __call__(self, block: np.ndarray) -> bytes:
        self._write(self.chunker.push(block))
        return self._take()

    def finish(self) -> bytes:
        """Flush the resampler, pad so that every sample decodes completely, write the last chunk."""
        self._write(self.chunker.finish(), last=True)
        self.writer.close()
        return self._take()

    def _write(self, chunks: list, last: bool = False) -> None:
        for i, (means, x, envelope, plan) in enumerate(chunks):
            payload = self.codec.chunk_payload(means, self.quality, plan, x, self.refiner,
                                               last and i == len(chunks) - 1, envelope)
            self.writer.write_chunk(payload, means.shape[-1])

    def _take(self) -> bytes:
        data = self.out.getvalue()
        self.out.seek(0)
        self.out.truncate()
        return data


def fit_for_model(model: VAE, clips: list[np.ndarray], sample_rate: int) -> EntropyModel:
    """Fit the context entropy model on posterior means of ``clips`` [(samples,) ...] and store it; with
    per-channel steps when the model's card has ``step_scales`` (a rate-distortion fine-tuning's)."""
    latents = [encode_means(model, to_model_rate(model, c[None], sample_rate))[0].numpy() for c in clips]
    scales = model.card.get("step_scales")
    entropy = fit_entropy_model(latents, kind="context",
                                multipliers=step_multipliers(scales["a"], scales["b"]) if scales else None)
    save_entropy_model(model, *entropy.to_state())
    return entropy
