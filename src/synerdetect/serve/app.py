"""The HTTP service: :func:`create_app` builds a FastAPI app around a :class:`~synerdetect.engine.scoring.Scorer`.

Endpoints:

- ``POST /v1/detect``: images as multipart file fields (``files``; any file field counts) or one image as the raw
  body (``image/*``, ``application/octet-stream``; name it with ``?name=`` or ``X-Filename``). Answers
  ``{"results": [record, ...], "n_images", "n_scored", "n_errors", "timings"}`` with one
  :mod:`~synerdetect.engine.scoring` record per image (plus ``timings.queue_ms``). A bad file gets its own
  ``error`` / ``error_kind`` and the others are still scored; when no image of the request could be scored the
  answer is an error (413 too large, 415 not an image, 422 corrupt or too many pixels, 400 empty) that still
  carries ``results``.
- ``GET /healthz`` (the process answers), ``GET /readyz`` (model loaded and warmed up, else 503),
  ``GET /v1/model`` (preset, base models, calibration, package version, device, limits), ``GET /metrics``
  (Prometheus), ``GET /`` (the web page), ``GET /docs`` (OpenAPI).

Every error is ``{"status", "error", "message"}`` JSON with that HTTP status; no traceback reaches a client.
Decoding runs in a small thread pool and the model only on the batcher's worker thread (never on the event loop).
Use the app inside its lifespan (``uvicorn.run(app)``, or ``with TestClient(app)``): that starts the worker and
the warm-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from tempfile import SpooledTemporaryFile
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from .. import __version__
from ..engine.scoring import Prepared, Scorer
from .batcher import MicroBatcher, QueueFull, ShuttingDown
from .limits import ERROR_NAMES, STATUS_BY_KIND, ApiError, ServeSettings, api_key_ok
from .metrics import CONTENT_TYPE_LATEST, Metrics

__all__ = ["create_app"]

log = logging.getLogger(__name__)

DOCS_ASSETS = "/docs-assets"
KNOWN_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/v1/detect", "/v1/model", "/docs", "/redoc", "/openapi.json"}
)
SPOOL_BYTES = 1 << 20  # request bodies beyond this go to a temporary file, not memory
RAW_TYPES_REFUSED = ("text/", "application/json", "application/xml", "application/javascript")

PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)

DETECT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "no image in the request, malformed multipart, or an empty file"},
    401: {"description": "missing or wrong API key (when the server has one)"},
    408: {"description": "the request body did not arrive in time"},
    413: {"description": "a file or the request is too large, or too many files"},
    415: {"description": "not an image (or a text/JSON body)"},
    422: {"description": "corrupt or truncated image, or too many pixels"},
    429: {"description": "queue full or too many requests in flight: retry after Retry-After seconds"},
    503: {"description": "timed out waiting for the model, or shutting down"},
}


@dataclass
class _Upload:
    name: str
    file: Any  # a binary file object (spooled)
    size: int | None


def _page() -> str:
    try:
        return resources.files("synerdetect.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError):  # installed without its package data
        return (
            "<!doctype html><meta charset=utf-8><title>SynerDetect</title><p>The web page is not installed; "
            "the API is at <code>POST /v1/detect</code> (see <a href=/docs>/docs</a>)."
        )


class _Guard:
    """Outermost handler of the app: request metrics, and a JSON 500 for any exception nothing else handled."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in KNOWN_PATHS else DOCS_ASSETS if path.startswith(DOCS_ASSETS + "/") else "other"
        start = time.perf_counter()
        state = {"status": 500, "started": False}

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:  # noqa: BLE001 - logged here, never shown to the client
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            self.metrics.errors.labels("internal").inc()
            if not state["started"]:
                body = {"status": 500, "error": "internal", "message": "internal server error (see the server log)"}
                await JSONResponse(body, status_code=500)(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(endpoint, scope.get("method", ""), str(state["status"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise ApiError(413, "request_too_large", f"request body larger than the {limit} byte limit")
        yield chunk


def create_app(scorer: Scorer, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``scorer`` under ``settings`` (see :class:`~synerdetect.serve.limits.ServeSettings`).

    ``app.state`` holds ``scorer``, ``settings``, ``batcher`` (:class:`~synerdetect.serve.batcher.MicroBatcher`)
    and ``metrics`` (:class:`~synerdetect.serve.metrics.Metrics`).

    On CPU, build ``scorer`` off the main thread (as ``synerdetect serve`` does): a model loaded on the main thread
    ran its forward passes on the batcher's worker thread about twice as slowly (OpenMP thread teams)."""
    settings = settings or ServeSettings()
    decoder = scorer.decoder.with_limits(max_pixels=settings.max_pixels, max_bytes=settings.max_file_bytes)
    metrics = Metrics()
    batcher = MicroBatcher(
        scorer.forward,
        max_batch=settings.max_batch,
        max_wait_s=settings.max_wait_ms / 1e3,
        max_queue=settings.max_queue,
        on_batch=metrics.on_batch,
    )
    metrics.bind_queue_depth(lambda: batcher.depth)
    info = {**scorer.info(), "max_pixels": decoder.max_pixels, "max_bytes": decoder.max_bytes}
    page = _page()
    retry = {"Retry-After": str(settings.retry_after_s)}
    runtime: dict[str, Any] = {"inflight": 0, "pool": None, "warmup_ms": None}

    def warmup() -> None:
        runtime["warmup_ms"] = scorer.warmup()
        metrics.ready.set(1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime["pool"] = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="synerdetect-decode")
        batcher.start(warmup=warmup)
        try:
            yield
        finally:
            batcher.stop()
            runtime["pool"].shutdown(wait=False, cancel_futures=True)

    # FastAPIOffline: FastAPI whose /docs and /redoc serve Swagger UI and ReDoc from the installed package (FastAPI's
    # own pages load them from a CDN, blank on an offline machine)
    app = FastAPIOffline(
        title="SynerDetect",
        version=__version__,
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        description="Detect AI-generated images (SynerDetect: CLIP + Stable Diffusion, Eq. 10 scores, "
        "calibrated probability and provenance evidence).",
    )
    app.state.scorer, app.state.settings, app.state.batcher, app.state.metrics = scorer, settings, batcher, metrics
    if settings.cors_origins:  # off unless asked for: then only the named origins, only GET/POST
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Filename"],
        )
    app.add_middleware(_Guard, metrics=metrics)

    # ------------------------------------------------------------------ errors: JSON, no traceback
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        metrics.errors.labels(exc.error).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = ERROR_NAMES.get(exc.status_code, "http_error")
        metrics.errors.labels(name).inc()
        return JSONResponse(
            {"status": exc.status_code, "error": name, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("validation").inc()
        where = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5])
        return JSONResponse(
            {"status": 422, "error": "validation", "message": where or "invalid request"}, status_code=422
        )

    async def require_key(request: Request) -> None:
        if not api_key_ok(settings.api_keys, request.headers.get("authorization"), request.headers.get("x-api-key")):
            raise ApiError(
                401,
                "unauthorized",
                "missing or invalid API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                headers={"WWW-Authenticate": 'Bearer realm="synerdetect"'},
            )

    # ------------------------------------------------------------------ plain endpoints
    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": PAGE_CSP,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    def is_ready() -> tuple[bool, str]:
        if not batcher.alive and not batcher.ready.is_set():
            return False, "the model worker is not running"
        if not batcher.ready.is_set():
            return False, "the model is warming up"
        if batcher.warmup_error:
            return False, f"warm-up failed: {batcher.warmup_error}"
        if not batcher.alive:
            return False, "the model worker stopped"
        return True, "ready"

    @app.get("/readyz", summary="the model is loaded and warmed up (503 until then)")
    async def readyz() -> dict:
        ok, why = is_ready()
        if not ok:
            raise ApiError(503, "not_ready", why, headers=retry)
        return {"status": "ready", "warmup_ms": runtime["warmup_ms"]}

    @app.get("/v1/model", dependencies=[Depends(require_key)], summary="what is loaded, and the limits")
    async def model_info() -> dict:
        return {**info, "ready": is_ready()[0], "queue_depth": batcher.depth, "limits": settings.public()}

    @app.get("/metrics", dependencies=[Depends(require_key)], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ detect
    async def read_uploads(request: Request) -> tuple[list[_Upload], list[Any]]:
        """The request's images (spooled to disk beyond 1 MB) and what to close afterwards."""
        mtype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        multipart = mtype == "multipart/form-data"
        length = request.headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise ApiError(400, "bad_request", f"invalid Content-Length {length!r}") from None
            if multipart and n > settings.max_request_bytes:
                raise ApiError(
                    413,
                    "request_too_large",
                    f"request body of {n} bytes is larger than the {settings.max_request_bytes} byte limit",
                )
            if not multipart and n > settings.max_file_bytes:
                raise ApiError(
                    413, "too_large", f"image of {n} bytes is larger than the {settings.max_file_bytes} byte limit"
                )
        if multipart:
            parser = MultiPartParser(
                request.headers,
                _limited(request.stream(), settings.max_request_bytes),
                max_files=settings.max_files,
                max_fields=64,
                max_part_size=64 * 1024,
            )
            try:
                form = await parser.parse()
            except MultiPartException as e:
                if "too many files" in e.message.lower():
                    raise ApiError(
                        413,
                        "too_many_files",
                        f"more than {settings.max_files} files in one request (split them over several requests)",
                    ) from None
                raise ApiError(400, "bad_request", f"malformed multipart body: {e.message}") from None
            uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if not uploads:
                await form.close()
                raise ApiError(
                    400,
                    "no_files",
                    "no image in the request: send multipart file fields named 'files' or one image as the raw body",
                )
            return [_Upload(u.filename or f"file-{i}", u.file, u.size) for i, u in enumerate(uploads)], [form]
        if mtype and mtype.startswith(RAW_TYPES_REFUSED):
            raise ApiError(
                415,
                "unsupported_media_type",
                f"Content-Type {mtype} is not an image: send image bytes "
                "(image/*, application/octet-stream) or multipart/form-data with 'files'",
            )
        spool = SpooledTemporaryFile(max_size=SPOOL_BYTES)
        n = 0
        try:
            async for chunk in request.stream():
                n += len(chunk)
                if n > settings.max_file_bytes:
                    raise ApiError(413, "too_large", f"image larger than the {settings.max_file_bytes} byte limit")
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        if n == 0:
            spool.close()
            raise ApiError(
                400,
                "no_files",
                "empty request body: send one image as the body, or multipart file fields named 'files'",
            )
        spool.seek(0)
        name = request.query_params.get("name") or request.headers.get("x-filename") or "image"
        return [_Upload(name[:255], spool, n)], [spool]

    def prepare(upload: _Upload, index: int) -> Prepared:
        if upload.size is not None and upload.size > settings.max_file_bytes:
            return Prepared(
                name=upload.name,
                index=index,
                error_kind="too_large",
                error=f"file too large: {upload.size} bytes exceeds the {settings.max_file_bytes} byte limit",
            )
        upload.file.seek(0)
        return decoder((upload.name, upload.file), index)

    @app.post(
        "/v1/detect",
        dependencies=[Depends(require_key)],
        openapi_extra=DETECT_OPENAPI,
        responses=ERROR_RESPONSES,
        summary="score one or more images",
    )
    async def detect(request: Request) -> JSONResponse:
        if runtime["inflight"] >= settings.max_inflight:
            raise ApiError(
                429,
                "rate_limited",
                f"{settings.max_inflight} requests are already being handled; retry later",
                headers=retry,
            )
        runtime["inflight"] += 1
        metrics.inflight.inc()
        try:
            return await run_detect(request)
        finally:
            runtime["inflight"] -= 1
            metrics.inflight.dec()

    async def run_detect(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.request_timeout_s
        if batcher.depth >= settings.max_queue:  # refuse before reading a body it could not queue anyway
            raise ApiError(429, "queue_full", "the scoring queue is full; retry later", headers=retry)
        try:
            async with asyncio.timeout(settings.request_timeout_s):
                uploads, to_close = await read_uploads(request)
        except TimeoutError:
            raise ApiError(
                408, "request_timeout", f"the request body did not arrive within {settings.request_timeout_s:g} s"
            ) from None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    prepared = list(
                        await asyncio.gather(
                            *(loop.run_in_executor(runtime["pool"], prepare, u, i) for i, u in enumerate(uploads))
                        )
                    )
            except TimeoutError:
                raise ApiError(503, "timeout", "timed out decoding the images", headers=retry) from None
        finally:
            for obj in to_close:
                closed = obj.close()
                if asyncio.iscoroutine(closed):
                    await closed
        ok = [p for p in prepared if p.ok]
        for p in prepared:
            if not p.ok:
                metrics.errors.labels(p.error_kind or "unreadable").inc()
        metrics.images.labels("error").inc(len(prepared) - len(ok))
        outs: list[tuple[dict, float, int]] = []
        if ok:
            try:
                futures = batcher.submit(ok)
            except QueueFull as e:
                raise ApiError(
                    429,
                    "queue_full",
                    f"the scoring queue is full ({e.depth} of {e.capacity} images waiting); retry later",
                    headers=retry,
                ) from None
            except ShuttingDown:
                raise ApiError(503, "shutting_down", "the server is shutting down", headers=retry) from None
            waiting = [asyncio.wrap_future(f) for f in futures]
            try:
                async with asyncio.timeout_at(deadline):
                    outs = list(await asyncio.gather(*waiting))
            except TimeoutError:
                for f in futures:
                    f.cancel()
                raise ApiError(
                    503,
                    "timeout",
                    f"timed out after {settings.request_timeout_s:g} s waiting for the model",
                    headers=retry,
                ) from None
            except ShuttingDown:
                raise ApiError(503, "shutting_down", "the server is shutting down", headers=retry) from None
            metrics.images.labels("scored").inc(len(ok))
        results, j = [], 0
        for p in prepared:
            if p.ok:
                rec, wait, _size = outs[j]
                j += 1
                rec["timings"]["queue_ms"] = wait * 1e3
                results.append(rec)
            else:
                results.append(scorer.error_record(p))
        total_ms = (time.perf_counter() - t0) * 1e3
        if not ok:
            kinds = list(dict.fromkeys(p.error_kind or "unreadable" for p in prepared))
            status = STATUS_BY_KIND.get(kinds[0], 422) if len(kinds) == 1 else 422
            if len(prepared) == 1:
                message = f"{prepared[0].name}: {prepared[0].error}"
            else:
                message = f"none of the {len(prepared)} images could be scored (see results)"
            raise ApiError(
                status,
                kinds[0] if len(kinds) == 1 else "unprocessable",
                message,
                extra={"results": results, "timings": {"total_ms": total_ms}},
            )
        return JSONResponse(
            {
                "results": results,
                "n_images": len(prepared),
                "n_scored": len(ok),
                "n_errors": len(prepared) - len(ok),
                "timings": {"total_ms": total_ms},
            }
        )

    return app
