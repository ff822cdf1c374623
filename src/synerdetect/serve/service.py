"""The request handling of the HTTP service: :class:`DetectService` owns the state (scorer, decoder, micro-batcher,
limits, metrics, decode threads) and answers the requests; :func:`~synerdetect.serve.app.create_app` only wires
routes to it.

A detect request goes: admission (in-flight and queue limits, 429) → :meth:`DetectService.read_uploads` (multipart
or raw body, bounded in size and time, spooled to disk beyond 1 MB) → :meth:`DetectService.prepare` on the decode
threads → the micro-batcher (the model's one worker thread) → one JSON answer with a record per image.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from tempfile import SpooledTemporaryFile
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ..engine.scoring import Prepared, Scorer
from ..utils import public_paths
from .batcher import DaemonPool, MicroBatcher, QueueFull, ShuttingDown
from .limits import ERROR_NAMES, STATUS_BY_KIND, ApiError, ServeSettings, api_key_ok
from .metrics import Metrics
from .promise import promise_of, validation_shares

__all__ = ["DetectService", "public_info"]

log = logging.getLogger(__name__)

SPOOL_BYTES = 1 << 20  # request bodies beyond this go to a temporary file, not memory
RAW_TYPES_REFUSED = ("text/", "application/json", "application/xml", "application/javascript")


@dataclass
class Upload:
    name: str
    file: Any  # a binary file object (spooled)
    size: int | None


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise ApiError(413, "request_too_large", f"request body larger than the {limit} byte limit")
        yield chunk


#: ``Scorer.info()`` as a client sees it: every filesystem path cut to its last component (``/srv/runs/x/final`` ->
#: ``final``); names and hub repo ids are kept. The one rule the published model card uses too.
public_info = public_paths


def wants_maps(value: str | None, available: bool) -> bool:
    """The ``maps`` query parameter: true / 1 / yes asks for the evidence map of every image (400 when the
    service cannot make one: mode other than full, or a reference method)."""
    if value is None or value.strip().lower() in ("", "false", "0", "no"):
        return False
    if value.strip().lower() not in ("true", "1", "yes"):
        raise ApiError(400, "bad_request", f"maps must be true or false, got {value[:20]!r}")
    if not available:
        raise ApiError(400, "maps_unavailable", "this service cannot make evidence maps (it needs --mode full)")
    return True


class DetectService:
    """The service's state and request handling (see the module docstring). Call :meth:`start` and :meth:`stop`
    around serving (the app's lifespan does)."""

    def __init__(self, scorer: Scorer, settings: ServeSettings | None = None):
        self.scorer = scorer
        self.settings = s = settings or ServeSettings()
        self.decoder = scorer.decoder.with_limits(max_pixels=s.max_pixels, max_bytes=s.max_file_bytes)
        # ?maps=true: the evidence map's decoder (tiles + thumbnail); None when the scorer cannot make maps
        md = scorer.map_decoder
        self.map_decoder = md.with_limits(max_pixels=s.max_pixels, max_bytes=s.max_file_bytes) if md else None
        self.metrics = Metrics()
        self.batcher = MicroBatcher(
            scorer.forward,
            max_batch=s.max_batch,
            max_wait_s=s.max_wait_ms / 1e3,
            max_queue=s.max_queue,
            on_batch=self.metrics.on_batch,
        )
        self.metrics.bind_queue_depth(lambda: self.batcher.depth)
        info = {**scorer.info(), "max_pixels": self.decoder.max_pixels, "max_bytes": self.decoder.max_bytes}
        # the page shows it next to the verdict; none when the scorer's mode or view is not what was certified
        info["promise"] = promise_of(scorer.calibration, mode=scorer.mode, view=scorer.view)
        self.metrics.set_validation_shares(validation_shares(scorer.calibration))
        self.info = public_info(info)  # a client never sees a filesystem path
        self.retry = {"Retry-After": str(s.retry_after_s)}
        self.inflight = 0
        self.warmup_ms: float | None = None
        self._pool: DaemonPool | None = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        self._pool = DaemonPool(self.settings.decode_workers, "synerdetect-decode")
        self.batcher.start(warmup=self._warmup)

    def stop(self) -> None:
        self.batcher.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)  # never waits on an image being decoded

    def _warmup(self) -> None:
        self.warmup_ms = self.scorer.warmup()
        self.metrics.ready.set(1)

    # ------------------------------------------------------------------ status endpoints
    def readiness(self) -> tuple[bool, str]:
        b = self.batcher
        if not b.alive and not b.ready.is_set():
            return False, "the model worker is not running"
        if not b.ready.is_set():
            return False, "the model is warming up"
        if b.warmup_error:  # its text may name server paths: the type only, the rest is in the server log
            return False, f"warm-up failed ({b.warmup_error.split(':')[0]}; see the server log)"
        if not b.alive:
            return False, "the model worker stopped"
        return True, "ready"

    async def readyz(self) -> dict:
        ok, why = self.readiness()
        if not ok:
            raise ApiError(503, "not_ready", why, headers=self.retry)
        return {"status": "ready", "warmup_ms": self.warmup_ms}

    async def model_info(self) -> dict:
        limits = self.settings.public()
        return {**self.info, "ready": self.readiness()[0], "queue_depth": self.batcher.depth, "limits": limits}

    async def require_key(self, request: Request) -> None:
        """A route dependency: 401 unless the request carries an API key (when the server has keys)."""
        h = request.headers
        if not api_key_ok(self.settings.api_keys, h.get("authorization"), h.get("x-api-key")):
            raise ApiError(
                401,
                "unauthorized",
                "missing or invalid API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                headers={"WWW-Authenticate": 'Bearer realm="synerdetect"'},
            )

    # ------------------------------------------------------------------ errors: JSON, no traceback
    async def on_api_error(self, _request: Request, exc: ApiError) -> JSONResponse:
        self.metrics.errors.labels(exc.error).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def on_http_error(self, _request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = ERROR_NAMES.get(exc.status_code, "http_error")
        self.metrics.errors.labels(name).inc()
        return JSONResponse(
            {"status": exc.status_code, "error": name, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def on_validation_error(self, _request: Request, exc: RequestValidationError) -> JSONResponse:
        self.metrics.errors.labels("validation").inc()
        where = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5])
        return JSONResponse({"status": 422, "error": "validation", "message": where or "invalid request"}, 422)

    # ------------------------------------------------------------------ detect
    async def detect(self, request: Request) -> JSONResponse:
        """``POST /v1/detect``: at most ``max_inflight`` at once (429 beyond)."""
        if self.inflight >= self.settings.max_inflight:
            raise ApiError(
                429,
                "rate_limited",
                f"{self.settings.max_inflight} requests are already being handled; retry later",
                headers=self.retry,
            )
        self.inflight += 1
        self.metrics.inflight.inc()
        try:
            return await self._detect(request)
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()

    async def _detect(self, request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s
        if self.batcher.depth >= self.settings.max_queue:  # refuse before reading a body it could not queue anyway
            raise ApiError(429, "queue_full", "the scoring queue is full; retry later", headers=self.retry)
        try:
            async with asyncio.timeout_at(deadline):
                uploads, to_close = await self.read_uploads(request)
        except TimeoutError:
            timeout = self.settings.request_timeout_s
            raise ApiError(408, "request_timeout", f"the request body did not arrive within {timeout:g} s") from None
        maps = wants_maps(request.query_params.get("maps"), self.map_decoder is not None)
        try:
            prepared = await self._decode(uploads, deadline, maps)
        finally:
            for obj in to_close:
                closed = obj.close()
                if asyncio.iscoroutine(closed):
                    await closed
        ok = [p for p in prepared if p.ok]
        for p in prepared:
            if not p.ok:
                self.metrics.errors.labels(p.error_kind or "unreadable").inc()
        self.metrics.images.labels("error").inc(len(prepared) - len(ok))
        outs = await self._score(ok, deadline) if ok else []
        return self._answer(prepared, outs, (time.perf_counter() - t0) * 1e3)

    async def read_uploads(self, request: Request) -> tuple[list[Upload], list[Any]]:
        """The request's images (spooled to disk beyond 1 MB) and what to close afterwards."""
        mtype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        multipart = mtype == "multipart/form-data"
        self._check_length(request.headers.get("content-length"), multipart)
        if multipart:
            return await self._read_multipart(request)
        if mtype and mtype.startswith(RAW_TYPES_REFUSED):
            raise ApiError(
                415,
                "unsupported_media_type",
                f"Content-Type {mtype} is not an image: send image bytes "
                "(image/*, application/octet-stream) or multipart/form-data with 'files'",
            )
        return await self._read_raw(request)

    def _check_length(self, length: str | None, multipart: bool) -> None:
        """413 from the announced ``Content-Length`` before any byte of the body is read."""
        if length is None:
            return
        try:
            n = int(length)
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Content-Length {length!r}") from None
        s = self.settings
        if multipart and n > s.max_request_bytes:
            raise ApiError(
                413,
                "request_too_large",
                f"request body of {n} bytes is larger than the {s.max_request_bytes} byte limit",
            )
        if not multipart and n > s.max_file_bytes:
            raise ApiError(413, "too_large", f"image of {n} bytes is larger than the {s.max_file_bytes} byte limit")

    async def _read_multipart(self, request: Request) -> tuple[list[Upload], list[Any]]:
        s = self.settings
        parser = MultiPartParser(
            request.headers,
            _limited(request.stream(), s.max_request_bytes),
            max_files=s.max_files,
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
                    f"more than {s.max_files} files in one request (split them over several requests)",
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
        return [Upload(u.filename or f"file-{i}", u.file, u.size) for i, u in enumerate(uploads)], [form]

    async def _read_raw(self, request: Request) -> tuple[list[Upload], list[Any]]:
        limit = self.settings.max_file_bytes
        spool = SpooledTemporaryFile(max_size=SPOOL_BYTES)
        n = 0
        try:
            async for chunk in request.stream():
                n += len(chunk)
                if n > limit:
                    raise ApiError(413, "too_large", f"image larger than the {limit} byte limit")
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
        return [Upload(name[:255], spool, n)], [spool]

    def prepare(self, upload: Upload, index: int, maps: bool = False) -> Prepared:
        """Decode one upload (on a decode thread): a :class:`Prepared` image, or its error. ``maps``: with what the
        evidence map needs."""
        limit = self.settings.max_file_bytes
        if upload.size is not None and upload.size > limit:
            return Prepared(
                name=upload.name,
                index=index,
                error_kind="too_large",
                error=f"file too large: {upload.size} bytes exceeds the {limit} byte limit",
            )
        upload.file.seek(0)
        decoder = self.map_decoder if maps and self.map_decoder is not None else self.decoder
        return decoder((upload.name, upload.file), index)

    async def _decode(self, uploads: list[Upload], deadline: float, maps: bool = False) -> list[Prepared]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                jobs = (loop.run_in_executor(self._pool, self.prepare, u, i, maps) for i, u in enumerate(uploads))
                return list(await asyncio.gather(*jobs))
        except TimeoutError:
            raise ApiError(503, "timeout", "timed out decoding the images", headers=self.retry) from None

    async def _score(self, ok: list[Prepared], deadline: float) -> list[tuple[dict, float, int]]:
        """``(record, queue wait, batch size)`` per image, from the micro-batcher, by ``deadline`` (else 503)."""
        shutting_down = ApiError(503, "shutting_down", "the server is shutting down", headers=self.retry)
        try:
            futures = self.batcher.submit(ok)
        except QueueFull as e:
            raise ApiError(
                429,
                "queue_full",
                f"the scoring queue is full ({e.depth} of {e.capacity} images waiting); retry later",
                headers=self.retry,
            ) from None
        except ShuttingDown:
            raise shutting_down from None
        try:
            async with asyncio.timeout_at(deadline):
                outs = list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
        except TimeoutError:
            for f in futures:
                f.cancel()  # the batcher drops them before their batch runs
            timeout = self.settings.request_timeout_s
            raise ApiError(
                503, "timeout", f"timed out after {timeout:g} s waiting for the model", headers=self.retry
            ) from None
        except ShuttingDown:
            raise shutting_down from None
        self.metrics.images.labels("scored").inc(len(ok))
        self.metrics.on_records([rec for rec, _, _ in outs])
        return outs

    def _answer(self, prepared: list[Prepared], outs: list[tuple[dict, float, int]], total_ms: float) -> JSONResponse:
        """One record per image, in upload order; an error status when none could be scored."""
        results, scored = [], iter(outs)
        for p in prepared:
            if p.ok:
                rec, wait, _size = next(scored)
                rec["timings"]["queue_ms"] = wait * 1e3
                results.append(rec)
            else:
                results.append(self.scorer.error_record(p))
        n_ok = len(outs)
        if not n_ok:
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
        body = {"results": results, "n_images": len(prepared), "n_scored": n_ok, "n_errors": len(prepared) - n_ok}
        return JSONResponse({**body, "timings": {"total_ms": total_ms}})
