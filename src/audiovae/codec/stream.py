"""The neural codec: VAE posterior means -> quantized symbols -> entropy-coded chunks in an .avae file.

A file holds independent chunks of ``CHUNK_FRAMES`` latent frames (5 s at 50 Hz): each payload is,
per channel, a u32 little-endian byte length followed by that channel's range-coded symbols
(``EntropyModel.encode``). Chunks are entropy-decodable on their own; audio continuity comes from the
VAE decoder's streaming state, which runs across chunks.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import soxr
import torch

from audiovae.audio import validate
from audiovae.codec.entropy import EntropyModel, fit_entropy_model
from audiovae.codec.format import FormatError, Header, Reader, Writer
from audiovae.errors import AudioVAEError
from audiovae.inference import encode_means, to_model_rate
from audiovae.models.vae import VAE

CHUNK_FRAMES = 250
DEFAULT_QUALITY = 7


class CodecError(AudioVAEError):
    """A file that this model cannot decode, or a bad request."""


class Codec:
    """``Codec("speech16k").compress(wave, sr, kbps=6)`` -> bytes; ``decompress(bytes)`` -> (wave, sr)."""

    def __init__(self, model: str | VAE = "speech16k"):
        from audiovae.registry import load, load_entropy_state

        self.model = load(model) if not isinstance(model, VAE) else model
        self.entropy = EntropyModel.from_state(*load_entropy_state(self.model))

    @property
    def frame_rate(self) -> float:
        return self.model.sample_rate / self.model.hop_length

    def quality_for_kbps(self, means: np.ndarray, kbps: float) -> int:
        """Highest quality whose rate on these means (channels, dim, frames), all channels, is <= kbps."""
        joined = np.concatenate(list(means), axis=1)  # channels side by side: the rate per channel
        return self.entropy.quality_for_kbps(joined, kbps / means.shape[0], self.frame_rate)

    def compress(self, wave: np.ndarray, sample_rate: int, kbps: float | None = None,
                 quality: int | None = None) -> bytes:
        out = io.BytesIO()
        self.write(out, wave, sample_rate, kbps=kbps, quality=quality)
        return out.getvalue()

    def write(self, fileobj, wave: np.ndarray, sample_rate: int, kbps: float | None = None,
              quality: int | None = None) -> int:
        """Encode ``wave`` (channels, samples) into ``fileobj``; returns the quality used.

        With ``kbps``, the highest quality whose whole file (container included) fits the target;
        quality 1 when none does."""
        wave = wave[None] if wave.ndim == 1 else wave
        validate(wave)
        if kbps is not None and kbps <= 0:
            raise CodecError(f"--kbps must be positive, got {kbps:g}")
        x = to_model_rate(self.model, wave, sample_rate)
        means = encode_means(self.model, x).numpy()
        if quality is None and kbps is None:
            quality = DEFAULT_QUALITY
        if quality is not None:
            self.check_quality(quality)
        header = self.header(wave.shape[0], sample_rate, quality or 1, original_length=wave.shape[1],
                             frames=int(means.shape[-1]), samples=int(x.shape[-1]))
        if quality is None:
            budget = kbps * 1000 * wave.shape[1] / sample_rate / 8
            quality = self.quality_for_kbps(means, kbps)
            while True:  # the estimate ignores the container: check the real size
                data = self._encode(header, means, quality)
                if len(data) <= budget or quality == 1:
                    break
                quality -= 1
        else:
            data = self._encode(header, means, quality)
        fileobj.write(data)
        return quality

    def check_quality(self, quality: int) -> None:
        if not 1 <= quality <= self.entropy.qualities:
            raise CodecError(f"--quality must be 1..{self.entropy.qualities}, got {quality}")

    def header(self, channels: int, sample_rate: int, quality: int, original_length: int = 0, **codec) -> Header:
        """The file header; ``original_length`` 0 (with ``codec['streamed']``) when the length is unknown."""
        return Header(model_id=self.model.name, model_sha256=self.model.card["sha256"],
                      sample_rate=self.model.sample_rate, channels=channels, original_length=original_length,
                      original_sample_rate=sample_rate, quality=quality, entropy_model=f"{self.entropy.kind}-v1",
                      codec={"chunk_frames": CHUNK_FRAMES, **codec})

    def chunk_payload(self, symbols: np.ndarray, quality: int) -> bytes:
        """(channels, latent_dim, frames) symbols -> one chunk's payload (see docs/format.md)."""
        return b"".join(struct.pack("<I", len(p)) + p for p in (self.entropy.encode(c, quality) for c in symbols))

    def stream_encoder(self, sample_rate: int, channels: int, quality: int = DEFAULT_QUALITY) -> StreamEncoder:
        return StreamEncoder(self, sample_rate, channels, quality)

    def _encode(self, header: Header, means: np.ndarray, quality: int) -> bytes:
        symbols = np.stack([self.entropy.quantize(m, quality) for m in means])
        out = io.BytesIO()
        writer = Writer(out, replace(header, quality=quality))
        for t in range(0, symbols.shape[-1], CHUNK_FRAMES):
            block = symbols[..., t : t + CHUNK_FRAMES]
            writer.write_chunk(self.chunk_payload(block, quality), block.shape[-1])
        writer.close()
        return out.getvalue()

    def decompress(self, data: bytes) -> tuple[np.ndarray, int]:
        return self.read(io.BytesIO(data))

    def read(self, fileobj, name: str | None = None) -> tuple[np.ndarray, int]:
        """Decode an .avae stream: (channels, samples) float32 at the original rate."""
        reader = Reader(fileobj, name=name)
        self.check(reader.header, name)
        return self.decode_reader(reader)

    def decode_reader(self, reader: Reader) -> tuple[np.ndarray, int]:
        return np.concatenate(list(self.stream_decode(reader)), axis=1), reader.header.original_sample_rate

    def stream_decode(self, reader: Reader) -> Iterator[np.ndarray]:
        """Decoded audio (channels, n) at the original rate, one block per chunk: bounded memory.
        A file of known length is trimmed (or zero-padded) to it; a streamed one gives every sample."""
        h = reader.header
        known = not h.codec.get("streamed", False)
        limit = h.codec.get("samples", 0) if known else None
        rs = None if h.sample_rate == h.original_sample_rate else soxr.ResampleStream(
            h.sample_rate, h.original_sample_rate, h.channels, dtype="float32", quality="HQ")
        done = at_model_rate = 0
        for block in self._decode_chunks(reader, h):
            y = block.numpy()
            if limit is not None:
                y = y[:, : max(0, limit - at_model_rate)]
            at_model_rate += block.shape[-1]
            y = rs.resample_chunk(y.T).T if rs is not None else y
            y = y[:, : max(0, h.original_length - done)] if known else y
            done += y.shape[1]
            yield np.ascontiguousarray(y, dtype=np.float32)
        tail = rs.resample_chunk(np.zeros((0, h.channels), np.float32), last=True).T if rs is not None else \
            np.zeros((h.channels, 0), np.float32)
        if known:
            tail = np.pad(tail, ((0, 0), (0, max(0, h.original_length - done - tail.shape[1]))))
            tail = tail[:, : h.original_length - done]
        yield np.ascontiguousarray(tail, dtype=np.float32)

    def check(self, h: Header, name: str | None = None) -> None:
        where = f"{name}: " if name else ""
        if h.model_sha256 != self.model.card["sha256"]:
            raise CodecError(f"{where}encoded with model '{h.model_id}' (sha256 {h.model_sha256[:12]}...), "
                             f"not with '{self.model.name}' ({self.model.card['sha256'][:12]}...)")
        if not 1 <= h.quality <= self.entropy.qualities or h.quality != int(h.quality):
            raise CodecError(f"{where}quality {h.quality} is not one of this model's 1..{self.entropy.qualities}")

    def _decode_chunks(self, reader: Reader, h: Header) -> Iterator[torch.Tensor]:
        dec = self.model.stream_decoder()
        q = int(h.quality)
        for chunk in reader:
            z = torch.from_numpy(np.stack([self.entropy.dequantize(s, q) for s in
                                           self._split(chunk.payload, chunk.frames, h.channels, q)])).float()
            yield dec(z)
        yield dec.flush()

    def _split(self, payload: bytes, frames: int, channels: int, quality: int) -> list[np.ndarray]:
        out, pos = [], 0
        for _ in range(channels):
            if pos + 4 > len(payload):
                raise FormatError("chunk payload is shorter than its channel lengths say")
            (n,) = struct.unpack_from("<I", payload, pos)
            data = payload[pos + 4 : pos + 4 + n]
            if len(data) != n:
                raise FormatError("chunk payload is shorter than its channel lengths say")
            try:
                out.append(self.entropy.decode(data, quality, frames))
            except (ValueError, AssertionError, RuntimeError) as e:
                raise FormatError(f"undecodable chunk payload ({e})") from None
            pos += 4 + n
        return out


class StreamEncoder:
    """Push-based encoder: feed (channels, n) blocks at ``sample_rate``; each call returns the .avae
    bytes completed so far (the header, then whole chunks), ``finish`` the rest. The header records no
    length (``streamed``), so a decoder returns every decoded sample, the padding tail included."""

    def __init__(self, codec: Codec, sample_rate: int, channels: int, quality: int = DEFAULT_QUALITY):
        codec.check_quality(quality)
        m = codec.model
        self.codec, self.quality, self.channels = codec, quality, channels
        self.resampler = None if sample_rate == m.sample_rate else soxr.ResampleStream(
            sample_rate, m.sample_rate, channels, dtype="float32", quality="HQ")
        self.encoder = m.stream_encoder()
        self.samples = 0  # at the model rate
        self.pending = np.zeros((channels, m.latent_dim, 0), np.float32)
        self.out = io.BytesIO()
        self.writer = Writer(self.out, codec.header(channels, sample_rate, quality, streamed=True))

    def __call__(self, block: np.ndarray) -> bytes:
        block = block[None] if block.ndim == 1 else block
        if block.shape[0] != self.channels:
            raise CodecError(f"stream of {self.channels} channel(s) got a block of {block.shape[0]}")
        if block.shape[1]:
            validate(block, "stream block")
        x = self.resampler.resample_chunk(np.ascontiguousarray(block.T)).T if self.resampler else block
        self._push(x)
        return self._take()

    def finish(self) -> bytes:
        """Flush the resampler, pad so that every sample decodes completely, write the last chunk."""
        if self.resampler is not None:
            self._push(self.resampler.resample_chunk(np.zeros((0, self.channels), np.float32), last=True).T)
        m = self.codec.model
        total = -(-(self.samples + m.latency) // m.hop_length) * m.hop_length
        self._push(np.zeros((self.channels, total - self.samples), np.float32))
        if self.pending.shape[-1]:
            self._write(self.pending)
        self.writer.close()
        return self._take()

    def _push(self, x: np.ndarray) -> None:
        self.samples += x.shape[1]
        means = self.encoder(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
        self.pending = np.concatenate([self.pending, means], axis=-1)
        while self.pending.shape[-1] >= CHUNK_FRAMES:
            self._write(self.pending[..., :CHUNK_FRAMES])
            self.pending = self.pending[..., CHUNK_FRAMES:]

    def _write(self, means: np.ndarray) -> None:
        symbols = np.stack([self.codec.entropy.quantize(m, self.quality) for m in means])
        self.writer.write_chunk(self.codec.chunk_payload(symbols, self.quality), means.shape[-1])

    def _take(self) -> bytes:
        data = self.out.getvalue()
        self.out.seek(0)
        self.out.truncate()
        return data


def fit_for_model(model: VAE, clips: list[np.ndarray], sample_rate: int) -> EntropyModel:
    """Fit the context entropy model on posterior means of ``clips`` [(samples,) ...] and store it."""
    from audiovae.registry import save_entropy_model

    latents = [encode_means(model, to_model_rate(model, c[None], sample_rate))[0].numpy() for c in clips]
    entropy = fit_entropy_model(latents, kind="context")
    save_entropy_model(model, *entropy.to_state())
    return entropy
