"""The web app's JSON API (FastAPI TestClient, schemathesis) and ``audiovae report``."""

import base64
import importlib.util
import io
import threading

import numpy as np
import pytest
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from audiovae import AudioVAEError, audio  # noqa: E402
from audiovae.app import api  # noqa: E402
from audiovae.app.server import create_app  # noqa: E402
from audiovae.codec.stream import Codec  # noqa: E402
from audiovae.demo import ASSETS  # noqa: E402
from audiovae.report import write_report  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
HAS_GENERATE = importlib.util.find_spec("audiovae.generate") is not None
CLIP = ASSETS / "speech16k_fillets-cs.flac"


def wav(x: np.ndarray, sr: int = 16000) -> bytes:
    return api.wav_bytes(np.atleast_2d(x).astype(np.float32), sr)


def float_wav(x: np.ndarray, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def short_clip(seconds: float = 2.0) -> tuple[np.ndarray, int]:
    x, sr = audio.load(CLIP)
    return x[:, : int(seconds * sr)], sr


def tone_folder(root):
    """Four 0.5 s clips in two labelled folders (low and high tones)."""
    t = np.arange(8000) / 16000
    for label, f in (("low", 220), ("high", 1760)):
        (root / label).mkdir(parents=True)
        for i in range(2):
            (root / label / f"{i}.wav").write_bytes(wav(0.3 * np.sin(2 * np.pi * f * (1 + 0.1 * i) * t)))
    return root


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(data=tone_folder(tmp_path_factory.mktemp("tones")), max_upload_mb=1, max_seconds=20)
    return TestClient(app)


def upload(data: bytes, name: str = "clip.wav", ctype: str = "audio/wav"):
    return {"file": (name, data, ctype)}


def test_info_lists_shipped_models_and_classifier(client):
    info = client.get("/api/info").json()
    assert info["models"][0] == "speech16k" and "speech16k-language" in info["classifiers"]
    assert info["latent_clips"] == 4 and info["generate"] == HAS_GENERATE


def test_codec_round_trip_with_the_shipped_model(client):
    x, sr = short_clip()
    r = client.post("/api/codec", files=upload(wav(x, sr)), data={"model": "speech16k", "kbps": "6"})
    assert r.status_code == 200, r.text
    res = r.json()
    avae = base64.b64decode(res["avae"])
    assert res["bytes"] == len(avae) and res["kbps"] == pytest.approx(len(avae) * 8 / 2.0 / 1000)
    assert res["kbps"] <= 6 and res["size_ratio"] == pytest.approx(x.size * 2 / len(avae))
    assert isinstance(res["quality"], int) and 1 <= res["quality"]  # an integer, though version 2 stores a float64
    assert all(res["metrics"][k] is not None for k in ("pesq", "stoi", "si_sdr", "mel_distance"))
    decoded, rate = sf.read(io.BytesIO(base64.b64decode(res["decoded_wav"])), always_2d=True)
    assert rate == sr and decoded.shape == (x.shape[1], 1)
    y, _ = Codec("speech16k").decompress(avae)  # the download decodes to the same audio
    assert np.abs(y[0] - decoded[:, 0]).max() < 1e-3
    assert all(base64.b64decode(v)[:4] == b"\x89PNG" for v in res["spectrograms"].values())
    if api.opus_available():
        assert res["opus"]["target_kbps"] == 6 and res["opus"]["metrics"]["stoi"] is not None


@pytest.mark.parametrize("files, status", [
    (upload(b"this is not audio"), 400),
    (upload(b""), 400),
    (upload(b"hello", "notes.txt", "text/plain"), 415),
    (upload(b"\x89PNG....", "image.png", "image/png"), 415),
    (upload(b"\0" * (2 << 20)), 413),  # over max_upload_mb
    (upload(wav(np.zeros(21 * 16000))), 413),  # over max_seconds
    (upload(float_wav(np.full(1600, np.nan))), 400),
])
def test_bad_uploads_get_4xx_and_the_server_keeps_serving(client, files, status):
    r = client.post("/api/codec", files=files, data={"kbps": "6"})
    assert r.status_code == status and isinstance(r.json()["detail"], str)
    assert "audiovae-upload-" not in r.json()["detail"]  # names the upload, not the server's temp file
    x, sr = short_clip(0.5)
    assert client.post("/api/classify", files={"files": ("ok.wav", wav(x, sr), "audio/wav")}).status_code == 200


@pytest.mark.parametrize("samples", [1, 400])
def test_very_short_clips_compress_without_metrics(client, samples):
    r = client.post("/api/codec", files=upload(wav(0.1 * np.ones((2, samples)))), data={"kbps": "1"})
    assert r.status_code == 200, r.text
    assert set(r.json()["metrics"].values()) == {None} and r.json()["seconds"] == samples / 16000


def test_requests_that_are_not_uploads_get_4xx(client):
    assert client.post("/api/codec", json={"file": "clip.wav"}).status_code == 422
    assert client.post("/api/codec", files=upload(wav(np.zeros(1600))), data={"kbps": "-1"}).status_code == 422
    assert client.post("/api/codec", files=upload(wav(np.zeros(1600))), data={"model": "../x"}).status_code == 422
    assert client.get("/api/latent-map/clip?index=99").status_code == 404


def test_classify_names_the_language_of_the_demo_clips(client):
    files = [("files", (p.name, p.read_bytes(), "audio/flac")) for p in sorted(ASSETS.glob("speech16k_*.flac"))]
    r = client.post("/api/classify", files=files, data={"classifier": "speech16k-language"})
    assert r.status_code == 200, r.text
    preds = r.json()
    assert [p["name"] for p in preds] == [f[1][0] for f in files]
    for p in preds:
        probs = [lab["probability"] for lab in p["labels"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
    assert preds[0]["labels"][0]["label"] == "cs"  # the shipped probe on its own test-split clip


def test_latent_map_of_the_server_set_and_of_uploads(client):
    m = client.get("/api/latent-map", params={"model": "speech16k"}).json()
    assert len(m["points"]) == 4 and {p["label"] for p in m["points"]} == {"low", "high"}
    assert 0 < sum(m["explained_variance"]) <= 1 + 1e-9
    r = client.get("/api/latent-map/clip", params={"index": 0})
    assert r.headers["content-type"] == "audio/wav" and sf.info(io.BytesIO(r.content)).frames == 8000
    x, sr = short_clip(1.0)
    files = [("files", (f"{i}.wav", wav(x[:, i * 4000:], sr), "audio/wav")) for i in range(3)]
    r = client.post("/api/latent-map", files=files, data={"labels": ["a", "a", "b"]})
    assert r.status_code == 200 and [p["label"] for p in r.json()["points"]] == ["a", "a", "b"]
    assert client.post("/api/latent-map", files=files, data={"labels": ["a"]}).status_code == 400
    assert client.post("/api/latent-map", files=files[:1]).status_code == 400


def test_a_clip_set_without_labelled_clips_is_refused_at_start(tmp_path):
    with pytest.raises(AudioVAEError, match="no labelled audio"):
        create_app(data=tmp_path)


def test_pca2_is_deterministic_and_handles_few_points():
    x = np.random.default_rng(0).standard_normal((5, 8))
    xy, share = api.pca2(x)
    assert xy.shape == (5, 2) and np.allclose(xy, api.pca2(x.copy())[0]) and share[0] >= share[1]
    assert api.pca2(x[:1])[0].shape == (1, 2)


@pytest.mark.skipif(HAS_GENERATE, reason="audiovae.generate is installed")
def test_generation_without_the_module_is_a_clear_501(client):
    for r in (client.get("/api/generate/info"), client.post("/api/generate", json={"seconds": 1})):
        assert r.status_code == 501 and "generation is not available" in r.json()["detail"]


@pytest.mark.skipif(not HAS_GENERATE, reason="audiovae.generate is not available on this branch")
def test_generate_and_interpolate(client):
    info = client.get("/api/generate/info").json()
    r = client.post("/api/generate", json={"seconds": 1.0, "seed": 1})
    assert r.status_code == 200, r.text
    assert sf.info(io.BytesIO(base64.b64decode(r.json()["wav"]))).duration == pytest.approx(1.0, abs=0.05)
    assert client.post("/api/generate", json={"label": "no such label"}).status_code == 400
    x, sr = short_clip(1.0)
    files = {"file_a": ("a.wav", wav(x, sr), "audio/wav"), "file_b": ("b.wav", wav(x[:, ::-1], sr), "audio/wav")}
    r = client.post("/api/interpolate", files=files, data={"steps": "3"})
    assert r.status_code == 200, r.text
    assert len(r.json()["wavs"]) == 3 and r.json()["sample_rate"] == info["sample_rate"]


def test_slow_requests_time_out_with_504_and_the_server_keeps_serving(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(api, "compare_codec", lambda *a: release.wait(30))
    client = TestClient(create_app(timeout_s=0.5))
    try:
        r = client.post("/api/codec", files=upload(wav(np.zeros(1600))))
        assert r.status_code == 504 and "longer than 0.5 s" in r.json()["detail"]
    finally:
        release.set()
    assert client.get("/api/info").status_code == 200


def test_no_operation_takes_a_path(client):
    spec = client.get("/openapi.json").json()
    assert not any("{" in path for path in spec["paths"])
    assert client.get("/static/../pyproject.toml").status_code == 404


def test_openapi_operations_never_fail_on_generated_input(client):
    """schemathesis: a few generated requests per operation, none answered with a 5xx or off its schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    if not HAS_GENERATE:
        schema = schema.exclude(path_regex="generate|interpolate")  # 501 by design
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    called = set()
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
            called.add(case.operation.label)

        check()
    assert len(called) == len(operations)


def test_report_renders_the_bench_folder_and_examples(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "codec_x_test.csv").write_text("codec,kbps,pesq_wb\naudiovae,3,1.7\nopus,6,2.0\n")
    (bench / "codec_x_test.md").write_text("| codec | kbps |\n|---|---|\n| ignored | 1 |\n")
    (bench / "speed.md").write_text("# Speed\n\n| model | x_rt |\n|---|---|\n| speech16k | 467 |\n")
    (bench / "curve_x.png").write_bytes(api.spectrogram_png(np.ones(4000), 16000, "curve"))
    (bench / "generate_x_sample.wav").write_bytes(wav(np.zeros(800)))
    clip = tmp_path / "speech16k_short.wav"
    x, sr = short_clip(1.0)
    clip.write_bytes(wav(x, sr))
    page = write_report(bench, tmp_path / "report.html", [clip], kbps=(6.0,)).read_text()
    assert "<td>opus</td>" in page and "ignored" not in page and "<td>467</td>" in page
    assert page.count("data:image/png;base64,") >= 4 and page.count("<audio") >= 3
    assert "Listen: codec examples" in page and "Generation" in page and 'src="http' not in page
