"""The .avae container: round trips, truncation, corruption, pipes, atomic writes, fuzzing, no torch import."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import zlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiovae.codec import format as fmt
from audiovae.codec.format import Chunk, FormatError, Header, Reader, Writer, read_file, write_file

FAST = settings(derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = Header(model_id="speech16k", model_sha256="0123456789abcdef", sample_rate=16000, channels=1,
                original_length=48000, original_sample_rate=44100, quality=2.5, entropy_model="factorized-v1",
                codec={"hop": 320, "step": 0.5, "dims": [32, 4]})
CHUNKS = [(b"first", 50), (b"", 0), (bytes(range(256)), 25)]


def encode(header: Header = HEADER, chunks=CHUNKS, version: int = fmt.VERSION) -> bytes:
    buf = io.BytesIO()
    with Writer(buf, header, version=version) as w:
        for payload, frames in chunks:
            w.write_chunk(payload, frames)
    return buf.getvalue()


def decode(data: bytes, name: str | None = "x.avae") -> tuple[Header, list[Chunk]]:
    reader = Reader(io.BytesIO(data), name=name)
    return reader.header, list(reader)


def error(data: bytes) -> str:
    with pytest.raises(FormatError) as e:
        decode(data)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("x.avae: ")
    return msg


def chunk_offset(data: bytes, n: int) -> int:
    """Byte offset of chunk ``n``'s 16-byte record header."""
    pos = 14 + struct.unpack_from("<I", data, 6)[0]
    for _ in range(n):
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    return pos


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
headers = st.builds(
    Header, model_id=st.text(min_size=1, max_size=30), model_sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    sample_rate=st.integers(1, 2**31 - 1), channels=st.integers(1, 255), original_length=st.integers(0, 2**53 - 1),
    original_sample_rate=st.integers(1, 2**31 - 1),
    quality=st.floats(allow_nan=False, allow_infinity=False) | st.integers(-1000, 1000),
    entropy_model=st.text(min_size=1, max_size=30), codec=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
chunk_lists = st.lists(st.tuples(st.binary(max_size=300), st.integers(0, 2**32 - 1)), max_size=8)


@settings(FAST, max_examples=60)
@given(headers, chunk_lists, st.sampled_from(fmt.SUPPORTED_VERSIONS))
def test_round_trip(header, chunks, version):
    data = encode(header, chunks, version)
    got_header, got_chunks = decode(data)
    # version 2 keeps the first 16 hex digits of the model's sha256 (and stores quality as a float64)
    assert got_header == (header if version == 1 else replace(header, model_sha256=header.model_sha256[:16]))
    assert got_header.to_bytes(version) == header.to_bytes(version)
    assert got_chunks == [Chunk(i, frames, payload) for i, (payload, frames) in enumerate(chunks)]
    assert encode(got_header, chunks, version) == data  # canonical: the same input gives the same bytes


def test_layout_matches_docs():
    data = encode()
    magic, version, hlen, hcrc = struct.unpack_from("<4sHII", data)
    assert (magic, version) == (b"AVAE", 2)
    header = data[14:14 + hlen]
    assert hcrc == zlib.crc32(header)
    # the binary header, field by field: model_id, 8 bytes of sha256, varints, channels, quality, entropy_model, codec
    assert header[0] == 9 and header[1:10] == b"speech16k" and header[10:18].hex() == HEADER.model_sha256
    assert header[18:20] == bytes([0x80, 0x7D]) and header[20] == 1  # 16000 as a LEB128 varint, one channel
    assert header[21:24] == bytes([0x80, 0xF7, 0x02]) and header[24:27] == bytes([0xC4, 0xD8, 0x02])  # 48000, 44100
    assert struct.unpack_from("<d", header, 27) == (2.5,) and header[35] == 13 and header[36:49] == b"factorized-v1"
    assert json.loads(header[49:]) == HEADER.codec
    pos = 14 + hlen
    for i, (payload, frames) in enumerate(CHUNKS):
        index, nframes, length, crc = struct.unpack_from("<IIII", data, pos)
        assert (index, nframes, length) == (i, frames, len(payload))
        assert crc == zlib.crc32(data[pos + 16:pos + 16 + length], zlib.crc32(data[pos:pos + 12]))
        pos += 16 + length
    assert struct.unpack_from("<IIQ", data, pos) == (0xFFFFFFFF, 3, 75) and pos + 16 == len(data)


def test_examples_in_docs():
    """The worked examples of docs/format.md: the format must not change without a new version."""
    header = Header(model_id="demo", model_sha256="0" * 64, sample_rate=16000, channels=1, original_length=640,
                    original_sample_rate=16000, quality=1, entropy_model="fp1")
    chunk = bytes.fromhex("00000000 02000000 03000000 b4f9aa14 010203 ffffffff 01000000 0200000000000000")
    body = header.to_bytes(2)
    assert body.hex() == "0464656d6f" + "00" * 8 + "807d01" + "8005" + "807d" + "000000000000f03f" + "03667031" + "7b7d"
    expected = bytes.fromhex("41564145 0200 22000000 6fbd65bd") + body + chunk
    assert encode(header, [(b"\x01\x02\x03", 2)]) == expected and len(expected) == 83
    body = header.to_json()  # version 1
    assert len(body) == 230 and body.startswith(b'{"channels":1,"codec":{},"entropy_model":"fp1"')
    expected = bytes.fromhex("41564145 0100 e6000000 ea95a444") + body + chunk
    assert encode(header, [(b"\x01\x02\x03", 2)], version=1) == expected and len(expected) == 279


def test_every_truncation_fails_cleanly():
    data = encode()
    assert "empty" in error(b"")
    for n in range(1, len(data)):
        assert "truncated file" in error(data[:n]), n
    assert "missing trailer after 3 chunks" in error(data[:-16])
    assert "ends in the payload of chunk 2" in error(data[:-20])


def test_flipped_bit_in_a_chunk_names_the_chunk():
    data = encode()
    for n in range(3):
        start = chunk_offset(data, n)
        # the frames field (start + 4) and every payload byte are covered by the chunk's CRC
        for pos in [start + 4, *range(start + 16, chunk_offset(data, n + 1))]:
            bad = bytearray(data)
            bad[pos] ^= 0x10
            assert f"CRC mismatch in chunk {n} " in error(bytes(bad))


def test_flipped_bit_in_the_header_is_detected():
    data = encode()
    for pos in range(14, chunk_offset(data, 0)):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        assert "CRC mismatch in the header" in error(bytes(bad))
    bad = bytearray(data)
    bad[10] ^= 0x80  # the stored CRC itself
    assert "CRC mismatch in the header" in error(bytes(bad))


def test_bad_magic_version_and_garbage():
    data = encode()
    assert "not an .avae file" in error(b"RIFF" + data[4:])
    assert "not an .avae file" in error(b"hello, this is plain text\n")
    assert "unsupported format version 7 (this reader supports version 1, 2)" in error(
        data[:4] + b"\x07\x00" + data[6:])
    assert "header length 4294967295 exceeds the limit" in error(data[:6] + b"\xff" * 4 + data[10:])
    assert "unexpected data after the trailer" in error(data + b"\x00")


def test_absurd_chunk_length_is_refused_before_reading():
    data = bytearray(encode())
    pos = chunk_offset(bytes(data), 1)
    data[pos + 8:pos + 12] = struct.pack("<I", 0xFFFFFFF0)
    assert "chunk 1: payload length 4294967280 exceeds the limit" in error(bytes(data))


def test_chunk_order_and_trailer_are_checked():
    def rewrite(index_of):
        """Re-encode with valid CRCs but the given chunk index fields."""
        buf = io.BytesIO()
        buf.write(encode(chunks=[])[:-16])
        for i, (payload, frames) in enumerate(CHUNKS):
            head = struct.pack("<III", index_of(i), frames, len(payload))
            buf.write(head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload)
        buf.write(struct.pack("<IIQ", 0xFFFFFFFF, 3, 75))
        return buf.getvalue()

    assert decode(rewrite(lambda i: i))[1] == decode(encode())[1]
    assert "chunk index 2 where 1 was expected" in error(rewrite(lambda i: 2 if i == 1 else i))
    data = encode()
    assert "trailer says 3 chunks and 76 frames, but the file has 3 chunks and 75 frames" in error(
        data[:-8] + struct.pack("<Q", 76))
    assert "trailer says 2 chunks" in error(data[:-12] + struct.pack("<I", 2) + data[-8:])


@pytest.mark.parametrize(("changes", "message"), [
    ({"sample_rate": 0}, "header key 'sample_rate': expected an integer in [1, 2147483647], got 0"),
    ({"channels": True}, "header key 'channels': expected an integer"),
    ({"model_sha256": "ABC"}, "header key 'model_sha256': expected 64 lowercase hex digits"),
    ({"model_id": ""}, "header key 'model_id': expected a non-empty string"),
    ({"quality": "high"}, "header key 'quality': expected a finite number"),
    ({"codec": []}, "header key 'codec': expected a JSON object"),
    ({"extra": 1}, "header: unknown key 'extra'"),
    ({"entropy_model": None}, "header key 'entropy_model'"),
])
def test_invalid_header_keys_are_named(changes, message):
    obj = {**json.loads(HEADER.to_json()), **changes}
    with pytest.raises(FormatError, match=r"^" + re.escape(message)):
        Header.from_json(json.dumps(obj))


def test_header_json_errors():
    obj = json.loads(HEADER.to_json())
    del obj["original_length"]
    for text, message in [(json.dumps(obj), "header: missing key 'original_length'"),
                          ("[1, 2]", "malformed JSON header (expected an object, got list)"),
                          ("{", "malformed JSON header"), (b"\xff{}", "malformed JSON header"),
                          ('{"a": 1, "a": 2}', "malformed JSON header (duplicate key 'a')"),
                          ('{"a": NaN}', "malformed JSON header (NaN is not valid JSON)")]:
        with pytest.raises(FormatError, match=re.escape(message)):
            Header.from_json(text)
    with pytest.raises(FormatError, match="header key 'codec': not JSON-serializable"):
        Header(**{**obj, "original_length": 1, "codec": {"x": float("nan")}}).to_json()


def test_header_error_in_a_file_names_the_file():
    body = json.dumps({**json.loads(HEADER.to_json()), "channels": 0}).encode()
    data = struct.pack("<4sHII", b"AVAE", 1, len(body), zlib.crc32(body)) + body
    assert error(data) == "x.avae: header key 'channels': expected an integer in [1, 255], got 0"
    body = bytearray(HEADER.to_bytes(2))
    body[20] = 0  # channels
    data = struct.pack("<4sHII", b"AVAE", 2, len(body), zlib.crc32(body)) + body
    assert error(data) == "x.avae: header key 'channels': expected an integer in [1, 255], got 0"


def test_binary_header_errors_name_the_field():
    body = HEADER.to_bytes(2)
    for n, key in [(0, "model_id"), (5, "model_id"), (12, "model_sha256"), (19, "sample_rate"), (20, "channels"),
                   (22, "original_length"), (30, "quality"), (40, "entropy_model")]:
        with pytest.raises(FormatError, match=re.escape(f"malformed binary header (it ends in '{key}')")):
            Header.from_bytes(body[:n], 2)
    for bad, message in [(body[:18] + b"\x80\x00" + body[19:], "'sample_rate' is not a minimal varint"),
                         (body[:18] + b"\xff" * 10, "'sample_rate' is a varint of more than 9 bytes"),
                         (body[:1] + b"\xff" + body[2:], "header key 'model_id': not UTF-8"),
                         (body[:49] + b"[]", "header key 'codec': expected a JSON object, got list"),
                         (body[:49] + b"{", "malformed codec"),
                         (body[:27] + struct.pack("<d", float("inf")) + body[35:], "header key 'quality'")]:
        with pytest.raises(FormatError, match=re.escape(message)):
            Header.from_bytes(bad, 2)
    with pytest.raises(FormatError, match="header key 'model_id': expected at most 255 bytes of UTF-8"):
        replace(HEADER, model_id="é" * 128).to_bytes(2)
    with pytest.raises(FormatError, match=r"cannot write format version 3 \(this writer supports version 1, 2\)"):
        HEADER.to_bytes(3)


@settings(FAST, max_examples=200)
@given(st.binary(max_size=80))
def test_fuzz_binary_header(data):
    try:
        header = Header.from_bytes(data, 2)
    except FormatError as e:
        assert "\n" not in str(e)
    else:  # only the codec's JSON may be spelled differently
        assert Header.from_bytes(header.to_bytes(2), 2) == header


def test_writer_refuses_bad_chunks():
    w = Writer(io.BytesIO(), HEADER, name="out.avae")
    with pytest.raises(FormatError, match=r"^out\.avae: chunk 0: payload of 16777217 bytes exceeds the limit"):
        w.write_chunk(bytes(fmt.MAX_CHUNK_BYTES + 1), 1)
    with pytest.raises(FormatError, match=r"^out\.avae: chunk 0: frames must be in"):
        w.write_chunk(b"x", -1)
    with pytest.raises(TypeError):
        w.write_chunk("text", 1)
    assert w.write_chunk(memoryview(b"ok"), 1) == 0
    w.close()
    with pytest.raises(ValueError):
        w.write_chunk(b"late", 1)
    with pytest.raises(TypeError, match="binary file object"):
        Reader(io.StringIO("AVAE"))


def test_interrupted_writer_leaves_a_detectably_truncated_stream():
    buf = io.BytesIO()
    with pytest.raises(RuntimeError), Writer(buf, HEADER) as w:
        w.write_chunk(b"abc", 3)
        raise RuntimeError("encoder failed")
    assert "missing trailer after 1 chunks" in error(buf.getvalue())


class OneWay(io.RawIOBase):
    """A non-seekable stream returning at most 5 bytes per read, that counts what was read."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), 5, len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def test_reading_is_lazy_and_needs_no_seek():
    data = encode()
    stream = OneWay(data)
    reader = Reader(stream)
    assert reader.header == HEADER and stream.pos == chunk_offset(data, 0)
    assert next(reader) == Chunk(0, 50, b"first") and stream.pos == chunk_offset(data, 1)
    assert [c.index for c in reader] == [1, 2] and stream.pos == len(data)
    assert list(reader) == []


def test_streaming_through_a_pipe():
    chunks = [(os.urandom(40_000), 100) for _ in range(8)]  # more than a pipe buffer holds
    r, w = os.pipe()
    with os.fdopen(r, "rb") as src, os.fdopen(w, "wb") as sink:
        def produce():
            with sink, Writer(sink, HEADER) as writer:
                for payload, frames in chunks:
                    writer.write_chunk(payload, frames)

        thread = threading.Thread(target=produce)
        thread.start()
        reader = Reader(src)
        got = [(c.payload, c.frames) for c in reader]
        thread.join()
    assert reader.header == HEADER and got == chunks


def test_write_and_read_file(tmp_path):
    path = write_file(tmp_path / "a.avae", HEADER, CHUNKS)
    assert path.read_bytes() == encode()
    assert read_file(path) == (HEADER, [Chunk(i, f, p) for i, (p, f) in enumerate(CHUNKS)])
    with pytest.raises(FormatError, match=r"b\.avae: cannot read \("):
        read_file(tmp_path / "b.avae")
    with pytest.raises(FormatError, match="does not exist"):
        write_file(tmp_path / "missing" / "a.avae", HEADER, CHUNKS)


def test_write_file_is_atomic(tmp_path):
    path = tmp_path / "a.avae"

    def failing():
        yield b"abc", 3
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError, match="encoder failed"):
        write_file(path, HEADER, failing())
    assert list(tmp_path.iterdir()) == []

    path.write_bytes(b"precious")
    with pytest.raises(FormatError, match=r"a\.avae: already exists"):
        write_file(path, HEADER, CHUNKS)
    with pytest.raises(RuntimeError):
        write_file(path, HEADER, failing(), overwrite=True)
    with pytest.raises(FormatError, match="payload of"):
        write_file(path, HEADER, [(bytes(fmt.MAX_CHUNK_BYTES + 1), 1)], overwrite=True)
    assert path.read_bytes() == b"precious" and list(tmp_path.iterdir()) == [path]

    write_file(path, HEADER, CHUNKS, overwrite=True)
    assert read_file(path)[0] == HEADER and list(tmp_path.iterdir()) == [path]


def _reader_raises_only_format_errors(data: bytes) -> None:
    try:
        list(Reader(io.BytesIO(data), name="fuzz.avae"))
    except FormatError as e:
        assert "\n" not in str(e)


VALID = encode()
V1 = encode(version=1)
PREFIXES = [b"", b"AVAE\x01\x00", b"AVAE\x02\x00", VALID[:chunk_offset(VALID, 0)], V1[:chunk_offset(V1, 0)]]


@settings(FAST, max_examples=100)
@given(st.sampled_from(PREFIXES), st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(prefix, data):
    _reader_raises_only_format_errors(prefix + data)


@settings(FAST, max_examples=100)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1) | st.integers(chunk_offset(VALID, 0), len(VALID) - 1),
                          st.integers(0, 255), st.sampled_from("xdi")), max_size=4),
       st.none() | st.integers(0, len(VALID)))
def test_fuzz_mutated_file(edits, cut):
    """Replace (x), delete (d) or insert (i) bytes, half of them in the chunks; sometimes truncate first."""
    data = bytearray(VALID[:cut])
    for pos, value, op in edits:
        pos = min(pos, len(data))
        if op == "x":
            data[pos:pos + 1] = bytes([value])
        elif op == "d":
            del data[pos:pos + 1]
        else:
            data.insert(pos, value)
    _reader_raises_only_format_errors(bytes(data))


def test_import_needs_no_torch_or_numpy():
    code = "import audiovae.codec.format, sys; assert not {'torch', 'numpy'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True)
