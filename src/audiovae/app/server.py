"""``audiovae serve``: the JSON API (OpenAPI at /docs) and the static page, over ``audiovae.app.api``.

Security model: served only under loopback Host names and those allowed (``Guard``: against DNS
rebinding), state-changing requests only from the page's own origin (against CSRF), and with a token (needed
off loopback) only for requests that carry it. Uploads are decoded from memory (``uploads``: never a path, no
decoder that opens other files, stopped past ``max_seconds``); bodies are limited in size and read time,
request heads in read time (``HeadTimeout``). Heavy work runs one job at a time with a queue (503 when full)
and a processing timeout (504) that kills the job's subprocesses. Errors are 4xx JSON ``{"detail": message}``
naming uploads, never server paths. Audio and images travel base64-encoded in the JSON.
"""

import asyncio
import base64
import importlib.util
import math
import re
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import anyio
import numpy as np
import uvicorn
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from uvicorn.protocols.http.h11_impl import H11Protocol

from audiovae.app import api, uploads
from audiovae.errors import AudioVAEError

STATIC = Path(__file__).parent / "static"
# Request part types taken as audio; browsers send audio/*, or octet-stream for unknown extensions.
AUDIO_TYPES = ("application/octet-stream", "application/ogg", "video/ogg", "video/webm", "")


class Error(BaseModel):
    detail: str


class Scores(BaseModel):
    pesq: float | None = Field(description="wideband PESQ (MOS-LQO)")
    stoi: float | None
    si_sdr: float | None = Field(description="dB")
    mel_distance: float | None = Field(description="log-mel L1, lower is better")


class Spectrograms(BaseModel):
    original: str = Field(description="base64 PNG")
    decoded: str
    difference: str


class OpusResult(BaseModel):
    target_kbps: float
    kbps: float
    bytes: int
    size_ratio: float = Field(description="16-bit PCM size of the mono mix / bytes")
    metrics: Scores
    wav: str = Field(description="base64 WAV")
    spectrogram: str


class CodecResult(BaseModel):
    model: str
    target_kbps: float
    quality: int
    kbps: float = Field(description="measured from the .avae size, container included")
    bytes: int
    pcm_bytes: int = Field(description="size as 16-bit PCM")
    size_ratio: float = Field(description="pcm_bytes / bytes")
    seconds: float
    sample_rate: int
    channels: int
    metrics: Scores
    original_wav: str = Field(description="base64 WAV")
    decoded_wav: str
    avae: str = Field(description="base64 .avae file")
    spectrograms: Spectrograms
    opus: OpusResult | None = Field(description="Opus at the same bitrate (>= 6 kbps); null without opusenc")
    extension_kbps: float = Field(description="the bandwidth extension's share of kbps (0: the upload's rate has "
                                  "no band above the model's)")


class LabelProbability(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    name: str
    labels: list[LabelProbability]


class Info(BaseModel):
    models: list[str]
    classifiers: list[str]
    opus: bool
    generate: bool = Field(description="whether the generation module is installed (a model may still lack a prior)")
    latent_clips: int = Field(description="clips of the server's own set for the latent map (0: none)")
    max_upload_mb: float
    max_seconds: float


class GeneratorInfo(BaseModel):
    sample_rate: int
    labels: list[str]


class Generated(BaseModel):
    sample_rate: int
    seconds: float
    wav: str = Field(description="base64 WAV")
    spectrogram: str = Field(description="base64 PNG")


class Interpolation(BaseModel):
    sample_rate: int
    wavs: list[str] = Field(description="base64 WAVs from the first clip to the second")


class Point(BaseModel):
    x: float
    y: float
    label: str
    name: str


class LatentMap(BaseModel):
    model: str
    explained_variance: list[float]
    points: list[Point]


ERRORS = {code: {"model": Error} for code in (400, 401, 403, 404, 408, 413, 415, 501, 503, 504)}
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")  # Host names always allowed
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
COOKIE = "audiovae_token"
NEEDS_TOKEN = ("this server needs its token: open the address that 'audiovae serve' printed (/?token=...), "
               "or send 'Authorization: Bearer TOKEN'")


def host_name(value: str) -> str:
    """A Host header or a name without its port, lower case, IPv6 in brackets; '' if malformed."""
    value = value.strip().lower()
    if value.count(":") > 1 and not value.startswith("["):
        value = f"[{value}]"  # a bare IPv6 address (from --allow-host or --host)
    m = re.fullmatch(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:[0-9]{1,5})?", value)
    return m.group(1) if m else ""


def access(host: str, allow_hosts: list[str], token: str | None) -> tuple[list[str], str | None]:
    """The Host names to serve (loopback, ``allow_hosts``, a specific bind address) and the token: the given
    one, else a new one when ``host`` is not loopback."""
    names = [*LOOPBACK, *map(host_name, allow_hosts)]
    if host_name(host) not in (*LOOPBACK, "0.0.0.0", "[::]"):
        names.append(host_name(host))
    if token is None and host_name(host) not in LOOPBACK:
        token = secrets.token_urlsafe(24)
    return [n for n in dict.fromkeys(names) if n], token


class Guard:
    """ASGI middleware against other sites and other machines: only ``hosts`` in the Host header (DNS
    rebinding), state-changing requests only from the page's own origin (CSRF), and with a ``token`` every
    request but the page and its assets carries it, as ``Authorization: Bearer`` or as the cookie (HttpOnly,
    SameSite=Strict) that opening ``/?token=TOKEN`` sets."""

    def __init__(self, app, hosts: list[str], token: str | None):
        self.app, self.hosts, self.token = app, frozenset(hosts), token

    async def __call__(self, scope, receive, send):
        refusal = self.check(scope) if scope["type"] == "http" else None
        await (refusal or self.app)(scope, receive, send)

    def check(self, scope) -> Response | None:
        """The response that refuses this request, or None to serve it."""
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        if host_name(host) not in self.hosts:
            return JSONResponse({"detail": "host name not allowed (see audiovae serve --allow-host)"}, 400)
        origin = headers.get("origin")
        if scope["method"] not in SAFE_METHODS and (
                (origin is not None and origin.lower() not in (f"http://{host}", f"https://{host}"))
                or headers.get("sec-fetch-site", "none") not in ("same-origin", "none")):
            return JSONResponse({"detail": "cross-origin request refused"}, 403)
        if self.token is None:
            return None
        request = Request(scope)
        if scope["path"] == "/" and "token" in request.query_params:
            if not self.valid(request.query_params["token"]):
                return JSONResponse({"detail": "wrong token"}, 401)
            response = RedirectResponse("/", 303)  # the token leaves the address bar for the cookie
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return response
        if scope["path"] == "/" or scope["path"].startswith("/static/"):
            return None
        auth = headers.get("authorization", "")
        if not self.valid(auth[7:] if auth[:7].lower() == "bearer " else request.cookies.get(COOKIE, "")):
            return JSONResponse({"detail": NEEDS_TOKEN}, 401, headers={"WWW-Authenticate": "Bearer"})
        return None

    def valid(self, given: str) -> bool:
        return secrets.compare_digest(given.encode(), self.token.encode())


class BodyLimit:
    """ASGI middleware: a JSON 413 for request bodies over ``limit`` bytes (by Content-Length or as they
    stream), a 408 for a body not complete ``timeout_s`` after the request began (a client trickling bytes)."""

    def __init__(self, app, limit: int, timeout_s: float):
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        detail = f"request body larger than the limit of {self.limit / 2**20:g} MB"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await JSONResponse({"detail": detail}, 413)(scope, receive, send)
        seen, complete, deadline = 0, False, anyio.current_time() + self.timeout_s

        async def limited():
            nonlocal seen, complete
            if complete:
                return await receive()
            try:
                with anyio.fail_after(deadline - anyio.current_time()):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the request body took longer than {self.timeout_s:g} s") from None
            seen += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if seen > self.limit:
                raise HTTPException(413, detail)
            return message

        await self.app(scope, limited, send)


class Jobs:
    """Heavy work, one job at a time in its own thread, ``queue`` more waiting (503 beyond). A job has
    ``timeout_s`` once it starts (504); then its subprocesses are killed, and the next job waits until the
    abandoned thread has ended (Python code cannot be stopped; its input is bounded). A job whose request
    went away while it waited is skipped."""

    def __init__(self, timeout_s: float, queue: int):
        self.timeout_s, self.queue = timeout_s, queue
        self.slot, self.lock = threading.Lock(), threading.Lock()
        self.pending = 0  # jobs whose thread has not ended: one at work, the others waiting

    async def run(self, work: Callable[[uploads.Job], object]):
        """``work(job)`` in a worker thread; library errors become 4xx/5xx ``HTTPException``s."""
        with self.lock:
            if self.pending > self.queue:
                raise HTTPException(503, "the server is busy, try again later",
                                    headers={"Retry-After": str(math.ceil(self.timeout_s))})
            self.pending += 1
        job, started, result = uploads.Job(), threading.Event(), Future()
        threading.Thread(target=self._thread, args=(work, job, started, result), daemon=True).start()
        try:
            await anyio.to_thread.run_sync(started.wait, abandon_on_cancel=True)
            with anyio.fail_after(self.timeout_s):
                await anyio.to_thread.run_sync(wait, [result], abandon_on_cancel=True)
        except TimeoutError:
            raise HTTPException(504, f"the request took longer than {self.timeout_s:g} s") from None
        finally:
            if not result.done():
                job.abandon()
        try:
            return result.result()
        except uploads.TooLong as e:
            raise HTTPException(413, str(e)) from None
        except api.Unavailable as e:
            raise HTTPException(501, str(e)) from None
        except AudioVAEError as e:
            raise HTTPException(400, str(e)) from None

    def _thread(self, work, job: uploads.Job, started: threading.Event, result: Future) -> None:
        with self.slot:
            started.set()
            try:
                if job.abandoned:
                    result.cancel()
                else:
                    result.set_result(work(job))
            except BaseException as e:  # handed to the request that waits for it
                result.set_exception(e)
            finally:
                with self.lock:
                    self.pending -= 1


class HeadTimeout(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head: uvicorn's keep-alive timeout stops at
    a request's first byte, so a client that trickles its headers, or never ends them, would hold a connection."""

    def __init__(self, *args, head_timeout_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_timeout_s = head_timeout_s
        self.head_timer: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.head_timer = self.loop.call_later(self.head_timeout_s, self.transport.close)

    def connection_made(self, transport):
        super().connection_made(transport)
        self.arm()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's head is complete
            self.head_timer.cancel()

    def on_response_complete(self) -> None:
        self.arm()  # before the next request, which may be pipelined and start (and disarm) right away
        super().on_response_complete()

    def connection_lost(self, exc):
        self.head_timer.cancel()
        super().connection_lost(exc)


def _b64(obj):
    """Bytes anywhere in a result -> base64 text."""
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, dict):
        return {k: _b64(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_b64(v) for v in obj]
    return obj


def create_app(data: Path | None = None, label: str | None = None, max_upload_mb: float = 20.0,
               max_seconds: float = 60.0, timeout_s: float = 120.0, queue: int = 8, read_timeout_s: float = 30.0,
               hosts: list[str] = LOOPBACK, token: str | None = None) -> FastAPI:
    """The app; ``data`` (a folder or manifest) gives the latent map its own clips. Only ``hosts`` are served,
    and with a ``token`` every API request must carry it (see ``Guard``)."""
    from audiovae.registry import list_models

    models = sorted(list_models(), key=lambda m: m != "speech16k")  # the default first
    classifiers = api.list_classifiers()
    Model = Literal[tuple(models)]
    Clf = Literal[tuple(classifiers)] if classifiers else str
    clip_set = api.ClipSet(Path(data), label) if data is not None else None
    jobs = Jobs(timeout_s, queue)
    app = FastAPI(title="audiovae", version="1", docs_url=None, redoc_url=None,
                  description="Neural audio codec, classification, generation and latent maps over local uploads.")
    app.state.jobs = jobs
    run = jobs.run

    async def read(upload: UploadFile) -> tuple[str, bytes]:
        """The upload's name (no folders) and bytes, once its content type says audio."""
        name = Path(upload.filename or "upload").name[:100] or "upload"
        ctype = (upload.content_type or "").split(";")[0].strip().lower()
        if not (ctype.startswith("audio/") or ctype in AUDIO_TYPES):
            raise HTTPException(415, f"{name}: content type '{ctype}' is not audio")
        return name, await upload.read()

    def decode(upload: tuple[str, bytes], job: uploads.Job) -> tuple[str, np.ndarray, int]:
        name, data = upload
        return name, *uploads.decode(data, name, max_seconds, job)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs():
        """Swagger UI from the package (static/swagger), so that it works offline."""
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="audiovae API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")

    @app.get("/api/info", response_model=Info)
    def info():
        """What this server offers: models, classifiers, Opus, generation, the latent set, limits."""
        return {"models": models, "classifiers": classifiers, "opus": api.opus_available(),
                "generate": importlib.util.find_spec("audiovae.generate") is not None,
                "latent_clips": len(clip_set.items) if clip_set else 0, "max_upload_mb": max_upload_mb,
                "max_seconds": max_seconds}

    @app.post("/api/codec", response_model=CodecResult, responses=ERRORS)
    async def codec(file: Annotated[UploadFile, File()], model: Annotated[Model, Form()] = models[0],
                    kbps: Annotated[float, Form(gt=0, le=64)] = 6.0):
        """Compress a clip at a target bitrate and compare the decoded audio (and Opus) with it."""
        clip = await read(file)
        return _b64(await run(lambda job: api.compare_codec(*decode(clip, job)[1:], model, kbps)))

    @app.post("/api/classify", response_model=list[Prediction], responses=ERRORS)
    async def classify(files: Annotated[list[UploadFile], File()], classifier: Annotated[Clf, Form()] =
                       (classifiers or [""])[0]):
        """Labels with probabilities for each clip, from a shipped classifier."""
        if classifier not in classifiers:
            raise HTTPException(404, f"no classifier '{classifier}' (shipped: {', '.join(classifiers) or 'none'})")
        clips = [await read(f) for f in files]
        return await run(lambda job: api.classify([decode(c, job) for c in clips], classifier))

    @app.get("/api/generate/info", response_model=GeneratorInfo, responses=ERRORS)
    async def generate_info(model: Annotated[Model, Query()] = models[0]):
        """The generator's rate and labels; 400 for a model without a prior, 501 without generation at all."""
        g = await run(lambda _: api.generator(model))
        return {"sample_rate": g.sample_rate, "labels": list(g.labels)}

    class GenerateRequest(BaseModel):
        model: Model = models[0]
        seconds: float = Field(4.0, gt=0, le=30)
        label: str | None = None
        temperature: float = Field(1.0, gt=0, le=2)
        seed: int = Field(0, ge=0, lt=2**32)

    @app.post("/api/generate", response_model=Generated, responses=ERRORS)
    async def generate(req: GenerateRequest):
        """Sample a clip from the model's latent prior."""
        return _b64(await run(lambda _: api.generate(req.model, req.seconds, req.label, req.temperature, req.seed)))

    @app.post("/api/interpolate", response_model=Interpolation, responses=ERRORS)
    async def interpolate(file_a: Annotated[UploadFile, File()], file_b: Annotated[UploadFile, File()],
                          model: Annotated[Model, Form()] = models[0], steps: Annotated[int, Form(ge=2, le=16)] = 8):
        """Decoded points on the latent path from one clip to the other."""
        a, b = await read(file_a), await read(file_b)
        return _b64(await run(lambda job: api.interpolate(model, decode(a, job)[1:], decode(b, job)[1:], steps)))

    @app.get("/api/latent-map", response_model=LatentMap, responses=ERRORS)
    async def latent_map(model: Annotated[Model, Query()] = models[0]):
        """PCA of the embeddings of the server's own clips (started with --data)."""
        if clip_set is None:
            raise HTTPException(404, "this server has no clip set (start it with --data FOLDER_OR_MANIFEST)")
        return await run(lambda _: clip_set.latent_map(model))

    @app.get("/api/latent-map/clip", responses={200: {"content": {"audio/wav": {}}}, **ERRORS},
             response_class=Response)
    async def latent_clip(index: Annotated[int, Query(ge=0)]):
        """One clip of the server's set, as WAV."""
        if clip_set is None or index >= len(clip_set.items):
            raise HTTPException(404, f"no clip {index}")
        return Response(api.wav_bytes(*await run(lambda _: clip_set.load(index))), media_type="audio/wav")

    @app.post("/api/latent-map", response_model=LatentMap, responses=ERRORS)
    async def latent_map_upload(files: Annotated[list[UploadFile], File()], model: Annotated[Model, Form()] =
                                models[0], labels: Annotated[list[str], Form()] = ()):
        """PCA of the embeddings of uploaded clips; ``labels`` one per file (default 'upload')."""
        if labels and len(labels) != len(files):
            raise HTTPException(400, f"{len(labels)} labels for {len(files)} files")
        clips = [await read(f) for f in files]
        return await run(lambda job: api.latent_map(model, [decode(c, job) for c in clips],
                                                    list(labels) or ["upload"] * len(clips)))

    app.add_middleware(BodyLimit, limit=int(max_upload_mb * 2**20), timeout_s=read_timeout_s)
    app.add_middleware(Guard, hosts=list(hosts), token=token)  # outermost: checked first
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def uvicorn_config(app: FastAPI, host: str, port: int, read_timeout_s: float = 30.0) -> uvicorn.Config:
    """uvicorn's settings for ``app``: h11 with a deadline for request heads, idle connections closed after
    5 s, at most 64 connections (503 beyond)."""
    return uvicorn.Config(app, host=host, port=port, log_level="info", http=partial(HeadTimeout,
                          head_timeout_s=read_timeout_s), timeout_keep_alive=5, limit_concurrency=64)


def serve(host: str = "127.0.0.1", port: int = 8000, read_timeout_s: float = 30.0, **options) -> None:
    uvicorn.Server(uvicorn_config(create_app(read_timeout_s=read_timeout_s, **options), host, port,
                                  read_timeout_s)).run()
