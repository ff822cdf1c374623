"""The HTTP server under the app: uvicorn on h11, with the limits of :class:`~synerdetect.serve.limits.ServeSettings`.

Why h11 and not httptools (uvicorn's ``"auto"`` choice when httptools is installed, as it is with
``uvicorn[standard]``): uvicorn bounds a request's head only with h11 (``h11_max_incomplete_event_size``); on
httptools a 64 MB header was read in full (six such connections added 430 MB of RSS). The parser's speed does not
matter here: a request costs a forward pass of hundreds of milliseconds.

Neither protocol bounds the time a client takes to send a request's head: uvicorn's keep-alive timer only runs
between requests and is cancelled by the first byte, so a connection that sends nothing, or a byte every few
seconds, stays open for ever. :class:`HeadDeadlineH11Protocol` adds that deadline (the one thing written by hand
here). Bodies are bounded by the app (``request_timeout_s``: 408).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import ServeSettings

__all__ = ["HeadDeadlineH11Protocol", "uvicorn_config"]


class HeadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head has not arrived ``head_timeout_s`` after the
    connection opened or after its previous response (or that still sends the body of a request answered that long
    ago). A client that sent part of a head gets a JSON 408 first; an idle one is closed silently (as after
    uvicorn's own keep-alive timeout)."""

    head_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_deadline_passed)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()  # the next request's head gets the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        waiting_for_head = self.conn.their_state is h11.IDLE
        # answered, but the client is still sending a body nobody reads (h11 drops it): the same deadline
        answered = self.conn.our_state in (h11.DONE, h11.MUST_CLOSE)
        if self.transport.is_closing() or not (waiting_for_head or answered):
            return  # a request is being handled: it is the app's to time out (request_timeout_s)
        if waiting_for_head and self.conn.trailing_data[0]:  # part of a head arrived: say why before closing
            body = json.dumps(
                {
                    "status": 408,
                    "error": "request_timeout",
                    "message": f"the request headers did not arrive within {self.head_timeout_s:g} s",
                }
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()


def uvicorn_config(app: Any, settings: ServeSettings, *, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn configuration ``synerdetect serve`` runs ``app`` with: h11 with the head-size and head-time
    limits, keep-alive 5 s, at most ``settings.max_connections`` connections, and a graceful shutdown that lets
    requests in flight finish (they time out by ``request_timeout_s``). ``kwargs`` go to :class:`uvicorn.Config`
    (``log_level``, ...)."""
    protocol = type("Protocol", (HeadDeadlineH11Protocol,), {"head_timeout_s": float(settings.header_timeout_s)})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=5,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
        **kwargs,
    )
