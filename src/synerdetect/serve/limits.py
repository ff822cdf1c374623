"""Limits, back-pressure and errors of the HTTP service: the settings, the JSON error type, API keys."""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data.imageio import DEFAULT_MAX_PIXELS

__all__ = [
    "ERROR_NAMES",
    "LOOPBACK_HOSTS",
    "STATUS_BY_KIND",
    "ApiError",
    "ServeSettings",
    "api_key_ok",
    "bound_host_names",
    "check_bind",
    "is_loopback",
    "read_api_keys",
]

MB = 1_000_000

#: ``Host`` header values a loopback-bound service answers to (Starlette keeps the brackets of an IPv6 literal).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass
class ServeSettings:
    """What ``synerdetect serve`` enforces. Every limit answers with a JSON error, never with unbounded memory.

    Batching: a batch closes at ``max_batch`` images or ``max_wait_ms`` after its oldest image was queued.
    Back-pressure: at most ``max_queue`` decoded images wait for the model and at most ``max_inflight`` detect
    requests are open at once; beyond either the answer is 429 with ``Retry-After: retry_after_s``.
    Inputs: ``max_files`` per request, ``max_file_bytes`` per file (413), ``max_request_bytes`` per request body
    (413), ``max_pixels`` per image (decompression bombs, checked from the header before decoding; 422).
    ``request_timeout_s`` bounds a whole detect request (408 while the body is still arriving, 503 after).
    HTTP layer (uvicorn, see :mod:`synerdetect.serve.server`): a request's head (request line and headers) is at
    most ``max_header_bytes`` (400 beyond) and must arrive within ``header_timeout_s`` of the connection opening or
    of the previous response (408, or a silent close when nothing was sent); at most ``max_connections`` open
    connections and requests (503 beyond).
    ``decode_workers`` threads decode images (so at most that many are held decoded at once).
    ``api_keys``: when not empty, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer KEY`` or ``X-API-Key``.
    ``cors_origins``: browser origins allowed to call the API (default none: no CORS headers at all).
    ``allowed_hosts``: ``Host`` header names accepted besides :data:`LOOPBACK_HOSTS` (``*.example.org`` patterns
    allowed, ``*`` turns the check off); any other name gets 400, so a DNS-rebinding page cannot reach the API.
    """

    max_batch: int = 16
    max_wait_ms: float = 20.0
    max_queue: int = 64
    max_inflight: int = 64
    max_files: int = 16
    max_file_bytes: int = 20 * MB
    max_request_bytes: int = 100 * MB
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    request_timeout_s: float = 60.0
    retry_after_s: int = 1
    decode_workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    header_timeout_s: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_connections: int = 256

    def __post_init__(self) -> None:
        for name in (
            "max_batch",
            "max_queue",
            "max_inflight",
            "max_files",
            "max_file_bytes",
            "max_request_bytes",
            "decode_workers",
            "max_header_bytes",
            "max_connections",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        for name in ("request_timeout_s", "header_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        self.api_keys = tuple(self.api_keys)
        self.cors_origins = tuple(self.cors_origins)
        if "*" in self.cors_origins:
            raise ValueError("cors_origins: name the origins (https://host), not '*'")
        self.allowed_hosts = tuple(h.strip().lower() for h in self.allowed_hosts if h.strip())
        for h in self.allowed_hosts:  # the patterns TrustedHostMiddleware takes (it asserts, so check here)
            if "*" in h[1:] or (h.startswith("*") and h != "*" and not h.startswith("*.")):
                raise ValueError(f"allowed host {h!r}: a name, '*.example.org', or '*'")

    def host_names(self) -> tuple[str, ...]:
        """Every ``Host`` name the service answers to: the loopback names and :attr:`allowed_hosts`."""
        return tuple(dict.fromkeys((*LOOPBACK_HOSTS, *self.allowed_hosts)))

    def public(self) -> dict:
        """The limits a client may need (no keys)."""
        return {
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait_ms,
            "max_queue": self.max_queue,
            "max_inflight": self.max_inflight,
            "max_files": self.max_files,
            "max_file_bytes": self.max_file_bytes,
            "max_request_bytes": self.max_request_bytes,
            "max_pixels": self.max_pixels,
            "request_timeout_s": self.request_timeout_s,
            "header_timeout_s": self.header_timeout_s,
            "max_header_bytes": self.max_header_bytes,
            "max_connections": self.max_connections,
            "api_key_required": bool(self.api_keys),
        }


#: HTTP status of a request whose every image failed, by the (first) per-image error kind.
STATUS_BY_KIND = {
    "too_large": 413,
    "not_an_image": 415,
    "empty": 400,
    "too_many_pixels": 422,
    "corrupt": 422,
    "unreadable": 422,
}

#: The ``error`` name of an HTTP status when nothing more specific is known.
ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered as ``{"status", "error", "message"}`` (plus ``extra``) with ``headers``."""

    def __init__(
        self, status: int, error: str, message: str, *, headers: dict[str, str] | None = None, extra: dict | None = None
    ):
        super().__init__(message)
        self.status, self.error, self.message = int(status), error, message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict:
        return {"status": self.status, "error": self.error, "message": self.message, **self.extra}


def read_api_keys(path: str | os.PathLike) -> tuple[str, ...]:
    """Keys from a file: one per line, blank lines and ``#`` comments ignored. ``ValueError`` when there is none."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--api-key-file {p}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    keys = tuple(s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#"))
    if not keys:
        raise ValueError(f"--api-key-file {p}: holds no key (one key per line)")
    if any(len(k) < 8 or any(c.isspace() for c in k) for k in keys):
        raise ValueError(f"--api-key-file {p}: keys must be at least 8 characters without spaces")
    return keys


def api_key_ok(keys: tuple[str, ...], authorization: str | None, x_api_key: str | None) -> bool:
    """Whether the request carries one of ``keys`` (constant-time comparison). Open when ``keys`` is empty."""
    if not keys:
        return True
    offered = []
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            offered.append(value.strip())
    if x_api_key:
        offered.append(x_api_key.strip())
    ok = False
    for candidate in offered:
        for key in keys:
            ok |= hmac.compare_digest(candidate.encode(), key.encode())
    return ok


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # a name that resolves elsewhere, or "" (all interfaces): not loopback


def bound_host_names(host: str, allowed: tuple[str, ...] | list[str] | None = None) -> tuple[str, ...]:
    """The ``Host`` names to accept besides loopback for a server bound to ``host``: the bind address itself when it
    is one address or name (not ``0.0.0.0`` / ``::`` / empty: every interface has no single name), then ``allowed``
    (``--allowed-host``)."""
    names = list(allowed or ())
    h = host.strip().lower()
    if h and h not in ("0.0.0.0", "::", "[::]"):
        try:
            literal = ipaddress.ip_address(h.strip("[]"))
            names.insert(0, f"[{literal}]" if literal.version == 6 else str(literal))
        except ValueError:
            names.insert(0, h)  # a host name
    return tuple(dict.fromkeys(names))


def check_bind(host: str, *, api_key_file: str | None, insecure_no_auth: bool) -> None:
    """``ValueError`` when ``host`` is reachable from other machines and neither an API key file nor an explicit
    ``--insecure-no-auth`` was given (checked before the model is loaded)."""
    if is_loopback(host) or api_key_file or insecure_no_auth:
        return
    raise ValueError(
        f"--host {host} listens beyond this machine: give --api-key-file FILE (clients must send a key), "
        "or --insecure-no-auth to serve without one (e.g. behind a proxy that authenticates)"
    )
