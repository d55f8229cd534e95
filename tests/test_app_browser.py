"""End to end: ``audiovae serve`` on a free loopback port, driven by headless Chromium through Playwright.

Screenshots go to build/test-artifacts/. Needs Debian's chromium (``.ci/run`` installs it)."""

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from audiovae import audio
from audiovae.demo import ASSETS

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
HAS_GENERATE = importlib.util.find_spec("audiovae.generate") is not None
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (apt-get install -y chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed"),
]
TOKEN = "browser-test-token"
WAIT_MS = 180_000  # generous: the machine may be busy; every wait ends as soon as its condition holds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, env: dict[str, str] | None = None):
    """``audiovae serve`` on a free loopback port with ``args``; yields its URL, stops it after."""
    port = free_port()
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(Path(audio.__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "audiovae", "serve", "--port", str(port), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the server did not start: {proc.stdout.read()}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The CLI's server with the demo clips as its latent-map set; its URL."""
    data = tmp_path_factory.mktemp("data")
    for clip in sorted(ASSETS.glob("speech16k_*.flac")):  # labels from folder names: the clip's language
        (data / clip.stem[-2:]).mkdir()
        (data / clip.stem[-2:] / clip.name).symlink_to(clip)
    yield from start_server("--data", str(data))


@pytest.fixture(scope="module")
def token_server():
    """A server that needs a token (as off loopback), given by the environment; its URL."""
    yield from start_server(env={"AUDIOVAE_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    # a name that resolves to this machine, as DNS rebinding makes one
                                    "--host-resolver-rules=MAP rebound.test 127.0.0.1"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page(viewport={"width": 1280, "height": 1000})
    pg.set_default_timeout(WAIT_MS)
    pg.goto(server)
    pg.wait_for_selector("body[data-ready]")
    yield pg
    pg.close()


def wait_done(page, status_id: str) -> str:
    """Wait until a status line leaves 'working…'; return it (an error fails the test with its text)."""
    page.wait_for_function(f"document.getElementById('{status_id}').textContent !== 'working…'")
    text = page.inner_text(f"#{status_id}")
    assert text == "done", text
    return text


def audio_duration(page, selector: str) -> float:
    page.wait_for_function(f"document.querySelector('{selector}').readyState >= 1")
    return page.eval_on_selector(selector, "a => a.duration")


def short_clip(tmp_path, seconds: float) -> Path:
    x, sr = audio.load(ASSETS / "speech16k_fillets-cs.flac")
    return audio.save(tmp_path / "fillets-cs-short.wav", x[:, : int(seconds * sr)], sr)


def test_codec_tab_compresses_and_plays_the_decoded_clip(page, tmp_path):
    page.set_input_files("#codec-file", str(short_clip(tmp_path, 3.0)))
    page.fill("#codec-kbps", "3")
    page.click("#codec-run")
    wait_done(page, "codec-status")
    rows = page.locator("#codec-numbers tbody tr")
    assert rows.first.inner_text().startswith("audiovae speech16k")
    cells = rows.first.locator("td").all_inner_texts()
    assert 0 < float(cells[1]) <= 3 and cells[3].endswith("×") and all(c != "–" for c in cells[4:])
    assert audio_duration(page, "#codec-decoded") == pytest.approx(3.0, abs=0.02)
    assert audio_duration(page, "#codec-original") == pytest.approx(3.0, abs=0.02)
    assert page.get_attribute("#codec-download-avae", "download") == "fillets-cs-short_3kbps.avae"
    assert page.eval_on_selector("#codec-spec-difference", "i => i.complete && i.naturalWidth > 0")
    page.screenshot(path=str(ARTIFACTS / "codec.png"), full_page=True)


def test_bad_upload_shows_the_error_and_the_page_keeps_working(page, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    page.set_input_files("#codec-file", str(bad))
    page.click("#codec-run")
    page.wait_for_function("document.getElementById('codec-status').textContent !== 'working…'")
    assert "notes.wav: not an audio file" in page.inner_text("#codec-status")
    page.set_input_files("#codec-file", str(short_clip(tmp_path, 1.0)))
    page.click("#codec-run")
    wait_done(page, "codec-status")


def test_classify_tab_names_the_languages(page):
    page.click("button[data-tab=classify]")
    clips = sorted(ASSETS.glob("speech16k_*.flac"))
    page.set_input_files("#classify-files", [str(c) for c in clips])
    page.click("#classify-run")
    wait_done(page, "classify-status")
    results = page.locator("#classify-results .clip")
    assert results.count() == len(clips)
    assert results.first.locator(".prediction").first.inner_text().startswith("cs ")
    page.screenshot(path=str(ARTIFACTS / "classify.png"), full_page=True)


def test_latent_map_tab_plots_the_server_set_and_plays_a_point(page):
    page.click("button[data-tab=map]")
    page.click("#map-server")
    page.wait_for_selector("#map-svg circle")
    assert page.locator("#map-svg circle").count() == 2
    assert page.locator("#map-legend span").all_inner_texts() == ["cs", "nl"]
    page.locator("#map-svg circle").first.click()
    assert "/api/latent-map/clip?index=0" in page.get_attribute("#map-audio", "src")
    assert audio_duration(page, "#map-audio") > 1
    page.screenshot(path=str(ARTIFACTS / "latent-map.png"), full_page=True)


@pytest.mark.skipif(HAS_GENERATE, reason="audiovae.generate is installed")
def test_generate_tab_says_generation_is_unavailable(page):
    page.click("button[data-tab=generate]")
    assert "generation is unavailable" in page.inner_text("#gen-status")
    assert page.is_disabled("#gen-run")


@pytest.mark.skipif(not HAS_GENERATE, reason="audiovae.generate is not available on this branch")
def test_generate_tab_samples_a_clip_and_interpolates(page, tmp_path):
    page.click("button[data-tab=generate]")
    page.wait_for_function("!document.getElementById('gen-run').disabled || "
                           "document.getElementById('gen-status').textContent !== ''")
    page.fill("#gen-seconds", "1")
    page.click("#gen-run")
    wait_done(page, "gen-status")
    assert audio_duration(page, "#gen-audio") == pytest.approx(1.0, abs=0.05)
    clip = str(short_clip(tmp_path, 1.0))
    page.set_input_files("#interp-a", clip)
    page.set_input_files("#interp-b", clip)
    page.fill("#interp-steps", "3")
    page.click("#interp-run")
    wait_done(page, "interp-status")
    page.locator("#interp-slider").fill("2")
    assert page.inner_text("#interp-pos") == "3 / 3"
    assert audio_duration(page, "#interp-audio") > 0
    page.screenshot(path=str(ARTIFACTS / "generate.png"), full_page=True)


def test_a_name_rebound_to_this_machine_is_refused(browser, server):
    pg = browser.new_page()
    response = pg.goto(server.replace("127.0.0.1", "rebound.test") + "/api/info")
    assert response.status == 400 and "host name not allowed" in pg.inner_text("body")
    pg.close()


def test_a_form_on_another_origin_cannot_post(browser, server):
    """A page of another origin (the same server under 'localhost') submits a form to the API: refused."""
    pg = browser.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.goto(server.replace("127.0.0.1", "localhost"))
    with pg.expect_navigation():
        pg.evaluate("""url => {
            const f = Object.assign(document.createElement("form"), {method: "POST", action: url,
                                                                     enctype: "multipart/form-data"});
            document.body.appendChild(f);
            f.submit();
        }""", server + "/api/latent-map")
    assert "cross-origin request refused" in pg.inner_text("body")
    pg.close()


def test_the_token_address_sets_the_cookie_and_the_page_works(browser, token_server, tmp_path):
    pg = browser.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.goto(token_server)
    pg.wait_for_function("document.getElementById('codec-status').textContent !== ''")
    assert "needs its token" in pg.inner_text("#codec-status")
    pg.goto(f"{token_server}/?token={TOKEN}")
    pg.wait_for_selector("body[data-ready]")
    assert pg.url == token_server + "/"  # the token left the address bar for an HttpOnly cookie
    assert pg.evaluate("document.cookie") == ""
    pg.set_input_files("#codec-file", str(short_clip(tmp_path, 1.0)))
    pg.click("#codec-run")
    wait_done(pg, "codec-status")
    pg.close()


def test_the_api_docs_render_offline(browser, server):
    """/docs draws the API's operations with Swagger UI from the package, every other host unreachable."""
    pg = browser.new_page()
    pg.set_default_timeout(WAIT_MS)
    outside = []
    pg.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server) else
             (outside.append(route.request.url), route.abort()))
    pg.goto(server + "/docs")
    pg.wait_for_selector(".opblock")
    assert pg.locator(".opblock").count() >= 8 and not outside, outside
    pg.close()
