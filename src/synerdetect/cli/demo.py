"""``synerdetect demo``: the offline end-to-end demo, or the method comparison with ``--methods``."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_command


def add_parser(sub: Any) -> None:
    d = add_command(
        sub,
        "demo",
        help="offline end-to-end demo: build a small benchmark, train tiny, evaluate",
        example="demo --out demo_out --quick",
    )
    d.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: demo_out)")
    d.add_argument("--quick", action="store_true", help="fewer images and steps (smoke test)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads for torch (default: 1, so that the demo's numbers do not depend on the machine's core "
        "count: summation order changes with the thread count and moves a tiny model's results)",
    )
    d.add_argument(
        "--methods",
        default=None,
        help="compare methods instead (paper Table 5a / Figure 3): train and evaluate each, e.g. "
        "synerdetect,unifd,dire or all; writes comparison.json, comparison.md and comparison_logits.png",
    )
    d.add_argument(
        "--adapt",
        action="store_true",
        help="one adaptation to an unseen family (synerdetect adapt, 32 shots, with replay), reusing --out's "
        "demo checkpoint when there is one",
    )
    d.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("demo", "synerdetect demo")  # the real photographs come from scikit-image
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    if args.methods:
        from ..demo.compare import run_comparison
        from ..methods import parse_methods

        run_comparison(args.out, parse_methods(args.methods), quick=args.quick, progress=not args.no_progress)
        return 0
    if args.adapt:
        from ..demo.adapt import run_adapt_demo

        return run_adapt_demo(args.out, progress=not args.no_progress)
    from ..demo.run import run_demo

    return run_demo(args.out, quick=args.quick, progress=not args.no_progress)
