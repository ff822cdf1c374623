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

from ..version import __version__
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
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})

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
        except Exception:  # noqa: BLE001 - logged here, never shown to the client
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            self.metrics.errors.labels("internal").inc()
            if not state["started"]:
                body = {"status": 500, "error": "internal", "message": "internal server error (see the server log)"}
                await JSONResponse(body, status_code=500)(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(endpoint, scope.get("method", ""), str(state["status"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


