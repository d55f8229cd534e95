"""``audiovae serve``: the JSON API (OpenAPI at /docs) and the static page, over ``audiovae.app.api``.

Uploads go to temporary files that are deleted after decoding; no request names a path. Requests are
limited in body size and audio length, heavy work runs one job at a time in a worker thread with a
timeout (504; the abandoned job finishes in the background), and bad input gets a 4xx JSON
``{"detail": message}``. Audio and images travel base64-encoded in the JSON.
"""

import base64
import importlib.util
import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import anyio
import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from audiovae import audio
from audiovae.app import api
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


ERRORS = {code: {"model": Error} for code in (400, 404, 413, 415, 501, 504)}


class BodyLimit:
    """ASGI middleware: a JSON 413 for request bodies over ``limit`` bytes, by Content-Length or as they stream."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        detail = f"request body larger than the limit of {self.limit / 2**20:g} MB"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await JSONResponse({"detail": detail}, 413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, detail)
            return message

        await self.app(scope, limited, send)


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
               max_seconds: float = 60.0, timeout_s: float = 120.0) -> FastAPI:
    """The app; ``data`` (a folder or manifest) gives the latent map its own clips."""
    from audiovae.registry import list_models

    models = sorted(list_models(), key=lambda m: m != "speech16k")  # the default first
    classifiers = api.list_classifiers()
    Model = Literal[tuple(models)]
    Clf = Literal[tuple(classifiers)] if classifiers else str
    clip_set = api.ClipSet(Path(data), label) if data is not None else None
    limiter = anyio.CapacityLimiter(1)  # CPU-bound work: one job at a time
    app = FastAPI(title="audiovae", version="1",
                  description="Neural audio codec, classification, generation and latent maps over local uploads.")

    async def run(fn, *args):
        try:
            with anyio.fail_after(timeout_s):
                return await anyio.to_thread.run_sync(partial(fn, *args), limiter=limiter, abandon_on_cancel=True)
        except TimeoutError:
            raise HTTPException(504, f"the request took longer than {timeout_s:g} s") from None
        except api.Unavailable as e:
            raise HTTPException(501, str(e)) from None
        except AudioVAEError as e:
            raise HTTPException(400, str(e)) from None

    async def read(upload: UploadFile) -> tuple[str, np.ndarray, int]:
        name = Path(upload.filename or "upload").name[:100] or "upload"
        ctype = (upload.content_type or "").split(";")[0].strip().lower()
        if not (ctype.startswith("audio/") or ctype in AUDIO_TYPES):
            raise HTTPException(415, f"{name}: content type '{ctype}' is not audio")
        content = await upload.read()
        if not content:
            raise HTTPException(400, f"{name}: empty file (0 bytes)")
        suffix = Path(name).suffix.lower()
        with tempfile.NamedTemporaryFile(prefix="audiovae-upload-", suffix=suffix if suffix in
                                         audio.AUDIO_EXTENSIONS else "") as f:
            f.write(content)
            f.flush()
            try:
                seconds = (await run(audio.info, f.name)).duration
                if seconds > max_seconds:
                    raise HTTPException(413, f"{name}: {seconds:.1f} s of audio, the limit is {max_seconds:g} s")
                wave, sr = await run(audio.load, f.name)
            except HTTPException as e:
                raise HTTPException(e.status_code, e.detail.replace(f.name, name)) from None
        return name, wave, sr

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

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
        _, wave, sr = await read(file)
        return _b64(await run(api.compare_codec, wave, sr, model, kbps))

    @app.post("/api/classify", response_model=list[Prediction], responses=ERRORS)
    async def classify(files: Annotated[list[UploadFile], File()], classifier: Annotated[Clf, Form()] =
                       (classifiers or [""])[0]):
        """Labels with probabilities for each clip, from a shipped classifier."""
        if classifier not in classifiers:
            raise HTTPException(404, f"no classifier '{classifier}' (shipped: {', '.join(classifiers) or 'none'})")
        return await run(api.classify, [await read(f) for f in files], classifier)

    @app.get("/api/generate/info", response_model=GeneratorInfo, responses=ERRORS)
    async def generate_info(model: Annotated[Model, Query()] = models[0]):
        """The generator's rate and labels; 400 for a model without a prior, 501 without generation at all."""
        g = await run(api.generator, model)
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
        return _b64(await run(api.generate, req.model, req.seconds, req.label, req.temperature, req.seed))

    @app.post("/api/interpolate", response_model=Interpolation, responses=ERRORS)
    async def interpolate(file_a: Annotated[UploadFile, File()], file_b: Annotated[UploadFile, File()],
                          model: Annotated[Model, Form()] = models[0], steps: Annotated[int, Form(ge=2, le=16)] = 8):
        """Decoded points on the latent path from one clip to the other."""
        (_, wa, sa), (_, wb, sb) = await read(file_a), await read(file_b)
        return _b64(await run(api.interpolate, model, (wa, sa), (wb, sb), steps))

    @app.get("/api/latent-map", response_model=LatentMap, responses=ERRORS)
    async def latent_map(model: Annotated[Model, Query()] = models[0]):
        """PCA of the embeddings of the server's own clips (started with --data)."""
        if clip_set is None:
            raise HTTPException(404, "this server has no clip set (start it with --data FOLDER_OR_MANIFEST)")
        return await run(clip_set.latent_map, model)

    @app.get("/api/latent-map/clip", responses={200: {"content": {"audio/wav": {}}}, **ERRORS},
             response_class=Response)
    async def latent_clip(index: Annotated[int, Query(ge=0)]):
        """One clip of the server's set, as WAV."""
        if clip_set is None or index >= len(clip_set.items):
            raise HTTPException(404, f"no clip {index}")
        return Response(api.wav_bytes(*await run(clip_set.load, index)), media_type="audio/wav")

    @app.post("/api/latent-map", response_model=LatentMap, responses=ERRORS)
    async def latent_map_upload(files: Annotated[list[UploadFile], File()], model: Annotated[Model, Form()] =
                                models[0], labels: Annotated[list[str], Form()] = ()):
        """PCA of the embeddings of uploaded clips; ``labels`` one per file (default 'upload')."""
        if labels and len(labels) != len(files):
            raise HTTPException(400, f"{len(labels)} labels for {len(files)} files")
        clips = [await read(f) for f in files]
        return await run(api.latent_map, model, clips, list(labels) or ["upload"] * len(clips))

    app.add_middleware(BodyLimit, limit=int(max_upload_mb * 2**20))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    import uvicorn

    uvicorn.run(create_app(**options), host=host, port=port, log_level="info")
