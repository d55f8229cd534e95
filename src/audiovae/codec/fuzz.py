"""A structure-aware fuzzer of the .avae decoder: valid files mutated field by field, their CRCs recomputed.

Each input is a valid file (``seeds``) with one to three mutations (``mutate``): header fields set to 0, the
maximum, huge, negative or another JSON type, codec keys dropped or retyped, chunk frames and indices changed,
chunks dropped, duplicated or reordered, payload bits flipped, bytes cut or appended, chunk heads (stereo mode,
side prediction, silent runs) rewritten. CRCs, indices and the
trailer are recomputed unless a mutation targets them, so that inputs reach the codec and not only the CRC
checks. Inputs are decoded by worker processes under a memory limit (``RLIMIT_AS``) and a time limit; any
outcome other than a decode or an ``AudioVAEError`` with a one-line message (another exception, a signal, a
timeout) is a failure. Input ``i`` of seed ``s`` is the same on every run, whatever the number of workers.

``python -m audiovae.codec.fuzz -n 100000 --seed 0`` (``make fuzz``) runs a campaign and prints its report.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import random
import resource
import struct
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

from audiovae.codec import format as fmt
from audiovae.errors import AudioVAEError

_NUMBERS = (0, 1, -1, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53, 2**63, 10**30)
_OTHER_TYPES = ("16000", 1.5, None, True, [], {}, "")
_TEXTS = ("", "../speech16k", "/etc", "speech16k/../music24k", "\n", "x" * 255, "music24k", "speech16k", "é")


@dataclass
class Parsed:
    """A file as fields: the header (``codec`` may be raw bytes), ``[index, frames, payload]`` per chunk."""

    version: int
    header: dict
    chunks: list
    renumber: bool = True  # indices 0, 1, ... and a matching trailer when serialized
    trailer: tuple | None = None  # (count, total) when not the matching one
    tail: bytes = b""  # bytes after the trailer

    @classmethod
    def of(cls, data: bytes) -> Parsed:
        reader = fmt.Reader(io.BytesIO(data))
        return cls(reader.version, asdict(reader.header), [list(c) for c in reader])

    def to_bytes(self) -> bytes:
        header = _binary_header(self.header) if self.version == 2 else None
        version = 2 if header is not None else 1
        if header is None:
            header = json.dumps(self.header, default=lambda b: b.decode("latin-1")).encode()
        out = [fmt._PREAMBLE.pack(fmt.MAGIC, version, len(header), zlib.crc32(header)), header]
        for k, (index, frames, payload) in enumerate(self.chunks):
            head = struct.pack("<III", k if self.renumber else index, frames, len(payload))
            out += [head, struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))), payload]
        count, total = self.trailer or (len(self.chunks), sum(c[1] for c in self.chunks))
        out.append(struct.pack("<IIQ", fmt.END_MARKER, count, total))
        return b"".join(out) + self.tail


def _binary_header(h: dict) -> bytes | None:
    """A version 2 header of any field values it can hold, else None (then the file is written as version 1)."""
    def text(v):
        v = v.encode() if isinstance(v, str) else v
        return bytes([len(v)]) + v if isinstance(v, bytes) and len(v) < 256 else None

    ints = [h[k] for k in ("sample_rate", "original_length", "original_sample_rate")]
    if not all(type(v) is int and 0 <= v < 2**63 for v in ints) or type(h["channels"]) is not int \
            or not 0 <= h["channels"] <= 255 or type(h["quality"]) not in (int, float):
        return None
    try:
        sha = bytes.fromhex(h["model_sha256"][:16])
    except (TypeError, ValueError):
        return None
    parts = [text(h["model_id"]), sha, text(h["entropy_model"])]
    if None in parts or len(sha) != 8:
        return None
    codec = h["codec"] if isinstance(h["codec"], bytes) else json.dumps(h["codec"]).encode()
    return b"".join([parts[0], parts[1], fmt._uvarint(ints[0]), bytes([h["channels"]]), fmt._uvarint(ints[1]),
                     fmt._uvarint(ints[2]), struct.pack("<d", h["quality"]), parts[2], codec])


def _number(rng: random.Random, value) -> object:
    base = value if type(value) is int else 1
    return rng.choice([*_NUMBERS, base + 1, base - 1, base * 2, base // 2, base * 1000,
                       rng.randrange(2 ** rng.randrange(1, 64))])


def _header_int(p: Parsed, rng: random.Random) -> None:
    key = rng.choice(["sample_rate", "channels", "original_length", "original_sample_rate"])
    p.header[key] = _number(rng, p.header[key])


def _header_type(p: Parsed, rng: random.Random) -> None:
    p.header[rng.choice(list(p.header))] = rng.choice(_OTHER_TYPES)


def _quality(p: Parsed, rng: random.Random) -> None:
    q = p.header["quality"] if type(p.header["quality"]) in (int, float) else 7
    p.header["quality"] = rng.choice([0, -1, 0.5, 1e308, math.nan, math.inf, -math.inf, 16, 17, 2**53, q - 1, q + 1])


def _text(p: Parsed, rng: random.Random) -> None:
    p.header[rng.choice(["model_id", "entropy_model"])] = rng.choice([*_TEXTS, b"\xff\xfe"])


def _sha(p: Parsed, rng: random.Random) -> None:
    p.header["model_sha256"] = rng.choice(["0" * 16, rng.randbytes(8).hex(), rng.randbytes(32).hex()])


def _codec_key(p: Parsed, rng: random.Random) -> None:
    if not isinstance(p.header["codec"], dict):
        p.header["codec"] = {}
    codec = p.header["codec"]
    key = rng.choice(["samples", "refine", "extend", "layout", "streamed", "entropy_sha256", "frames",
                      "chunk_frames", "unknown"])
    if key in codec and rng.random() < 0.3:
        del codec[key]
    else:
        codec[key] = rng.choice([_number(rng, codec.get(key)), True, False, "1", 1.5, None, [], "0" * 16])


def _codec_raw(p: Parsed, rng: random.Random) -> None:
    p.header["codec"] = rng.choice([b"\xff", b"[]", b"{", b'{"samples":1,"samples":2}', b"NaN", b"{}", b"1"])


def _chunk_frames(p: Parsed, rng: random.Random) -> None:
    if p.chunks:
        chunk = rng.choice(p.chunks)
        chunk[1] = rng.choice([0, 1, 250, 251, 100_000, 2**32 - 1, chunk[1] + 1, chunk[1] - 1]) % 2**32


def _chunk_list(p: Parsed, rng: random.Random) -> None:
    c, k = p.chunks, rng.randrange(max(1, len(p.chunks)))
    op = rng.choice(["drop", "duplicate", "swap", "reverse", "clear"])
    if op == "drop" and c:
        del c[k]
    elif op == "duplicate" and c:
        c.insert(k, list(c[k]))
    elif op == "swap" and len(c) > 1:
        c[0], c[-1] = c[-1], c[0]
    elif op == "reverse":
        c.reverse()
    elif op == "clear":
        c.clear()


def _payload(p: Parsed, rng: random.Random) -> None:
    if not p.chunks:
        return
    chunk = rng.choice(p.chunks)
    data = bytearray(chunk[2])
    op = rng.choice(["flip", "flip", "flip", "cut", "append", "random", "empty", "length"])
    if op == "flip" and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == "cut":
        del data[rng.randrange(len(data) + 1):]
    elif op == "append":
        data += rng.randbytes(rng.randint(1, 8))
    elif op == "random":
        data = bytearray(rng.randbytes(len(data)))
    elif op == "empty":
        data = bytearray()
    elif op == "length" and len(data) >= 4:
        data[:4] = struct.pack("<I", rng.choice([0, 1, 2**32 - 1, len(data), rng.randrange(2**32)]))
    chunk[2] = bytes(data)


def _head(p: Parsed, rng: random.Random) -> None:
    """A chunk head (the payload's first field in layout 2): its mode, side prediction or a silent run's bytes set
    to edge values, runs added or dropped, the field cut, lengthened or emptied; its length prefix kept right."""
    if not p.chunks or len(p.chunks[0][2]) < 4:
        return
    chunk = rng.choice(p.chunks)
    n = int.from_bytes(chunk[2][:4], "little")
    head, rest = bytearray(chunk[2][4 : 4 + n]), chunk[2][4 + n :]
    op = rng.choice(["byte", "byte", "runs", "cut", "append", "empty"])
    if op == "byte" and head:
        head[rng.randrange(len(head))] = rng.choice([0, 1, 2, 127, 128, 249, 250, 251, 255, rng.randrange(256)])
    elif op == "runs" and head:
        k = rng.randrange(len(head))
        head[k:k] = bytes([rng.randrange(256) for _ in range(rng.choice([1, 2, 4]))])
    elif op == "cut":
        del head[rng.randrange(len(head) + 1):]
    elif op == "append":
        head += rng.randbytes(rng.randint(1, 6))
    elif op == "empty":
        head = bytearray()
    chunk[2] = struct.pack("<I", len(head)) + bytes(head) + rest


def _container(p: Parsed, rng: random.Random) -> None:
    op = rng.choice(["index", "trailer", "tail", "version"])
    if op == "index" and p.chunks:
        p.renumber = False
        for k, c in enumerate(p.chunks):
            c[0] = k
        rng.choice(p.chunks)[0] = rng.choice([1, 2**32 - 2, fmt.END_MARKER, rng.randrange(2**32)])
    elif op == "trailer":
        p.trailer = (_number(rng, len(p.chunks)) % 2**32, _number(rng, 0) % 2**64)
    elif op == "tail":
        p.tail = rng.randbytes(rng.randint(1, 16))
    else:
        p.version = 3 - p.version


MUTATIONS = (_header_int, _header_type, _quality, _text, _sha, _codec_key, _codec_raw, _chunk_frames,
             _chunk_list, _payload, _payload, _payload, _head, _head, _container)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A valid file with one to three mutations; one in ten is also cut short or has a raw byte flipped."""
    p = Parsed.of(data)
    for _ in range(rng.randint(1, 3)):
        rng.choice(MUTATIONS)(p, rng)
    out = bytearray(p.to_bytes())
    if rng.random() < 0.05:
        del out[rng.randrange(len(out)):]
    elif rng.random() < 0.05:
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def seeds(codec) -> list[bytes]:
    """Valid files: mono at the model's rate, stereo at 8 kHz with refinement, stereo at 48 kHz with refinement
    and bandwidth extension, a streamed one, two chunks, refinement on a coarse grid; then joint stereo: identical
    channels (mid/side), a mono source panned (a side prediction), a stereo file of two chunks (mid/side, then
    left/right) with silence and refinement, and silence at 44.1 kHz with the extension."""
    from audiovae.codec import refine

    sr = codec.model.sample_rate
    rng = np.random.default_rng(0)

    def noise(seconds: float, channels: int, rate: int) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (t < seconds / 2)
        return (tone + 0.05 * rng.standard_normal((channels, t.size))).astype(np.float32)

    enc = codec.stream_encoder(sr, 1, quality=3)
    streamed = enc(noise(0.3, 1, sr)) + enc.finish()
    enc = codec.stream_encoder(sr, 1, quality=2, length=int(0.7 * sr), refine=True, grid=refine.GRIDS[-1])
    coarse = enc(noise(0.7, 1, sr)) + enc.finish()
    mono = noise(0.5, 1, sr)[0]
    switching = np.concatenate([np.repeat(noise(5.0, 1, sr), 2, axis=0), noise(1.0, 2, sr)], axis=1)
    switching[:, sr : 2 * sr] = 0
    return [codec.compress(noise(0.5, 1, sr), sr, quality=7), streamed,
            codec.compress(noise(0.4, 2, 8000), 8000, quality=5, refine=True),
            codec.compress(noise(0.6, 2, 48000), 48000, quality=5, refine=True, extend=True),
            codec.compress(noise(5.2, 1, sr), sr, quality=1), coarse,
            codec.compress(np.stack([mono, mono]), sr, quality=6),
            codec.compress(np.stack([mono, 0.3 * mono]), sr, quality=4, refine=True),
            codec.compress(switching, sr, quality=2, refine=True),
            codec.compress(np.zeros((2, 44100), np.float32), 44100, quality=5)]


def outcome(codec, data: bytes) -> tuple[str, str]:
    """("decoded", its peak) or (the AudioVAEError's class, its message); any other exception propagates."""
    try:
        peak = 0.0
        for y in codec.stream_decode(fmt.Reader(io.BytesIO(data), name="fuzz.avae")):
            peak = max(peak, float(np.abs(y).max(initial=0.0)))
        return "decoded", f"peak {peak:.3g}"
    except AudioVAEError as e:
        return type(e).__name__ if "\n" not in str(e) else "multi-line message", str(e)


def _peak_rss_mb(reset: bool = False) -> float:
    """This process's peak resident memory (VmHWM) in MB; ``reset`` starts a new peak (Linux)."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _worker(conn, model: str, memory_mb: int) -> None:
    """Decode each input received, under an address-space limit of ``memory_mb`` above the loaded model."""
    import torch

    from audiovae.codec.stream import Codec

    torch.set_num_threads(1)
    codec = Codec(model)
    outcome(codec, seeds(codec)[0])  # warm up: first-call allocations are not an input's
    vm = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (memory_mb << 20), resource.RLIM_INFINITY))
    conn.send(_peak_rss_mb())
    while (data := conn.recv()) is not None:
        _peak_rss_mb(reset=True)
        start = time.perf_counter()
        try:
            kind, detail = outcome(codec, data)
        except Exception as e:  # noqa: BLE001 -- what the fuzzer looks for: reported, not raised
            kind, detail = type(e).__name__, str(e).splitlines()[0] if str(e) else ""
        conn.send((kind, detail[:300], time.perf_counter() - start, _peak_rss_mb()))


class _Worker:
    def __init__(self, model: str, memory_mb: int):
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or torch state
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, model, memory_mb), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(300):
            raise RuntimeError("fuzz worker did not start")
        self.baseline_mb, self.job = self.conn.recv(), None

    def submit(self, i: int, data: bytes) -> None:
        self.job, self.started = (i, data), time.monotonic()
        self.conn.send(data)

    def result(self) -> tuple:
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join(5)
            code = self.proc.exitcode
            return (f"signal {-code}" if code and code < 0 else f"exit {code}"), "", \
                time.monotonic() - self.started, 0.0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join()


@dataclass
class Report:
    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)  # (input, outcome, detail)
    slowest: tuple = (0.0, -1, "")  # (seconds, input, outcome)
    peak_mb: tuple = (0.0, -1)  # (peak RSS while decoding, input)
    baseline_mb: float = 0.0  # peak RSS of a worker with the model loaded

    def lines(self) -> list[str]:
        return [f"{self.inputs} inputs in {self.seconds:.0f} s; outcomes: " +
                ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common()),
                f"slowest: input {self.slowest[1]} ({self.slowest[2]}), {self.slowest[0]:.2f} s; peak memory: "
                f"{self.peak_mb[0]:.0f} MB at input {self.peak_mb[1]} (worker with the model: "
                f"{self.baseline_mb:.0f} MB)",
                f"failures: {len(self.failures)}", *(f"  input {i}: {k}: {d}" for i, k, d in self.failures[:50])]


OK = {"decoded", "FormatError", "CodecError", "ModelLoadError", "AudioError", "AudioVAEError"}


def campaign(model: str, n: int, seed: int = 0, workers: int = 1, timeout: float = 10.0, memory_mb: int = 1024,
             save: Path | None = None, log=None) -> Report:
    """Decode ``n`` mutated files in ``workers`` processes; a failure's input goes to ``save`` when given."""
    import torch

    from audiovae.codec.stream import Codec

    torch.set_num_threads(1)
    valid = seeds(Codec(model))
    report, start, pending = Report(), time.monotonic(), iter(range(n))
    pool = [_Worker(model, memory_mb) for _ in range(workers)]
    report.baseline_mb = max(w.baseline_mb for w in pool)

    def record(w: _Worker, result: tuple) -> None:
        (i, data), (kind, detail, seconds, peak) = w.job, result
        w.job = None
        report.inputs += 1
        report.outcomes[kind] += 1
        report.slowest = max(report.slowest, (seconds, i, kind))
        report.peak_mb = max(report.peak_mb, (peak, i))
        if kind not in OK or seconds > timeout or peak > report.baseline_mb + memory_mb:
            report.failures.append((i, kind, detail))
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"fuzz-{seed}-{i}.avae").write_bytes(data)
        if log is not None and report.inputs % 1000 == 0:
            print(f"{report.inputs} inputs, {time.monotonic() - start:.0f} s, {dict(report.outcomes)}", file=log,
                  flush=True)

    try:
        while True:
            for w in pool:
                if w.job is None and (i := next(pending, None)) is not None:
                    w.submit(i, mutate(valid[i % len(valid)], random.Random(f"{seed}:{i}")))
            busy = [w for w in pool if w.job is not None]
            if not busy:
                break
            ready = wait([w.conn for w in busy], timeout=min(w.started + timeout for w in busy) - time.monotonic())
            for w in busy:
                if w.conn in ready:
                    result = w.result()
                elif time.monotonic() - w.started > timeout:
                    result = ("timeout", f"more than {timeout:g} s", time.monotonic() - w.started, 0.0)
                else:
                    continue
                record(w, result)
                if result[0] not in OK:  # the worker may be dead or stuck: a fresh one
                    w.stop()
                    pool[pool.index(w)] = _Worker(model, memory_mb)
    finally:
        for w in pool:
            w.stop()
    report.seconds = time.monotonic() - start
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audiovae.codec.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="number of inputs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="decoding processes")
    ap.add_argument("--model", default="speech16k", help="model name or folder")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    ap.add_argument("--memory-mb", type=int, default=1024, help="memory per input above the loaded model")
    ap.add_argument("--save", type=Path, help="folder for the inputs that fail")
    args = ap.parse_args(argv)
    report = campaign(args.model, args.n, args.seed, args.workers, args.timeout, args.memory_mb, args.save,
                      log=sys.stderr)
    print("\n".join(report.lines()))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
