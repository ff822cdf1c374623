"""``synerdetect serve``: the HTTP API and web page (FastAPI on uvicorn); the service itself is
:mod:`synerdetect.serve`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from ._common import add_command, add_provenance_options, add_scoring_options, device


def add_parser(sub: Any) -> None:
    sv = add_command(
        sub,
        "serve",
        help="HTTP API + web page: POST /v1/detect, /healthz, /readyz, /v1/model, /metrics",
        example="serve --checkpoint runs/x/final --port 8000",
    )
    add_scoring_options(sv)
    add_provenance_options(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_limits(sv)
    _add_access(sv)
    sv.set_defaults(func=cmd_serve)


def _add_limits(sv: argparse.ArgumentParser) -> None:
    sv.add_argument("--max-batch", type=int, default=16, help="most images per forward pass (default: 16)")
    sv.add_argument("--max-wait-ms", type=float, default=20.0, help="how long a batch waits to fill (default: 20)")
    sv.add_argument("--max-queue", type=int, default=64, help="images waiting for the model; beyond: 429")
    sv.add_argument("--max-inflight", type=int, default=64, help="detect requests handled at once; beyond: 429")
    sv.add_argument("--max-files", type=int, default=16, help="files per request (default: 16)")
    sv.add_argument("--max-file-mb", type=float, default=20.0, help="bytes per file, in MB (default: 20)")
    sv.add_argument("--max-request-mb", type=float, default=100.0, help="bytes per request body, in MB")
    sv.add_argument("--max-pixels", type=int, default=None, help="pixels per image (default: the loader's cap)")
    sv.add_argument("--timeout", type=float, default=60.0, help="seconds per detect request (default: 60)")
    sv.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds for a request's headers to arrive (default: 10)"
    )
    sv.add_argument("--max-connections", type=int, default=256, help="open connections at once; beyond: 503")


def _add_access(sv: argparse.ArgumentParser) -> None:
    sv.add_argument(
        "--api-key-file",
        help="require one of the keys in this file (one per line) as "
        "'Authorization: Bearer KEY' or 'X-API-Key' (health endpoints stay open)",
    )
    sv.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback --host without --api-key-file (e.g. behind a proxy that authenticates)",
    )
    sv.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="allow browser pages from ORIGIN (e.g. https://app.example.org) to call the API; repeatable "
        "(default: no CORS headers, same-origin only)",
    )
    sv.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="also answer requests whose Host header is NAME (the name clients or a proxy use; '*.example.org' "
        "patterns; repeatable). Default: loopback names and the --host address only, against DNS rebinding",
    )


def settings_from_args(args: argparse.Namespace) -> Any:
    """The service's :class:`~synerdetect.serve.ServeSettings` from the command line."""
    from ..serve import ServeSettings, read_api_keys
    from ..serve.limits import bound_host_names

    limits = {"max_pixels": args.max_pixels} if args.max_pixels else {}  # default: the loader's cap
    return ServeSettings(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_inflight=args.max_inflight,
        max_files=args.max_files,
        max_file_bytes=int(args.max_file_mb * 1e6),
        max_request_bytes=int(args.max_request_mb * 1e6),
        request_timeout_s=args.timeout,
        api_keys=read_api_keys(args.api_key_file) if args.api_key_file else (),
        cors_origins=tuple(args.cors_origin or ()),
        allowed_hosts=bound_host_names(args.host, args.allowed_host),
        header_timeout_s=args.header_timeout,
        max_connections=args.max_connections,
        **limits,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Parse, build the app from the library, run it. SIGTERM stops accepting connections, lets the requests in
    flight finish, then returns 0 (Ctrl-C: the same, then 130)."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from ..extras import require_extra

    require_extra("serve", "synerdetect serve")  # before uvicorn is imported
    import uvicorn

    from ..engine.scoring import Scorer
    from ..serve import create_app
    from ..serve.limits import check_bind
    from ..serve.server import uvicorn_config

    check_bind(args.host, api_key_file=args.api_key_file, insecure_no_auth=args.insecure_no_auth)  # before loading
    settings = settings_from_args(args)
    # The model is built on a short-lived thread, not on the main thread (which then runs the event loop only):
    # on CPU, OpenMP work done on the main thread made the forward passes on the batcher's worker thread about
    # twice as slow (0.48 s vs 0.22 s per batch of 16 on the demo checkpoint, 2 cores, 2026-11-28).
    with ThreadPoolExecutor(1, thread_name_prefix="synerdetect-load") as loader:
        scorer = loader.submit(
            Scorer.from_checkpoint,
            args.checkpoint,
            device=device(args.device),
            image_size=args.image_size,
            batch_size=args.max_batch,
            provenance=not args.no_provenance,
            trust_anchors=args.c2pa_trust_anchors,
            trust_metadata=args.trust_metadata,
            max_pixels=settings.max_pixels,
            max_bytes=settings.max_file_bytes,
            mode=args.mode,
            view=args.view,
        ).result()
    config = uvicorn_config(
        create_app(scorer, settings), settings, host=args.host, port=args.port, log_level=args.log_level
    )
    server = uvicorn.Server(config)

    def stop(_signum: int, _frame: Any) -> None:
        server.should_exit = True

    # uvicorn handles SIGTERM while serving and re-raises it after a graceful shutdown; this handler (restored by
    # uvicorn after serving) turns that re-raise, and a SIGTERM before serving starts, into a clean exit 0.
    signal.signal(signal.SIGTERM, stop)
    server.run()
    if server.started:
        # The graceful shutdown is done (in-flight requests answered, the batcher stopped). Leave without the
        # interpreter's finalization: the decode pool's daemon threads may still sit in native code (Pillow,
        # pillow-heif, c2pa) while C++ static destructors run, which aborted the process ("terminate called
        # without an active exception", exit -6) in one clean-clone CI run of 2026-12-03. Only the logs are left
        # to flush.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
