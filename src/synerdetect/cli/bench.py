"""``synerdetect bench components | cascade | serve``: measurements as JSON lines. A bare ``synerdetect bench`` runs
``bench components`` with its defaults."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from ._common import add_command

#: Named once: the message for the flags of the old single ``bench`` command.
MODES_HINT = "bench modes are subcommands: bench components | bench cascade | bench serve (see bench --help)"


def add_parser(sub: Any) -> None:
    b = add_command(
        sub,
        "bench",
        help="component costs, the cascade, or a load test of serve, as JSON lines",
        description="component costs, throughput and ratios as JSON lines; without a subcommand: bench components",
        example="bench components --preset tiny --device cpu --out bench.jsonl",
    )
    bsub = b.add_subparsers(dest="bench_command", metavar="{components,cascade,serve}")
    components = _add_components(bsub)
    _add_cascade(bsub)
    _add_serve(bsub)
    # bare `bench`: the components bench with its own defaults
    b.set_defaults(func=partial(_bare_bench, components))


def _bare_bench(components: argparse.ArgumentParser, _args: argparse.Namespace) -> int:
    return cmd_bench_components(components.parse_args([]))


def _common(p: argparse.ArgumentParser, *, batch_help: str) -> None:
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to measure (default: cpu)")
    p.add_argument("--batch-size", type=int, default=None, help=batch_help)
    p.add_argument("--out", metavar="FILE", help="also write the JSON lines to this file")


def _add_components(bsub: Any) -> argparse.ArgumentParser:
    c = add_command(
        bsub,
        "components",
        help="component costs, throughput and cache speedups of a preset (random weights)",
        example="bench components --preset tiny --device cpu --out bench.jsonl",
    )
    c.add_argument("--preset", default="tiny", choices=["tiny", "paper"], help="model sizes (default: tiny)")
    c.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    _common(c, batch_help="images per batch (default: the bench's own)")
    c.set_defaults(func=cmd_bench_components)
    return c


def _add_cascade(bsub: Any) -> None:
    c = add_command(
        bsub,
        "cascade",
        help="the cascade of Eq. 10 on a trained checkpoint: fit the band on --val, time cascade vs full on --test",
        example="bench cascade --checkpoint runs/x/final --val /data/val --test /data/test",
    )
    c.add_argument("--checkpoint", required=True, help="a trained detector")
    c.add_argument("--val", required=True, help="labelled validation set for the cascade band")
    c.add_argument("--test", required=True, help="labelled test set for the cascade measurement")
    c.add_argument("--steps", type=int, default=100, help="inversion steps for the cascade (default: 100)")
    _common(c, batch_help="images per batch (default: 32)")
    c.set_defaults(func=cmd_bench_cascade)


def _add_serve(bsub: Any) -> None:
    s = add_command(
        bsub,
        "serve",
        help="load-test `synerdetect serve` on 127.0.0.1 (latency, images/s vs offline predict, batching, bad "
        "uploads, memory, logits equal to predict)",
        example="bench serve --checkpoint runs/x/final --clients 32 --requests 320",
    )
    s.add_argument("--checkpoint", required=True, help="the save_pretrained folder to serve")
    s.add_argument("--clients", type=int, default=32, help="concurrent clients (default: 32)")
    s.add_argument("--requests", type=int, default=320, help="requests in all (default: 320)")
    s.add_argument("--bad-share", type=float, default=0.1, help="share of bad uploads (default: 0.1)")
    s.add_argument("--timeout", type=float, default=600.0, help="overall time limit, seconds (default: 600)")
    _common(s, batch_help="the server's --max-batch (default: 16)")
    s.set_defaults(func=cmd_bench_serve)


def cmd_bench_components(args: argparse.Namespace) -> int:
    from ..bench import run_bench

    run_bench(args.preset, args.device, batch_size=args.batch_size, compile=args.compile, out=args.out)
    return 0


def cmd_bench_cascade(args: argparse.Namespace) -> int:
    from ..bench import run_cascade_bench

    run_cascade_bench(
        args.checkpoint,
        args.val,
        args.test,
        steps=args.steps,
        device=args.device,
        batch_size=args.batch_size or 32,
        out=args.out,
    )
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("serve", "synerdetect bench serve")
    from ..serve.loadtest import run_serve_bench

    lines = run_serve_bench(
        args.checkpoint,
        clients=args.clients,
        requests=args.requests,
        bad_share=args.bad_share,
        device=args.device,
        max_batch=args.batch_size or 16,
        timeout_s=args.timeout,
        out=args.out,
    )
    ok = lines[-1]
    return 0 if ok["all_answered"] and ok["no_5xx"] and ok["logits_match_offline"] else 1
