"""``synerdetect adapt``: teach a trained detector a new generator from a few dozen labelled images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import add_command


def add_parser(sub: Any) -> None:
    a = add_command(
        sub,
        "adapt",
        help="adapt a checkpoint to a new generator from a few dozen images (with replay of earlier data); writes "
        "a checkpoint with lineage.json, adapt.md and adapt.json",
        example="adapt --checkpoint runs/x/final --data new_gen/ --replay-from-checkpoint --shots 32 --out adapted/",
    )
    a.add_argument(
        "--checkpoint",
        required=True,
        help="the detector to adapt: a checkpoint folder (final/ or checkpoints/step-N/) or a Hugging Face Hub repo "
        "id org/name[@revision]",
    )
    a.add_argument("--data", required=True, help="the new generator's fakes and real images (folders or manifest)")
    rep = a.add_mutually_exclusive_group()
    rep.add_argument("--replay", metavar="OLD_DATA", help="earlier training data to mix into every batch")
    rep.add_argument(
        "--replay-from-checkpoint",
        action="store_true",
        help="mix in the replay memory the checkpoint carries (written by training with train.replay_memory=K; a "
        "checkpoint from the Hub has none: training images are kept out of public uploads, use --replay)",
    )
    a.add_argument("--shots", type=int, default=None, help="use N fakes and N reals of --data (default: all)")
    a.add_argument("--steps", type=int, default=None, help="optimiser steps at most (default: 20, docs/method.md)")
    a.add_argument("--lr", type=float, default=None, help="learning rate (default: 3e-3, docs/method.md)")
    a.add_argument("--replay-ratio", type=float, default=None, help="share of each batch from replay (default 0.5)")
    a.add_argument("--seed", type=int, default=0, help="seed of the subset, the split and the batches (default 0)")
    a.add_argument(
        "--eval",
        nargs="*",
        default=[],
        metavar="DIR",
        help="held-out labelled sets for the before/after report (default: the parent's validation sets and the "
        "new validation split)",
    )
    a.add_argument("--no-calibration", action="store_true", help="do not refit the calibration")
    a.add_argument("--out", required=True, metavar="DIR", help="output folder (rerun the same command to resume)")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_adapt)


def cmd_adapt(args: argparse.Namespace) -> int:
    from ..engine.adapt import AdaptOptions, adapt

    o = AdaptOptions(
        shots=args.shots, seed=args.seed, eval_sets=list(args.eval), refit_calibration=not args.no_calibration
    )
    for name in ("steps", "lr", "replay_ratio"):
        if getattr(args, name) is not None:
            setattr(o, name, getattr(args, name))
    report = adapt(
        args.checkpoint,
        args.data,
        args.out,
        replay=args.replay,
        replay_from_checkpoint=args.replay_from_checkpoint,
        options=o,
        progress=not args.no_progress,
    )
    print(Path(args.out, "adapt.md").read_text())
    print(f"adapted checkpoint: {report['checkpoint']}")
    return 0
