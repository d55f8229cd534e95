"""The envelope refinement layer: exact gain coding on every grid (and versions 1 and 2 decoding), the frame
arithmetic, streaming == whole signal."""

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiovae.codec import refine
from audiovae.codec.format import Reader
from audiovae.codec.stream import Codec

SR, HOP = 16000, 320
BANDS = len(refine.band_starts(SR, HOP))


def pushed(refiner, y, gains, cuts):
    """Feed ``y`` and ``gains`` in pieces cut at sample positions ``cuts`` (gains as far as the samples go)."""
    out, prev, sent = [], 0, 0
    for cut in [*cuts, y.shape[1]]:
        rows = min(gains.shape[-1], refine.frame_count(cut, HOP)) if cut < y.shape[1] else gains.shape[-1]
        out.append(refiner.push(y[:, prev:cut], gains[..., sent:rows]))
        prev, sent = cut, rows
    return np.concatenate([*out, refiner.flush()], axis=1)


@pytest.mark.parametrize("n", [1, 319, 320, 321, 4999])
def test_unit_gains_give_the_signal_back_in_any_blocks(n):
    y = np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)
    out = pushed(refine.Refiner(2, SR, HOP), y, np.zeros((2, BANDS, 0), np.int32), [n // 3, n // 2])
    assert out.shape == y.shape and np.abs(out - y).max() < 1e-5


def test_gains_streamed_equal_gains_whole():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((1, 5000)).astype(np.float32)
    gains = rng.integers(-3, 4, (1, BANDS, refine.frame_count(5000, HOP))).astype(np.int32)
    whole = pushed(refine.Refiner(1, SR, HOP), y, gains, [])
    for cuts in ([1], [777, 778, 2000], list(range(333, 5000, 333))):
        np.testing.assert_allclose(pushed(refine.Refiner(1, SR, HOP), y, gains, cuts), whole, atol=1e-6)
    assert whole.shape == y.shape and not np.allclose(whole, y)


def test_measured_gains_restore_a_quieter_band():
    """Decoded audio 6 dB too quiet above 1 kHz: the analyzer measures +2 steps there and 0 below, and the
    refined audio is the original again (up to the 3 dB grid)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 8000))
    spectrum = np.fft.rfft(x)
    spectrum[:, np.fft.rfftfreq(8000, 1 / SR) >= 1000] *= 0.5
    y = np.fft.irfft(spectrum, n=8000)
    analyzer = refine.Analyzer(1, SR, HOP)
    energies = np.concatenate([analyzer.push(x[:, :3000], y[:, :2000]), analyzer.push(x[:, 3000:], y[:, 2000:]),
                               analyzer.finish(8000)], axis=-1)
    frames = refine.frame_count(8000, HOP)
    gains = refine.gains(energies)
    assert energies.shape == (1, 2, BANDS, frames) and gains.shape == (1, BANDS, frames)
    low = refine.band_starts(SR, HOP) * SR / (2 * HOP) < 900
    inner = gains[0, :, 2:-2]
    assert (inner[low] == 0).mean() > 0.9 and (inner[~low] == 2).mean() > 0.9
    refined = pushed(refine.Refiner(1, SR, HOP), y.astype(np.float32), gains, [4000])
    assert np.mean((refined - x) ** 2) < 0.1 * np.mean((y - x) ** 2)
    coarse = refine.gains(energies, (3, 3))  # 6 cells of 3 bands (1 kHz is an edge of band 6), 9 of 3 frames
    assert coarse.shape == (1, 6, 9) and (coarse[0, :2, 1:-1] == 0).all() and (coarse[0, 2:, 1:-1] == 2).all()
    expanded = refine.expand(coarse, BANDS, frames, (3, 3))
    assert expanded.shape == gains.shape and (expanded[0, 6:, 3:-3] == 2).all()


@pytest.mark.parametrize("grid", [(1, 1), (3, 3), (2, 5), (15, 1)])
@pytest.mark.parametrize("frames", [0, 1, 2, 50, 700])
def test_gain_coding_is_exact(frames, grid):
    rng = np.random.default_rng(frames)
    cells = -(-frames // grid[1])
    gains = rng.integers(-refine.LIMIT, refine.LIMIT + 1, (-(-BANDS // grid[0]), cells)).astype(np.int32)
    gains[:, : cells // 2] = 0  # skewed and uniform stretches
    data = refine.encode(gains, frames, grid)
    decoded = refine.decode(data, BANDS)
    assert decoded.shape == (BANDS, frames)
    np.testing.assert_array_equal(decoded, refine.expand(gains, BANDS, frames, grid))
    np.testing.assert_array_equal(decoded[:: grid[0], :: grid[1]], gains)
    with pytest.raises(ValueError, match="do not make"):
        refine.encode(gains, frames + grid[1], grid)
    for bad in [(0, 1), (1, 0), (16, 1), (1, 16)]:
        with pytest.raises(ValueError, match=r"grid .*: bands and frames per gain must be 1\.\.15"):
            refine.encode(gains, frames, bad)


def test_damaged_gain_data_is_refused():
    data = refine.encode(np.full((BANDS, 10), 2, np.int32))
    with pytest.raises(ValueError, match="shorter"):
        refine.decode(data[:1], BANDS)
    with pytest.raises(ValueError, match="shorter than its grid"):
        refine.decode(data[:2], BANDS)
    with pytest.raises(ValueError, match="whole header"):
        refine.decode(data[:-1], BANDS)
    bad_table = data[:4] + b"\xff" + data[5:]  # band 0's weight and table index
    with pytest.raises(ValueError, match="outside the tables"):
        refine.decode(bad_table, BANDS)
    for grid in (0x00, 0x01, 0x10, 0x51):  # no band, no frame, more bands than there are (4 here)
        with pytest.raises(ValueError, match="grid of"):
            refine.decode(data[:2] + bytes([grid]) + data[3:], 4)


def test_a_block_is_coded_on_its_grid_and_cut_after_its_last_cell_with_a_gain():
    rng = np.random.default_rng(7)
    energies = rng.gamma(1.0, 1.0, (2, 2, 4, 11))
    energies[..., 7:] = 1.0  # gains 0 from frame 7 on, in both channels
    for grid, kept in [((1, 1), 7), ((3, 3), 9), ((9, 2), 8)]:  # 9 bands: wider than the 4 there are
        data = refine.encode_block(energies, grid, cut=True)
        used = (min(grid[0], 4), grid[1])
        for d, e in zip(data, energies, strict=True):
            expected = refine.expand(refine.gains(e, used), 4, 11, used)[:, :kept]
            np.testing.assert_array_equal(refine.decode(d, 4), expected)
    silent = energies.copy()
    silent[1, 0] = silent[1, 1]
    assert refine.encode_block(silent, (1, 1))[1] == b""  # a second channel without a gain


def test_a_coarse_grid_costs_a_fraction_of_the_finest():
    rng = np.random.default_rng(4)
    energies = rng.gamma(1.0, 1.0, (2, BANDS, 250)) * 10 ** rng.normal(0, 0.3, (1, BANDS, 1))
    fine, coarse = (len(refine.encode(refine.gains(energies, m), 250, m)) for m in ((1, 1), (3, 3)))
    assert coarse < 0.15 * fine


def test_gains_that_change_slowly_cost_less_than_the_same_gains_in_any_order():
    """Version 2 predicts each gain from its band's previous frame: a slow envelope is cheaper than its frames
    shuffled (same values, so the same cost about a chunk-wide mean as version 1 coded them)."""
    rng = np.random.default_rng(3)
    slow = np.cumsum(rng.integers(-1, 2, (BANDS, 250)), axis=1).clip(-refine.LIMIT, refine.LIMIT).astype(np.int32)
    shuffled = slow[:, rng.permutation(250)]
    assert len(refine.encode(slow)) < 0.8 * len(refine.encode(shuffled))
    np.testing.assert_array_equal(refine.decode(refine.encode(slow), BANDS), slow)


def test_version_2_is_version_3_on_the_finest_grid_without_its_byte():
    gains = np.random.default_rng(6).integers(-4, 5, (BANDS, 40)).astype(np.int32)
    data = refine.encode(gains)
    assert data[2] == 0x11
    np.testing.assert_array_equal(refine.decode(data[:2] + data[3:], BANDS, version=2), gains)


# Version 1 (commit f1b9bd7) coded these gains as V1: its files still decode.
V1_GAINS = np.zeros((BANDS, 12), np.int32)
V1_GAINS[:, 4:] = np.random.default_rng(5).integers(-3, 4, (BANDS, 12))[:, 4:]
V1 = bytes.fromhex(
    "0c00fcff18f8ff1b03001a01001c03001bfbff17f9ff190000170c001bfcff17fdff19f7ff1908001a040016f9ff1807001801001affff"
    "17eaf06397ca4919b9dae15b1c526d4821ae0255ac4ad336143abc78f6f95c2a09298c2a09fbfb4c7467a8cdd09bef83f83da28b1eb5e6"
    "54ed682f89cb34f2d41b52ccf84826184c907b793800")


def test_version_1_gains_decode_as_before():
    np.testing.assert_array_equal(refine.decode(V1, BANDS, version=1), V1_GAINS)
    assert refine.encode(V1_GAINS) != V1 and refine.decode(refine.encode(V1_GAINS), BANDS).tolist() == V1_GAINS.tolist()
    with pytest.raises(ValueError):  # the versions' headers differ
        refine.decode(V1, BANDS)


@pytest.mark.parametrize("version", [1, 2])
def test_files_of_earlier_refinement_versions_decode_as_before(version):
    """Written by the codec at version 1 (commit f1b9bd7) and 2 (c7eebac): speech16k, quality 4, ``--refine``,
    1.5 s of ``tests.test_codec.voice(1.5, seed=7)``; the float WAV next to each is its audio decoded then, to the
    bit on the machine that wrote it (the tolerance is for another machine's float rounding)."""
    data = (Path(__file__).parent / "data" / f"refine{version}_speech16k.avae").read_bytes()
    assert Reader(io.BytesIO(data)).header.codec["refine"] == version
    y, sr = Codec("speech16k").decompress(data)
    ref, ref_sr = sf.read(Path(__file__).parent / "data" / f"refine{version}_speech16k.wav", dtype="float32",
                          always_2d=True)
    assert sr == ref_sr and y.shape == ref.T.shape
    np.testing.assert_allclose(y, ref.T, rtol=0, atol=1e-6)


def test_bands_follow_the_sample_rate_and_frame():
    assert BANDS == 18 and refine.band_starts(SR, HOP)[0] == 0
    assert len(refine.band_starts(24000, 480)) == 20  # up to 12 kHz
    tiny = refine.band_starts(SR, 16)  # 500 Hz bins: narrow bands merge, none is empty
    assert len(tiny) == len(set(tiny)) and tiny.max() <= 16
