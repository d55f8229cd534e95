"""The web app's JSON API (FastAPI TestClient, schemathesis) and ``audiovae report``."""

import base64
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

pytest.importorskip("fastapi")
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from audiovae import AudioVAEError, audio  # noqa: E402
from audiovae.app import api, uploads  # noqa: E402
from audiovae.app.server import LOOPBACK, access, create_app, uvicorn_config  # noqa: E402
from audiovae.codec.stream import Codec  # noqa: E402
from audiovae.demo import ASSETS  # noqa: E402
from audiovae.report import write_report  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
HAS_GENERATE = importlib.util.find_spec("audiovae.generate") is not None
CLIP = ASSETS / "speech16k_fillets-cs.flac"
LOCAL = {"host": "127.0.0.1:8000"}


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
    return local(app)


def local(app, **kwargs) -> TestClient:
    """A client that names a loopback host, as a browser on this machine does."""
    return TestClient(app, base_url="http://127.0.0.1:8000", **kwargs)


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
    assert res["extension_kbps"] == 0  # a 16 kHz clip has no band above the model's


def test_codec_tab_extends_the_band_of_a_48_khz_upload(client):
    x, sr = short_clip()
    x48 = audio.resample(x, sr, 48000)
    x48 = x48 + 0.01 * np.random.default_rng(0).standard_normal(x48.shape).astype(np.float32)  # a band above 8 kHz
    res = client.post("/api/codec", files=upload(wav(x48, 48000)), data={"model": "speech16k", "kbps": "6"}).json()
    decoded, rate = sf.read(io.BytesIO(base64.b64decode(res["decoded_wav"])), always_2d=True)
    assert rate == 48000 and 0 < res["extension_kbps"] < 1.5 and res["kbps"] <= 6
    spectrum = np.abs(np.fft.rfft(decoded[:, 0])) ** 2
    f = np.fft.rfftfreq(len(decoded), 1 / 48000)
    assert spectrum[(f > 10000) & (f < 16000)].mean() > 1e-3 * spectrum[(f > 1000) & (f < 4000)].mean()


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
    app = create_app(timeout_s=0.5)
    client = local(app)
    try:
        r = client.post("/api/codec", files=upload(wav(np.zeros(1600))))
        assert r.status_code == 504 and "longer than 0.5 s" in r.json()["detail"]
        assert app.state.jobs.pending == 1  # the abandoned job keeps the worker: never two jobs at once
    finally:
        release.set()
    wait_for(lambda: app.state.jobs.pending == 0)
    assert client.get("/api/info").status_code == 200


def test_no_operation_takes_a_path(client):
    spec = client.get("/openapi.json").json()
    assert not any("{" in path for path in spec["paths"])
    assert client.get("/static/../pyproject.toml").status_code == 404


def test_openapi_operations_never_fail_on_generated_input(client):
    """schemathesis: a few generated requests per operation, none answered with a 5xx or off its schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app, headers=LOCAL)
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
            case.call_and_validate(headers=LOCAL, checks=[not_a_server_error, response_schema_conformance])
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
    calls = []
    page = write_report(bench, tmp_path / "report.html", [clip, tmp_path / "unknown_x.wav"], kbps=(6.0,),
                        progress=lambda *c: calls.append(c)).read_text()
    assert calls == [(1, 1)]  # a clip of an unknown model is left out
    assert "<td>opus</td>" in page and "ignored" not in page and "<td>467</td>" in page
    assert page.count("data:image/png;base64,") >= 4 and page.count("<audio") >= 3
    assert "Listen: codec examples" in page and "Generation" in page and 'src="http' not in page


# The web app's defences (issue 29): hosts, origins, token, hostile uploads, queue, timeouts, slow clients.

def test_only_loopback_and_allowed_host_names_are_served(client):
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST", "127.0.0.1"):
        assert client.get("/api/info", headers={"host": host}).status_code == 200, host
    for host in ("evil.example", "127.0.0.1.evil.example:8000", "localhost:80:80", "[::1", ""):
        r = client.get("/api/info", headers={"host": host})
        assert r.status_code == 400 and "host name not allowed" in r.json()["detail"], host
    lan = local(create_app(hosts=access("192.168.1.5", ["studio.lan"], "t")[0], token=None))
    assert lan.get("/api/info", headers={"host": "studio.lan:8000"}).status_code == 200
    assert lan.get("/api/info", headers={"host": "192.168.1.5:8000"}).status_code == 200
    assert lan.get("/api/info", headers={"host": "other.lan"}).status_code == 400


def test_a_token_is_generated_for_any_address_but_loopback():
    assert access("127.0.0.1", [], None) == (list(LOOPBACK), None)
    assert access("::1", ["::1"], None) == (list(LOOPBACK), None)
    hosts, token = access("0.0.0.0", [], None)
    assert hosts == list(LOOPBACK) and len(token) >= 32 and token != access("0.0.0.0", [], None)[1]
    assert access("10.0.0.2", ["fe80::1"], "given") == ([*LOOPBACK, "[fe80::1]", "10.0.0.2"], "given")


def test_cross_origin_state_changing_requests_are_refused(client):
    one_clip = {"files": ("a.wav", wav(np.zeros(1600)), "audio/wav")}
    for headers in ({"origin": "http://evil.example"}, {"origin": "null"}, {"origin": "http://127.0.0.1:9999"},
                    {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}):
        r = client.post("/api/latent-map", files=one_clip, headers=headers)
        assert r.status_code == 403 and r.json()["detail"] == "cross-origin request refused", headers
    same = {"origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"}
    r = client.post("/api/latent-map", files=one_clip, headers=same)  # reaches the API: one clip is too few
    assert r.status_code == 400 and "at least 2 clips" in r.json()["detail"]
    assert client.get("/api/info", headers={"origin": "http://evil.example"}).status_code == 200  # reads are safe


def test_a_token_is_needed_as_bearer_header_or_as_the_cookie_that_the_token_address_sets():
    c = local(create_app(token="s3cret-token"))
    r = c.get("/api/info")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "/?token=" in r.json()["detail"]
    assert c.get("/api/info", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/info", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
    assert c.get("/openapi.json").status_code == 401
    assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200  # the page holds no data
    assert c.get("/?token=wrong").status_code == 401 and "audiovae_token" not in c.cookies
    r = c.get("/?token=s3cret-token", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert c.get("/api/info").status_code == 200 and c.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("content", [
    "ffconcat version 1.0\nfile '{secret}'\n",
    "ffconcat version 1.0\nfile secret.txt\n",
    "#EXTM3U\n#EXTINF:1,\nfile://{secret}\n",
    "OggS\nffconcat version 1.0\nfile '{secret}'\n",  # sniffed as Ogg: ffmpeg gets -f ogg and pipe: only
])
def test_uploads_that_name_server_files_read_nothing(client, tmp_path, monkeypatch, content):
    secret = tmp_path / "secret.txt"
    sf.write(secret, np.zeros(16000), 16000, format="WAV")  # a valid clip: read, it would decode
    monkeypatch.chdir(tmp_path)
    r = client.post("/api/codec", files=upload(content.format(secret=secret).encode()))
    assert r.status_code == 400 and r.json()["detail"].startswith("clip.wav: ")
    assert str(tmp_path) not in r.text and "original_wav" not in r.text


def silence_flac(seconds: float, sr: int = 8000) -> bytes:
    """A small FLAC of ``seconds`` of digital silence (about 1 MB per 9 hours), written in blocks."""
    buf = io.BytesIO()
    block = np.zeros(sr * 600, dtype=np.int16)
    with sf.SoundFile(buf, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(seconds // 600)):
            f.write(block)
    return buf.getvalue()


def test_decode_bombs_are_refused_without_decoding_them_or_writing_files(client, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where an upload or a decode could spill
    bombs = [("silence.flac", silence_flac(2 * 3600))]
    if shutil.which("ffmpeg"):
        wv = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "7200",
                             "-c:a", "wavpack", "-f", "wv", "pipe:1"], capture_output=True, check=True).stdout
        bombs.append(("silence.wv", wv))
    for name, data in bombs:
        assert len(data) < 1 << 20
        r = client.post("/api/codec", files=upload(data, name, "audio/flac"))
        assert r.status_code == 413 and r.json()["detail"] == f"{name}: longer than the limit of 20 s"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seconds, status", [(20.0, 200), (20.001, 413)])
def test_the_length_limit_counts_decoded_samples(seconds, status):
    data = wav(np.zeros(round(seconds * 16000)))
    job = uploads.Job()
    if status == 200:
        assert uploads.decode(data, "x.wav", 20, job)[0].shape == (1, 320000)
    else:
        with pytest.raises(uploads.TooLong):
            uploads.decode(data, "x.wav", 20, job)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")
def test_containers_only_ffmpeg_reads_decode_through_the_pipe():
    mka = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=1:r=24000", "-c:a", "pcm_s16le",
                          "-f", "matroska", "pipe:1"], capture_output=True, check=True).stdout
    x, sr = uploads.decode(mka, "tone.mka", 20, uploads.Job())
    assert sr == 24000 and x.shape == (1, 24000) and 0.9 < np.abs(x).max() * 8 < 1.1  # lavfi sine: amplitude 1/8


def test_a_full_queue_answers_503_with_retry_after(monkeypatch):
    entered, release = threading.Event(), threading.Event()

    def slow_classify(clips, name):
        entered.set()
        release.wait(60)
        return []

    monkeypatch.setattr(api, "classify", slow_classify)
    app = create_app(queue=1, timeout_s=90)
    c = local(app)
    clip = {"files": ("a.wav", wav(np.zeros(1600)), "audio/wav")}
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(c.post, "/api/classify", files=clip)
        assert entered.wait(60)
        queued = pool.submit(c.post, "/api/classify", files=clip)
        wait_for(lambda: app.state.jobs.pending == 2)
        r = c.post("/api/classify", files=clip)
        assert r.status_code == 503 and r.headers["retry-after"] == "90" and "busy" in r.json()["detail"]
        release.set()
        assert running.result().status_code == 200 and queued.result().status_code == 200
    assert c.post("/api/classify", files=clip).status_code == 200


def wait_for(condition, limit_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail after a generous ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_a_timeout_kills_the_jobs_ffmpeg_and_the_next_job_runs(tmp_path, monkeypatch):
    """A stand-in ffmpeg that never answers: the 504 kills it (and reaps it) and frees the worker."""
    pid_file = tmp_path / "pid"
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    c = local(create_app(timeout_s=1, queue=0))
    r = c.post("/api/codec", files=upload(b"OggS" + bytes(200), "clip.ogg", "audio/ogg"))
    assert r.status_code == 504 and r.json()["detail"] == "the request took longer than 1 s"
    pid = int(pid_file.read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists())  # killed and reaped, not a zombie
    wait_for(lambda: c.post("/api/codec", files=upload(b"not audio")).status_code == 400)  # the slot is free


@pytest.fixture
def real_server():
    """The app under uvicorn with the CLI's settings and 1 s read timeouts, on a loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(create_app(read_timeout_s=1), "127.0.0.1", 0, read_timeout_s=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    wait_for(lambda: server.started)
    yield sock.getsockname()
    server.should_exit = True
    thread.join(30)
    sock.close()


def exchange(address, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes the connection (a socket timeout fails the test)."""
    with socket.create_connection(address, timeout=30) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_slow_clients_are_cut_off(real_server):
    assert exchange(real_server, b"") == b""  # a silent connection is closed
    assert exchange(real_server, b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n") == b""  # an unfinished head
    head = (b"POST /api/codec HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 5000\r\n\r\n--x\r\n")
    assert exchange(real_server, head).startswith(b"HTTP/1.1 408 ")  # a body that never completes
    r = exchange(real_server, b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200 ")
    r = exchange(real_server, b"GET /api/info HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 400 ")


def test_docs_are_served_from_the_package_behind_the_same_token():
    """/docs loads Swagger UI from /static/swagger (works offline, no CDN); like the API, it needs the token."""
    c = local(create_app(token="s3cret-token"))
    assert c.get("/docs").status_code == 401
    page = c.get("/docs", headers={"authorization": "Bearer s3cret-token"})
    assert page.status_code == 200 and "cdn" not in page.text and "https://" not in page.text.split("<body>")[0]
    for asset in ("/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css"):
        assert asset in page.text and c.get(asset).status_code == 200
    assert c.get("/redoc").status_code in (401, 404)
