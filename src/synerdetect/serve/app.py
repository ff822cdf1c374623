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

Every error of the app is ``{"status", "error", "message"}`` JSON with that HTTP status (only the ``Host`` check,
Starlette's, and uvicorn's own refusals are one line of text); no traceback reaches a client. The request handling
is :class:`~synerdetect.serve.service.DetectService`; this module wires its routes and middleware. Decoding runs
on a few daemon threads and the model only on the batcher's worker thread (never on the event loop).
Use the app inside its lifespan (``uvicorn.run(app)``, or ``with TestClient(app)``): that starts the worker and
the warm-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from ..engine.scoring import Scorer
from ..version import __version__
from .limits import ApiError, ServeSettings
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .service import DetectService

__all__ = ["create_app"]

log = logging.getLogger(__name__)

DOCS_ASSETS = "/docs-assets"
KNOWN_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/v1/detect", "/v1/model", "/docs", "/redoc", "/openapi.json"}
)
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
CLIENT_CLOSED = 499  # the requests_total status of a request whose client disconnected (nginx's "client closed")

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
        except ClientDisconnect:  # the client went away mid-body: nobody to answer, nothing broken on this side
            log.info("client disconnected during %s %s", scope.get("method"), path)
            self.metrics.errors.labels("client_disconnect").inc()
            state["status"] = CLIENT_CLOSED
        except Exception:  # noqa: BLE001 - logged here, never shown to the client
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            self.metrics.errors.labels("internal").inc()
            if not state["started"]:
                body = {"status": 500, "error": "internal", "message": "internal server error (see the server log)"}
                await JSONResponse(body, status_code=500)(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(endpoint, scope.get("method", ""), str(state["status"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


class _HostCheck:
    """Starlette's :class:`TrustedHostMiddleware` (400 for any other ``Host``, against DNS rebinding) on every path
    but the health probes: they reveal nothing, and an orchestrator's probe names the server by a pod address."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...]):
        self.app = app
        self.checked = TrustedHostMiddleware(app, allowed_hosts=list(allowed_hosts), www_redirect=False)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = self.app if scope.get("path") in HEALTH_PATHS else self.checked
        await route(scope, receive, send)


def create_app(scorer: Scorer, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``scorer`` under ``settings`` (see :class:`~synerdetect.serve.limits.ServeSettings`):
    routes wired to a :class:`~synerdetect.serve.service.DetectService`.

    ``app.state`` holds ``service``, and its ``scorer``, ``settings``, ``batcher``
    (:class:`~synerdetect.serve.batcher.MicroBatcher`) and ``metrics`` (:class:`~synerdetect.serve.metrics.Metrics`).

    On CPU, build ``scorer`` off the main thread (as ``synerdetect serve`` does): a model loaded on the main thread
    ran its forward passes on the batcher's worker thread about twice as slowly (OpenMP thread teams)."""
    service = DetectService(scorer, settings)
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

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
    app.state.service = service
    app.state.scorer, app.state.settings = scorer, settings
    app.state.batcher, app.state.metrics = service.batcher, service.metrics
    _add_middleware(app, service)
    app.exception_handler(ApiError)(service.on_api_error)
    app.exception_handler(StarletteHTTPException)(service.on_http_error)
    app.exception_handler(RequestValidationError)(service.on_validation_error)

    page = _page()
    page_headers = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}
    page_headers["Cache-Control"] = "no-cache"
    keyed = [Depends(service.require_key)]

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=page_headers)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=keyed, summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.get("/readyz", summary="the model is loaded and warmed up (503 until then)")(service.readyz)
    app.get("/v1/model", dependencies=keyed, summary="what is loaded, and the limits")(service.model_info)
    app.post(
        "/v1/detect",
        dependencies=keyed,
        openapi_extra=DETECT_OPENAPI,
        responses=ERROR_RESPONSES,
        summary="score one or more images",
    )(service.detect)
    return app


def _add_middleware(app: FastAPI, service: DetectService) -> None:
    settings = service.settings
    if settings.cors_origins:  # off unless asked for: then only the named origins, only GET/POST
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Filename"],
        )
    app.add_middleware(_HostCheck, allowed_hosts=settings.host_names())
    app.add_middleware(_Guard, metrics=service.metrics)  # added last: the outermost, it sees every answer
