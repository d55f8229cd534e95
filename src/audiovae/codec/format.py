"""The ``.avae`` container: magic, version, a header, CRC-checked chunks and a trailer (docs/format.md).

Pure standard library (no torch, no numpy), so that any tool can read and write files. Reading and
writing need no seeking (pipes work) and hold one chunk in memory at a time. Every defect raises
``FormatError`` with one line naming the file and where the damage is.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import operator
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import BinaryIO, NamedTuple

from audiovae.errors import AudioVAEError, shown
from audiovae.files import replaced

MAGIC = b"AVAE"
VERSION = 2  # 2: a binary header (about 230 bytes less per file than version 1's JSON)
SUPPORTED_VERSIONS = (1, 2)
HASH_PREFIX_DIGITS = 16  # version 2 names the model by the first 8 bytes of its sha256
MAX_HEADER_BYTES = 1 << 20  # 1 MiB
MAX_CHUNK_BYTES = 1 << 24  # 16 MiB
END_MARKER = 0xFFFFFFFF  # the index field of the trailer; never a chunk index
_END_BYTES = END_MARKER.to_bytes(4, "little")
_U32_MAX = 0xFFFFFFFF
_PREAMBLE = struct.Struct("<4sHII")  # magic, version, header length, CRC32 of the header
_CHUNK = struct.Struct("<IIII")  # index, frames, payload length, CRC32 of the first 12 bytes + payload
_TRAILER = struct.Struct("<IIQ")  # END_MARKER, chunk count, total frames
_F64 = struct.Struct("<d")
_SHA256 = f"[0-9a-f]{{64}}|[0-9a-f]{{{HASH_PREFIX_DIGITS}}}"
_SUPPORTED = "version " + ", ".join(map(str, SUPPORTED_VERSIONS))
_INT_KEYS = {  # header key -> inclusive range
    "sample_rate": (1, 2**31 - 1),
    "channels": (1, 255),
    "original_length": (0, 2**53 - 1),
    "original_sample_rate": (1, 2**31 - 1),
}


class FormatError(AudioVAEError):
    """Not a valid .avae file (damaged, truncated, unsupported), or a header / chunk that cannot be written."""


@dataclass(frozen=True)
class Header:
    """What a decoder needs before the first chunk; ``codec`` is free-form JSON filled by the codec."""

    model_id: str
    model_sha256: str  # 64 lowercase hex digits, or (version 2) the first 16 of them
    sample_rate: int  # of the model, i.e. of the latents
    channels: int
    original_length: int  # samples per channel of the input, at original_sample_rate
    original_sample_rate: int
    quality: float  # the codec's quality setting (it determines the quantization step)
    entropy_model: str
    codec: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("model_id", "entropy_model"):
            if not isinstance(value := getattr(self, key), str) or not value:
                raise _invalid(key, "a non-empty string", value)
        if not isinstance(self.model_sha256, str) or not re.fullmatch(_SHA256, self.model_sha256):
            raise _invalid("model_sha256", f"64 lowercase hex digits (or their first {HASH_PREFIX_DIGITS})",
                           self.model_sha256)
        for key, (lo, hi) in _INT_KEYS.items():
            if type(value := getattr(self, key)) is not int or not lo <= value <= hi:  # bool is not accepted
                raise _invalid(key, f"an integer in [{lo}, {hi}]", value)
        if type(self.quality) not in (int, float) or not math.isfinite(self.quality):
            raise _invalid("quality", "a finite number", self.quality)
        if not isinstance(self.codec, dict):
            raise _invalid("codec", "a JSON object", self.codec)

    def to_bytes(self, version: int = VERSION) -> bytes:
        """The header's bytes in a format ``version``; equal headers give equal bytes. Version 2 keeps the
        first 16 hex digits of ``model_sha256`` and stores ``quality`` as a float64."""
        if version == 1:
            data = self.to_json()
        elif version == 2:
            sha = bytes.fromhex(self.model_sha256[:HASH_PREFIX_DIGITS])
            data = b"".join([_short_text("model_id", self.model_id), sha,
                             _uvarint(self.sample_rate), bytes([self.channels]), _uvarint(self.original_length),
                             _uvarint(self.original_sample_rate), _F64.pack(self.quality),
                             _short_text("entropy_model", self.entropy_model), _canonical_json("codec", self.codec)])
        else:
            raise FormatError(f"cannot write format version {version} (this writer supports {_SUPPORTED})")
        if len(data) > MAX_HEADER_BYTES:
            raise FormatError(f"header of {len(data)} bytes exceeds the limit of {MAX_HEADER_BYTES} bytes")
        return data

    @classmethod
    def from_bytes(cls, data: bytes, version: int = VERSION) -> Header:
        """Parse and validate a header of format ``version``; FormatError names what is wrong."""
        if version == 1:
            return cls.from_json(data)
        cursor = _BinaryFields(data)
        model_id, sha = cursor.text("model_id"), cursor.take(HASH_PREFIX_DIGITS // 2, "model_sha256").hex()
        sample_rate, channels = cursor.uvarint("sample_rate"), cursor.take(1, "channels")[0]
        original_length, original_rate = cursor.uvarint("original_length"), cursor.uvarint("original_sample_rate")
        (quality,) = _F64.unpack(cursor.take(_F64.size, "quality"))
        entropy_model = cursor.text("entropy_model")
        codec = _parse_json(cursor.rest(), "codec")
        if not isinstance(codec, dict):
            raise FormatError(f"header key 'codec': expected a JSON object, got {type(codec).__name__}")
        return cls(model_id, sha, sample_rate, channels, original_length, original_rate, quality, entropy_model, codec)

    def to_json(self) -> bytes:
        """Version 1's header: canonical UTF-8 JSON (sorted keys, no spaces)."""
        return _canonical_json("codec", {f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, data: bytes | str) -> Header:
        """Parse and validate version 1's JSON header; FormatError names malformed JSON or the missing / unknown
        / invalid key."""
        obj = _parse_json(data, "JSON header")
        if not isinstance(obj, dict):
            raise FormatError(f"malformed JSON header (expected an object, got {type(obj).__name__})")
        names = [f.name for f in fields(cls)]
        for key in names:
            if key not in obj:
                raise FormatError(f"header: missing key '{key}'")
        for key in obj:
            if key not in names:
                raise FormatError(f"header: unknown key {key!r} (codec-specific values belong in 'codec')")
        return cls(**obj)


class _BinaryFields:
    """A cursor over a version 2 header's bytes."""

    def __init__(self, data: bytes):
        self.data, self.pos = bytes(data), 0

    def take(self, n: int, key: str) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError(f"malformed binary header (it ends in '{key}')")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def text(self, key: str) -> str:
        try:
            return self.take(self.take(1, key)[0], key).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"header key '{key}': not UTF-8") from None

    def uvarint(self, key: str) -> int:
        value = 0
        for shift in range(0, 63, 7):
            (byte,) = self.take(1, key)
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if byte == 0 and shift:
                    raise FormatError(f"malformed binary header ('{key}' is not a minimal varint)")
                return value
        raise FormatError(f"malformed binary header ('{key}' is a varint of more than 9 bytes)")

    def rest(self) -> bytes:
        return self.data[self.pos :]


class Chunk(NamedTuple):
    index: int
    frames: int
    payload: bytes


class Writer:
    """Write an .avae stream: the header at construction, then ``write_chunk`` per chunk, then ``close``.

    Needs only ``write`` on a buffered binary file (pipes work). As a context manager the trailer is
    written only if the block succeeds, so an interrupted stream stays detectably truncated.
    ``close`` writes the trailer and flushes; it does not close ``fileobj``.
    """

    def __init__(self, fileobj: BinaryIO, header: Header, name: str | None = None, version: int = VERSION):
        if isinstance(fileobj, io.TextIOBase):
            raise TypeError("Writer needs a binary file object (e.g. sys.stdout.buffer), not a text one")
        self._f = fileobj
        self.name = name if name is not None else _name_of(fileobj)
        self._count = self._frames = 0
        self._closed = False
        try:
            data = header.to_bytes(version)
        except FormatError as e:
            raise _error(self.name, str(e)) from None
        self._write(_PREAMBLE.pack(MAGIC, version, len(data), zlib.crc32(data)) + data)

    def write_chunk(self, payload: bytes, frames: int) -> int:
        """Append one chunk covering ``frames`` frames (any integer type); returns its index."""
        if self._closed:
            raise ValueError("write_chunk on a closed Writer")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        payload, frames, i = bytes(payload), operator.index(frames), self._count
        if not 0 <= frames <= _U32_MAX:
            raise _error(self.name, f"chunk {i}: frames must be in [0, {_U32_MAX}], got {frames}")
        if len(payload) > MAX_CHUNK_BYTES:
            raise _error(self.name, f"chunk {i}: payload of {len(payload)} bytes exceeds the limit of "
                                    f"{MAX_CHUNK_BYTES} bytes (use shorter chunks)")
        if i == END_MARKER:
            raise _error(self.name, f"too many chunks (at most {END_MARKER})")
        head = _CHUNK.pack(i, frames, len(payload), 0)
        self._write(_CHUNK.pack(i, frames, len(payload), _chunk_crc(head, payload)))
        self._write(payload)
        self._count, self._frames = i + 1, self._frames + frames
        return i

    def close(self) -> None:
        """Write the trailer and flush; a second call does nothing."""
        if not self._closed:
            self._closed = True
            self._write(_TRAILER.pack(END_MARKER, self._count, self._frames))
            with _os_errors(self.name, "write"):
                self._f.flush()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        self._closed = True

    def _write(self, data: bytes) -> None:
        with _os_errors(self.name, "write"):
            self._f.write(data)


class Reader:
    """Read an .avae stream: ``.header`` after construction, then iterate ``Chunk(index, frames, payload)``.

    Lazy and single-pass: needs only ``read`` (pipes work) and holds one chunk at a time. Each chunk's
    CRC and index are checked as it is read; the iteration ends once the trailer matches the chunks
    read and the stream has ended. Any defect raises FormatError.
    """

    def __init__(self, fileobj: BinaryIO, name: str | None = None):
        if isinstance(fileobj, io.TextIOBase):
            raise TypeError("Reader needs a binary file object (e.g. sys.stdin.buffer), not a text one")
        self._f = fileobj
        self.name = name if name is not None else _name_of(fileobj)
        self._pos = self._count = self._frames = 0
        self._done = False
        pre = self._read(_PREAMBLE.size)
        if not pre:
            raise self._error("not an .avae file (it is empty)")
        if pre[:4] != MAGIC[: len(pre)]:
            raise self._error(f"not an .avae file (starts with {pre[:4]!r}, expected {MAGIC!r})")
        if len(pre) < _PREAMBLE.size:
            raise self._error(f"truncated file: ends in the preamble (at byte {self._pos})")
        _, version, length, crc = _PREAMBLE.unpack(pre)
        if version not in SUPPORTED_VERSIONS:
            raise self._error(f"unsupported format version {version} (this reader supports {_SUPPORTED})")
        if length > MAX_HEADER_BYTES:
            raise self._error(f"header length {length} exceeds the limit of {MAX_HEADER_BYTES} bytes (file damaged)")
        data = self._read_exact(length, "the header")
        if zlib.crc32(data) != crc:
            raise self._error("CRC mismatch in the header (file damaged)")
        try:
            self.header = Header.from_bytes(data, version)
        except FormatError as e:
            raise self._error(str(e)) from None
        self.version = version

    def __iter__(self) -> Iterator[Chunk]:
        return self

    @property
    def chunks(self) -> int:
        """How many chunks have been read."""
        return self._count

    def __next__(self) -> Chunk:
        if self._done:
            raise StopIteration
        i = self._count
        head = self._read(_CHUNK.size)
        if len(head) < _CHUNK.size:
            if not head:
                where = f"missing trailer after {i} chunks"
            elif head[:4] == _END_BYTES[: len(head)]:
                where = "ends in the trailer"
            else:
                where = f"ends in the header of chunk {i}"
            raise self._error(f"truncated file: {where} (at byte {self._pos})")
        index, frames, length, crc = _CHUNK.unpack(head)
        if index == END_MARKER:
            self._finish(head)
            raise StopIteration
        if length > MAX_CHUNK_BYTES:
            raise self._error(f"chunk {i}: payload length {length} exceeds the limit of {MAX_CHUNK_BYTES} bytes "
                              "(file damaged)")
        payload = self._read_exact(length, f"the payload of chunk {i}")
        if _chunk_crc(head, payload) != crc:
            raise self._error(f"CRC mismatch in chunk {i} (file damaged)")
        if index != i:
            raise self._error(f"chunk index {index} where {i} was expected (chunks missing, repeated or reordered)")
        self._count, self._frames = i + 1, self._frames + frames
        return Chunk(index, frames, payload)

    def _finish(self, trailer: bytes) -> None:
        _, count, total = _TRAILER.unpack(trailer)
        if (count, total) != (self._count, self._frames):
            raise self._error(f"trailer says {count} chunks and {total} frames, but the file has {self._count} "
                              f"chunks and {self._frames} frames (file damaged)")
        if self._read(1):
            raise self._error(f"unexpected data after the trailer (at byte {self._pos - 1})")
        self._done = True

    def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes: fewer only at the end of the stream."""
        parts, got = [], 0
        with _os_errors(self.name, "read"):
            while got < n and (part := self._f.read(n - got)):
                parts.append(part)
                got += len(part)
        self._pos += got
        return b"".join(parts)

    def _read_exact(self, n: int, where: str) -> bytes:
        data = self._read(n)
        if len(data) < n:
            raise self._error(f"truncated file: ends in {where} (at byte {self._pos}, {len(data)} of {n} bytes)")
        return data

    def _error(self, msg: str) -> FormatError:
        return _error(self.name, msg)


def write_file(path: str | os.PathLike, header: Header, chunks: Iterable[tuple[bytes, int]],
               overwrite: bool = False) -> Path:
    """Write a whole file from ``(payload, frames)`` pairs atomically: a temp file in the same folder, then a rename.

    On any error, including one raised by ``chunks``, no file is left behind and an existing ``path`` is
    untouched. An existing ``path`` is refused unless ``overwrite`` (also one created while writing).
    """
    p = Path(path)
    if not overwrite and p.exists():
        raise FormatError(f"{p}: already exists (not overwriting it)")
    if not p.parent.is_dir():
        raise FormatError(f"{p}: folder {p.parent} does not exist")
    with _os_errors(str(p), "write"), replaced(p, overwrite) as tmp, open(tmp, "wb") as f:
        writer = Writer(f, header, name=str(p))
        for payload, frames in chunks:
            writer.write_chunk(payload, frames)
        writer.close()
    return p


def read_file(path: str | os.PathLike) -> tuple[Header, list[Chunk]]:
    """Read and verify a whole file."""
    p = Path(path)
    with _os_errors(str(p), "read"):
        f = open(p, "rb")
    with f:
        reader = Reader(f, name=str(p))
        return reader.header, list(reader)


def payload_fields(payload: bytes, count: int) -> list[bytes]:
    """``count`` consecutive fields of a payload, each a u32 byte length then that many bytes."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(payload):
            raise FormatError("payload is shorter than its channel lengths say")
        (n,) = struct.unpack_from("<I", payload, pos)
        out.append(payload[pos + 4 : pos + 4 + n])
        if len(out[-1]) != n:
            raise FormatError("payload is shorter than its channel lengths say")
        pos += 4 + n
    if pos != len(payload):
        raise FormatError(f"payload has {len(payload) - pos} bytes after its channels' data")
    return out


def last_field(payload: bytes, count: int) -> tuple[bytes, bytes]:
    """A payload of ``count`` fields and one more -> the first ``count`` fields' bytes, the last field."""
    last = payload_fields(payload, count + 1)[-1]
    return payload[: len(payload) - 4 - len(last)], last


def layer_bytes(file: bytes | Reader) -> dict[str, int]:
    """A file's bytes, or a Reader whose chunks it reads -> the bytes of each layer in the chunks, each field's u32
    length included: the chunk ``heads`` (layout 2), ``latents``, ``refinement`` gains and the bandwidth ``extension``
    (0 where the file has not the layer); the rest of the file is its container."""
    reader = Reader(io.BytesIO(file)) if isinstance(file, bytes) else file
    h = reader.header
    names = ["heads"] * ("layout" in h.codec) + ["latents", "refinement"][: 1 + ("refine" in h.codec)] * h.channels
    names += ["extension"] * ("extend" in h.codec)
    out = dict.fromkeys(("heads", "latents", "refinement", "extension"), 0)
    for chunk in reader:
        try:
            fields = payload_fields(chunk.payload, len(names))
        except FormatError as e:
            raise reader._error(f"chunk {chunk.index}: {e}") from None
        for name, data in zip(names, fields, strict=True):
            out[name] += 4 + len(data)
    return out


def _chunk_crc(head: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(head[:12]))


def _invalid(key: str, expected: str, value: object) -> FormatError:
    return FormatError(f"header key '{key}': expected {expected}, got {shown(value)}")


def _uvarint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant first, the high bit set on all but the last."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _short_text(key: str, value: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > 255:
        raise _invalid(key, "at most 255 bytes of UTF-8 in format version 2", value)
    return bytes([len(data)]) + data


def _canonical_json(key: str, obj: object) -> bytes:
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise FormatError(f"header key '{key}': not JSON-serializable ({e})") from None
    return text.encode("utf-8")


def _parse_json(data: bytes | str, what: str) -> object:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise FormatError(f"malformed {what} ({e})") from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _name_of(fileobj: object) -> str | None:
    name = getattr(fileobj, "name", None)
    return os.fspath(name) if isinstance(name, (str, os.PathLike)) else None


def _error(name: str | None, msg: str) -> FormatError:
    return FormatError(f"{name}: {msg}" if name else msg)


@contextlib.contextmanager
def _os_errors(name: str | None, verb: str) -> Iterator[None]:
    try:
        yield
    except FileExistsError:
        raise _error(name, "already exists (not overwriting it)") from None
    except OSError as e:
        raise _error(name, f"cannot {verb} ({e.strerror or e})") from None
