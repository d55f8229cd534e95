import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from audiovae.codec.entropy import (
    ESCAPE,
    RADIUS,
    TOTAL,
    WIDTH,
    EntropyModel,
    dequantize,
    fit_entropy_model,
    logistic_tables,
    quantize,
    step_multipliers,
)

DIM = 6
INT32 = np.iinfo(np.int32)
GOLDEN = "d5e90e7abd295386"  # sha256 prefix of the bitstream; a change means old files no longer decode


def ar1(rng, frames, dim=DIM, rho=0.85):
    """Correlated latents like the VAE's: AR(1) per channel around channel offsets."""
    noise = rng.standard_normal((dim, frames)) * np.sqrt(1 - rho**2)
    x = np.zeros((dim, frames))
    for t in range(frames):
        x[:, t] = (rho * x[:, t - 1] if t else rng.standard_normal(dim)) + (noise[:, t] if t else 0)
    return x * np.linspace(0.7, 1.5, dim)[:, None] + np.linspace(-1, 1, dim)[:, None]


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(0)
    latents = [ar1(rng, int(rng.integers(1, 120))) for _ in range(40)]
    return {kind: fit_entropy_model(latents, kind=kind) for kind in ("factorized", "context")}


@pytest.mark.parametrize("kind", ["factorized", "context"])
def test_round_trip_is_exact(models, kind):
    model, rng = models[kind], np.random.default_rng(1)
    for quality in (1, 4, 7, model.qualities):
        q = model.quantize(ar1(rng, 90) * 1.5, quality)
        data = model.encode(q, quality)
        out = model.decode(data, quality, q.shape[1])
        assert out.dtype == np.int32 and np.array_equal(out, q)


@pytest.mark.parametrize("kind", ["factorized", "context"])
def test_escapes_and_extreme_symbols(models, kind):
    model, rng = models[kind], np.random.default_rng(2)
    q = model.quantize(ar1(rng, 40), 5)
    extremes = [INT32.max, INT32.min, RADIUS + 1, -RADIUS - 2, 2**16 + 3, -(2**17) - 5, 2**24, 1000]
    q[:, 3] = extremes[:DIM]
    q[0, 4:6] = extremes[DIM:]
    q[:, -1] = INT32.min  # context symbols clip; residuals stay exact
    out = model.decode(model.encode(q, 5), 5, q.shape[1])
    assert np.array_equal(out, q)


def test_empty_and_single_frame(models):
    model = models["context"]
    empty = np.zeros((DIM, 0), dtype=np.int32)
    assert model.decode(model.encode(empty, 3), 3, 0).shape == (DIM, 0)
    assert model.bits(empty, 3) == 0.0
    one = np.arange(DIM, dtype=np.int32)[:, None] - 2
    assert np.array_equal(model.decode(model.encode(one, 3), 3, 1), one)


def test_tables_are_exact_integer_distributions(models):
    for tables in (logistic_tables(), models["context"].tables):
        assert tables.dtype == np.int32 and tables.shape[-1] == WIDTH
        assert (tables >= 1).all()
        assert (tables.sum(-1, dtype=np.int64) == TOTAL).all()
    arrays, meta = models["context"].to_state()
    arrays["tables"][0, 0, 0] += 1
    with pytest.raises(ValueError, match="tables"):
        EntropyModel.from_state(arrays, meta)


def test_single_precision_rows_code_exactly_as_double():
    """exact_pmf's float32 rows: every table row and every symbol, however improbable, codes to the same words as
    the float64 rows that files were first written with, and decodes back."""
    from audiovae.codec.entropy import _CATEGORICAL, _queue, exact_pmf

    peaked = np.ones((1, WIDTH), np.int64)
    peaked[0, 0] += TOTAL - WIDTH  # all but WIDTH - 1 counts on one symbol
    tables = np.concatenate([logistic_tables().reshape(-1, WIDTH), peaked])
    rng = np.random.default_rng(3)
    rows = rng.integers(0, len(tables), 30000)
    symbols = rng.integers(0, WIDTH, 30000).astype(np.int32)
    words = []
    for pmf in (exact_pmf(tables), (tables - 1).astype(np.float64)):
        coder = _queue.RangeEncoder()
        coder.encode(symbols, _CATEGORICAL, pmf[rows])
        words.append(coder.get_compressed())
    assert exact_pmf(tables).dtype == np.float32
    np.testing.assert_array_equal(words[0], words[1])
    decoded = _queue.RangeDecoder(words[0]).decode(_CATEGORICAL, exact_pmf(tables)[rows])
    np.testing.assert_array_equal(decoded, symbols)


def test_state_round_trip_gives_identical_bitstreams(models, tmp_path):
    rng = np.random.default_rng(3)
    for model in models.values():
        arrays, meta = model.to_state()
        save_file(arrays, str(tmp_path / "m.safetensors"))
        (tmp_path / "m.json").write_text(json.dumps(meta))
        loaded = EntropyModel.from_state(load_file(str(tmp_path / "m.safetensors")),
                                         json.loads((tmp_path / "m.json").read_text()))
        q = model.quantize(ar1(rng, 70), 6)
        assert loaded.encode(q, 6) == model.encode(q, 6)
    with pytest.raises(ValueError, match="layout"):
        EntropyModel.from_state(arrays, {**meta, "precision": 16})


def test_per_channel_steps_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(7)
    latents = [ar1(rng, int(rng.integers(2, 120))) for _ in range(30)]
    mult = step_multipliers(np.linspace(-0.5, 0.5, DIM), np.linspace(0.1, -0.1, DIM))
    model = fit_entropy_model(latents, multipliers=mult)
    arrays, meta = model.to_state()
    assert meta["version"] == 2 and np.array_equal(arrays["multipliers"], mult)
    loaded = EntropyModel.from_state(arrays, meta)
    x = ar1(rng, 90)
    for quality in (1, 5, model.qualities):
        steps = model.steps[quality - 1] * mult[quality - 1][:, None]
        q = model.quantize(x, quality)
        assert np.array_equal(q, np.rint(x / steps))
        assert np.allclose(model.dequantize(q, quality), q * steps)
        data = model.encode(q, quality)
        assert loaded.encode(q, quality) == data and np.array_equal(loaded.decode(data, quality, 90), q)
    fine, coarse = model.quantize(x, 5)[0], model.quantize(x, 5)[-1]  # channel 0 has the finest step
    assert np.abs(fine).sum() > np.abs(coarse).sum()
    with pytest.raises(ValueError, match="multipliers"):
        EntropyModel.from_state({**arrays, "multipliers": -mult}, meta)


def test_version_1_states_keep_one_step_and_their_bitstreams(models):
    """Entropy models saved before per-channel steps (no multipliers, version 1) code exactly as before."""
    arrays, meta = _golden_model().to_state()
    del arrays["multipliers"]
    old = EntropyModel.from_state(arrays, {**meta, "version": 1})
    q = np.array([[0, 1, 3, 2, -1, 0, 300, 5], [1, 1, 0, -4, -9, 2**30, 0, 1], [-2, -1, 0, 0, 1, 2, 3, INT32.min]],
                 dtype=np.int32)
    assert hashlib.sha256(old.encode(q, 2)).hexdigest()[:16] == GOLDEN
    x = ar1(np.random.default_rng(8), 50)
    model = models["context"]
    for quality in (1, 9):
        step = float(model.steps[quality - 1])
        q = model.quantize(x, quality)
        assert np.array_equal(q, quantize(x, step))
        assert np.array_equal(model.dequantize(q, quality), dequantize(q, step))
    with pytest.raises(ValueError, match="version 1 state has no multipliers"):
        EntropyModel.from_state({**arrays, "multipliers": np.ones((2, 3))}, {**meta, "version": 1})


@pytest.mark.parametrize("kind", ["factorized", "context"])
def test_coded_size_is_near_ideal(models, kind):
    model, rng = models[kind], np.random.default_rng(4)
    for quality in (2, 6, 9):
        q = model.quantize(ar1(rng, 2000), quality)
        ideal, coded = model.bits(q, quality), 8 * len(model.encode(q, quality))
        assert ideal <= coded <= 1.005 * ideal + 64
    q = np.full((DIM, 1), 2**20, dtype=np.int32)  # escapes are counted too
    assert model.bits(q, 1) <= 8 * len(model.encode(q, 1)) <= model.bits(q, 1) + 64


def test_context_model_beats_factorized_on_correlated_latents(models):
    q = quantize(ar1(np.random.default_rng(5), 3000), models["context"].step(5))
    assert models["context"].bits(q, 5) < 0.85 * models["factorized"].bits(q, 5)


def test_bits_per_quality_grow_with_quality(models):
    model = models["context"]
    means = ar1(np.random.default_rng(6), 500)
    bits = model.bits_per_quality(means)
    assert bits.shape == (model.qualities,) and all(a < b for a, b in zip(bits, bits[1:], strict=False))
    assert bits[5] == model.bits(model.quantize(means, 6), 6)


def test_quantize_dequantize_and_argument_errors(models):
    model = models["factorized"]
    assert np.array_equal(quantize(np.array([[0.49, -1.5, 1e12]]), 1.0), [[0, -2, INT32.max]])
    assert np.allclose(dequantize(np.array([[3, -2]]), 0.5), [[1.5, -1.0]])
    with pytest.raises(ValueError):
        quantize(np.array([[np.nan]]), 1.0)
    for bad in (0, model.qualities + 1, 2.0, True):
        with pytest.raises(ValueError, match="quality"):
            model.step(bad)
    with pytest.raises(ValueError, match="symbols"):
        model.encode(np.zeros((DIM + 1, 4), dtype=np.int32), 1)
    with pytest.raises(ValueError, match="symbols"):
        model.encode(np.zeros((DIM, 4)), 1)
    with pytest.raises(ValueError, match="kind"):
        fit_entropy_model([np.zeros((DIM, 5))], kind="hyperprior")


def _golden_model() -> EntropyModel:
    """A model from integer arithmetic only (no fitted floats), so its bitstream is the same everywhere."""
    tables = np.ones((3, 16, WIDTH), dtype=np.int64)
    k = np.abs(np.arange(WIDTH - 1) - RADIUS)
    for s in range(3):
        tables[s, :, :-1] += (1 << 22) >> np.minimum(k * (s + 1), 62)
        tables[s, :, ESCAPE] += 1 << 8
        tables[s, :, RADIUS] += TOTAL - tables[s].sum(-1)
    dim = 3
    return EntropyModel("context", steps=[1.0, 0.5], tables=tables.astype(np.int32),
                        start_mean=[[0, 2048, -4096]] * 2, start_scale=[[0, 1, 2]] * 2,
                        weights=[np.eye(dim, dtype=np.int64) * 3500] * 2, bias=[[100, -200, 0]] * 2,
                        thresholds=[[2, 5]] * 2, scale_index=[[[0, 1, 2]] * dim] * 2)


def test_golden_bitstream_is_machine_independent(tmp_path):
    model = _golden_model()
    q = np.array([[0, 1, 3, 2, -1, 0, 300, 5], [1, 1, 0, -4, -9, 2**30, 0, 1], [-2, -1, 0, 0, 1, 2, 3, INT32.min]],
                 dtype=np.int32)
    data = model.encode(q, 2)
    assert np.array_equal(model.decode(data, 2, q.shape[1]), q)
    assert hashlib.sha256(data).hexdigest()[:16] == GOLDEN
    # the same bytes decode in a fresh interpreter, from the saved state
    arrays, meta = model.to_state()
    save_file(arrays, str(tmp_path / "m.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps(meta))
    (tmp_path / "data.bin").write_bytes(data)
    script = (
        "import json, sys, numpy as np; from safetensors.numpy import load_file;"
        "from audiovae.codec.entropy import EntropyModel; d = sys.argv[1];"
        "m = EntropyModel.from_state(load_file(d + '/m.safetensors'), json.load(open(d + '/m.json')));"
        "print(m.decode(open(d + '/data.bin', 'rb').read(), 2, 8).astype('<i4').tobytes().hex())"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert bytes.fromhex(out.stdout.strip()) == q.astype("<i4").tobytes()

