"""The HTTP API and web page of `codeformer serve`, built by `create_app(restorer, config)`.

Routes (every error is JSON `{"error": "<one line>"}` with a 4xx/5xx status):

    GET  /                the web page (static/index.html; its assets under /static, no CDN)
    GET  /healthz         {"status": "ok", "pending": n, "batches": {...}}
    GET  /v1/models       the model behind the server: name, runtime, weights, licence, input size
    POST /v1/restore      multipart form: image (file, required), w (0..1, default 0.5), upscale (1..8),
                          faces (all | largest | center), min_face (px), aligned (bool), draw_boxes (bool),
                          format (png | jpeg | webp | tiff | bmp; default: the input's format, PNG if it has none
                          we write). Answer: JSON {image: base64, media_type, width, height, faces: [...],
                          notes, timings, options} — or, when the Accept header's first type is image/*, the
                          encoded image itself with the report in the X-Codeformer-Report header (JSON) and
                          the face count in X-Codeformer-Faces; an Accept of image/png, image/jpeg or
                          image/webp also picks the format when `format` is not given.
    GET  /openapi.json    the OpenAPI 3 description (errors documented as the Error schema, no 422)
    GET  /docs            a small offline reader of it (FastAPI's own /docs page loads Swagger UI from a CDN)

Statuses: 400 bad form field, unreadable image or too many pixels; 413 body larger than the byte limit; 503 when
`max_pending` restorations are already in progress, or when their estimated memory (`estimated_bytes`: pixels ×
upscale²) leaves no room for this one (a bounded queue; retry after the Retry-After seconds); 404/405 unknown
route or method; 500 a bug (logged), including any error raised inside the pipeline or the model.

FastAPI (on Starlette) + uvicorn: small, pure-Python, installs from PyPI and runs offline, documents the API as
OpenAPI from the endpoint signature, and its test client needs no server. Gradio would pull in a large
frontend and telemetry for one page whose before/after divider needs custom JavaScript anyway.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from codeformer.data.images import ImageReadError, ImageWriteError, encode_image, read_image
from codeformer.face import detection
from codeformer.face.detection import Face, FaceDetector
from codeformer.face.pipeline import W_RANGE, FaceResult, RestoreOptions, Restorer
from codeformer.serve.batcher import BatchingModel
from codeformer.serve.limits import BodyLimit

log = logging.getLogger(__name__)

OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "tif": "TIFF",
                  "bmp": "BMP"}
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff",
               "BMP": "image/bmp"}


def _restore_responses() -> dict[int | str, dict[str, object]]:
    """The documented answers of POST /v1/restore (a fresh dict per app)."""
    return {
        200: {"description": "the restored image and report",
              "content": {"application/json": {}, "image/png": {}, "image/jpeg": {}, "image/webp": {}}},
        400: {"description": "bad field, unreadable image or too many pixels"},
        413: {"description": "request body over the byte limit"},
        503: {"description": "too many restorations in progress (Retry-After: 1)"},
    }


def _openapi_with_json_errors(app: FastAPI) -> dict[str, object]:
    """FastAPI's schema, with its 422 validation answers replaced by what this app sends: 4xx/5xx with an
    Error body {"error": message}."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Error"] = {"type": "object", "required": ["error"], "title": "Error",
                        "properties": {"error": {"type": "string", "title": "one-line message"}}}
    for methods in spec["paths"].values():
        for operation in methods.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
            for code, answer in responses.items():
                if code[0] in "45":
                    answer["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    app.openapi_schema = spec
    return spec


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching. max_bytes: largest upload (the body may carry 64 KiB of form overhead on top);
    max_pixels: largest input (width × height); max_output_pixels: largest output (input × upscale²);
    max_pending: restorations in progress before new ones get 503; max_memory_bytes: their estimated memory
    together (`estimated_bytes`) before new ones get 503 (one that alone needs more gets 400); max_batch: faces per
    model call;
    linger_ms: how long the batcher waits for more faces; model_info: what GET /v1/models reports."""

    max_bytes: int = 20 << 20
    max_pixels: int = 40_000_000
    max_output_pixels: int = 200_000_000
    max_pending: int = 16
    max_memory_bytes: int = 8 << 30
    max_batch: int = 8
    linger_ms: float = 2.0
    model_info: dict[str, object] = field(default_factory=lambda: {"id": "codeformer"})


class ApiError(Exception):
    """An error answered as JSON {"error": message} with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


# Peak memory of one restoration, per pixel: measured +3.1 GB for a ×8 upscale of a 1200² photo (92 million
# output pixels, about 34 bytes each: float32 RGB canvases and the paste masks at the output size); the input
# side holds its decoded and float copies. An estimate to admit by, not a bound.
BYTES_PER_OUTPUT_PIXEL = 36
BYTES_PER_INPUT_PIXEL = 24
BYTES_PER_REQUEST = 64 << 20  # the face crops, the model's activations at batch 1 on the CPU, the encoded answer


def estimated_bytes(width: int, height: int, upscale: int) -> int:
    """Memory one restoration of a width×height photo at `upscale` is expected to take at its peak."""
    pixels = width * height
    return BYTES_PER_REQUEST + BYTES_PER_INPUT_PIXEL * pixels + BYTES_PER_OUTPUT_PIXEL * pixels * upscale**2


class _Admission:
    """At most `limit` restorations at once, and their estimated memory together at most `budget` bytes; more
    are refused (503 + Retry-After) rather than queued without bound or let run the machine out of memory."""

    def __init__(self, limit: int, budget: int) -> None:
        self.limit, self.budget = limit, budget
        self.count = 0
        self.reserved = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count -= 1

    def try_reserve(self, nbytes: int) -> bool:
        """Hold `nbytes` of the budget if they fit beside what is held now."""
        with self._lock:
            if self.reserved + nbytes > self.budget:
                return False
            self.reserved += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.reserved -= nbytes


class _LockedDetector:
    """One detection at a time: dlib models are loaded lazily and are not documented as thread-safe."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        with self._lock:
            return self.detector.detect(rgb, min_face=min_face)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def _wants_image(accept: str) -> str | None:
    """The first media range of an Accept header if it is image/* or a specific image type, else None."""
    first = accept.split(",")[0].split(";")[0].strip().lower()
    return first if first.startswith("image/") else None


def _output_format(requested: str | None, accept_image: str | None, input_format: str) -> str:
    if requested:
        key = requested.lower().lstrip(".")
        if key not in OUTPUT_FORMATS:
            raise ApiError(400, f"format: must be one of {', '.join(sorted(OUTPUT_FORMATS))}, got {requested!r}")
        return OUTPUT_FORMATS[key]
    by_type = {v: k for k, v in MEDIA_TYPES.items()}
    if accept_image in by_type:
        return by_type[accept_image]
    return input_format if input_format in MEDIA_TYPES else "PNG"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def create_app(restorer: Restorer, config: ServeConfig | None = None) -> FastAPI:
    """The ASGI app serving `restorer` (its model, detector, device and default options are used; the model
    is wrapped in a `BatchingModel`). Nothing is shared between two apps."""
    cfg = config or ServeConfig()
    batcher = BatchingModel(restorer.model, max_batch=cfg.max_batch, linger_s=cfg.linger_ms / 1000.0)
    detector = _LockedDetector(restorer.detector or detection.make_detector())
    shared = Restorer(batcher, detector=detector, device=restorer.device, options=restorer.options)
    admission = _Admission(cfg.max_pending, cfg.max_memory_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()  # finish queued faces, stop the worker thread

    app = FastAPI(title="codeformer", version="1", docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  lifespan=lifespan,
                  description="Blind face restoration (CodeFormer). Every error is JSON {\"error\": message}.")
    app.add_middleware(BodyLimit, max_bytes=cfg.max_bytes + (64 << 10))
    app.state.batcher = batcher  # for /healthz-like introspection in tests and tools
    app.openapi = lambda: _openapi_with_json_errors(app)  # type: ignore[method-assign]
    _install_error_handlers(app)
    static = resources.files("codeformer.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(str(static / "docs.html"), media_type="text/html")

    @app.get("/healthz", summary="liveness and queue state")
    def healthz() -> dict[str, object]:
        return {"status": "ok", "in_progress": admission.count, "max_pending": cfg.max_pending,
                "reserved_bytes": admission.reserved, "max_memory_bytes": cfg.max_memory_bytes,
                "batches": asdict(batcher.stats)}

    @app.get("/v1/models", summary="the model behind this server")
    def models() -> dict[str, object]:
        return {"models": [dict(cfg.model_info)]}

    @app.post("/v1/restore", summary="restore the faces of one photo", responses=_restore_responses(),
              description="JSON {image: base64, media_type, width, height, faces, notes, timings, options} by "
                          "default; the image itself (report in the X-Codeformer-Report header) when the "
                          "Accept header's first type is image/*.")
    def restore(request: Request,
                image: Annotated[UploadFile, File(description="the photo (PNG, JPEG, WEBP, TIFF, BMP, ...)")],
                w: Annotated[float, Form(ge=W_RANGE[0], le=W_RANGE[1], description="fidelity: 0 most restored "
                                                                                   ".. 1 closest to the input")] = 0.5,
                upscale: Annotated[int, Form(ge=1, le=8, description="integer output scale")] = 1,
                faces: Annotated[str, Form(pattern="^(all|largest|center)$",
                                           description="which faces: all, largest or center")] = "all",
                min_face: Annotated[float, Form(ge=0.0, description="smallest face box side (px)")] = 32.0,
                aligned: Annotated[bool, Form(description="the image is an aligned face crop")] = False,
                draw_boxes: Annotated[bool, Form(description="green box around each face")] = False,
                format: Annotated[str | None, Form(description="png, jpeg, webp, tiff or bmp (default: the "
                                                               "input's)")] = None,
                ) -> Response:
        if not admission.try_enter():
            raise ApiError(503, f"server busy: {cfg.max_pending} restorations in progress; retry shortly",
                           {"Retry-After": "1"})
        try:
            try:
                opts = RestoreOptions(w=w, upscale=upscale, faces=faces, min_face=min_face, aligned=aligned,
                                      batch_size=cfg.max_batch, draw_boxes=draw_boxes, adain=True)
            except ValueError as exc:  # the client's field values
                raise ApiError(400, str(exc)) from exc
            return _restore(shared, cfg, admission, request, image, opts, format)
        finally:
            admission.leave()

    return app


def face_record(face: FaceResult) -> dict[str, object]:
    """The JSON report of one restored face (input pixels): box, detector and its score, 5 points, face size, w."""
    return {"box": [round(float(v), 2) for v in face.box], "score": round(float(face.score), 4),
            "detector": face.detector,
            "landmarks5": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks5],
            "face_size": round(float(face.face_size), 2), "w": face.w}


def _restore(restorer: Restorer, cfg: ServeConfig, admission: _Admission, request: Request, upload: UploadFile,
             opts: RestoreOptions, requested_format: str | None) -> Response:
    accept_image = _wants_image(request.headers.get("accept", ""))
    data = upload.file.read(cfg.max_bytes + 1)
    if len(data) > cfg.max_bytes:
        raise ApiError(413, f"image: larger than the limit of {cfg.max_bytes} bytes")
    name = upload.filename or "image"
    try:
        pic = read_image(data, name=name, max_pixels=cfg.max_pixels)
    except ImageReadError as exc:
        raise ApiError(400, str(exc)) from exc
    height, width = pic.pixels.shape[:2]
    if width * height * opts.upscale**2 > cfg.max_output_pixels:
        raise ApiError(400, f"{name}: output would have {width * height * opts.upscale**2} pixels, more than the "
                            f"limit of {cfg.max_output_pixels}; use a smaller upscale")
    fmt = _output_format(requested_format, accept_image, pic.format)
    cost = estimated_bytes(width, height, opts.upscale)
    if cost > cfg.max_memory_bytes:
        raise ApiError(400, f"{name}: restoring {width}×{height} at upscale {opts.upscale} needs about "
                            f"{cost / 2**30:.1f} GiB, more than this server's {cfg.max_memory_bytes / 2**30:.1f} "
                            "GiB; use a smaller upscale")
    if not admission.try_reserve(cost):
        raise ApiError(503, f"server busy: the restorations in progress hold its memory budget; retry shortly "
                            f"(this one needs about {cost / 2**30:.2f} GiB)", {"Retry-After": "2"})
    try:
        # A ValueError from here on is a bug in the pipeline or the model, not the client's: it reaches the
        # 500 handler, which logs it.
        result = restorer.restore(pic, opts)
        try:
            encoded = encode_image(result.image, fmt, name=name)
        except ImageWriteError as exc:  # the format the client chose cannot hold this image (e.g. WEBP's size cap)
            raise ApiError(400, str(exc)) from exc
    finally:
        admission.release(cost)
    notes = [pic.note] if pic.note else []
    out_height, out_width = (result.image.pixels if hasattr(result.image, "pixels") else result.image).shape[:2]
    report = {"width": int(out_width), "height": int(out_height), "faces": [face_record(f) for f in result.faces],
              "notes": notes, "timings": {k: round(v, 4) for k, v in result.timings.items()},
              "options": {"w": opts.w, "upscale": opts.upscale, "faces": opts.faces, "aligned": opts.aligned}}
    media_type = MEDIA_TYPES[fmt]
    if accept_image:
        headers = {"X-Codeformer-Faces": str(len(result.faces)),
                   "X-Codeformer-Report": json.dumps(report, separators=(",", ":"), ensure_ascii=True)}
        return Response(encoded, media_type=media_type, headers=headers)
    body = {"image": base64.b64encode(encoded).decode("ascii"), "media_type": media_type, **report}
    return JSONResponse(body)
