"""``synerdetect calibrate``: fit calibrated probabilities, the uncertain band and (optionally) the cascade band on a
labelled validation set; saved as calibration.json in the checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import (
    add_checkpoint_options,
    add_command,
    add_data_options,
    add_loader_options,
    image_size,
    init_dist_if_launched,
    load_model,
    rank,
)


def add_parser(sub: Any) -> None:
    c = add_command(
        sub,
        "calibrate",
        help="fit calibrated probabilities and an uncertain band on a labelled "
        "validation set (never the test set); saves calibration.json in the checkpoint",
        example="calibrate --checkpoint runs/x/final --data /data/val --cascade-agreement 0.99",
    )
    add_checkpoint_options(c)
    add_data_options(c, required=False)
    c.add_argument("--config", help="protocol YAML: --data defaults to its data.val, and its data.test is refused")
    c.add_argument(
        "--target-accuracy",
        type=float,
        default=0.95,
        help="accuracy wanted outside the uncertain band on the validation set; with --guarantee, the accuracy "
        "certified on images like it (default: 0.95)",
    )
    c.add_argument(
        "--method",
        choices=["temperature", "platt"],
        default="temperature",
        help="temperature scaling (one scale; default) or Platt scaling (scale and offset)",
    )
    c.add_argument("--min-per-class", type=int, default=20, help="refuse with fewer images of a class (default: 20)")
    c.add_argument("--generators", nargs="*", help="only these generators")
    c.add_argument(
        "--cascade-agreement",
        type=float,
        default=None,
        metavar="SHARE",
        help="also fit the cascade band (--mode cascade): the narrowest band of perceptual margins for "
        "which the cascade agrees with full Eq. 10 on this share of the images, e.g. 0.99",
    )
    c.add_argument(
        "--guarantee",
        action="store_true",
        help="certify the uncertain band by Learn-then-Test: accuracy outside it >= --target-accuracy with "
        "probability >= 1 - DELTA over the draw of the validation set",
    )
    c.add_argument(
        "--max-fpr",
        type=float,
        default=None,
        metavar="FPR",
        help="'fake' only above a logit threshold certified to flag at most FPR of real images (e.g. 0.01) with "
        "confidence 1 - DELTA (Clopper-Pearson on the validation reals); refuses when there are too few reals",
    )
    c.add_argument(
        "--delta",
        type=float,
        default=0.05,
        help="risk of the certificates of --guarantee and --max-fpr (default: 0.05, i.e. 95%% confidence)",
    )
    add_loader_options(c, batch_size=32, workers=2)
    c.set_defaults(func=cmd_calibrate)


def _validation_set(args: argparse.Namespace) -> None:
    """``--data``, else the protocol YAML's data.val (with its layout and split)."""
    if args.data is not None:
        return
    if not args.config:
        raise ValueError(
            "give --data VAL (a labelled validation set), or --config CONFIG.yaml whose data.val names one"
        )
    from ..presets import load_experiment

    d = load_experiment(args.config).data
    if not d.val:
        raise ValueError(f"{args.config}: data.val is not set; pass --data VAL")
    args.data, args.layout, args.split = d.val, d.val_layout, d.val_split


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..engine.calibrate import calibrate_checkpoint, check_not_test_set
    from ..engine.calibration import CALIBRATION_NAME, format_calibration

    init_dist_if_launched()
    _validation_set(args)
    check_not_test_set(args.data, args.split, args.config)  # before the model is loaded
    model = load_model(args.checkpoint, args.device, args.view)
    cal = calibrate_checkpoint(
        args.checkpoint,
        args.data,
        layout=args.layout,
        split=args.split,
        target_accuracy=args.target_accuracy,
        method=args.method,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        protocol_config=args.config,
        min_per_class=args.min_per_class,
        generators=args.generators,
        num_workers=args.workers,
        image_size=image_size(model, args.image_size),
        model=model,
        cascade_agreement=args.cascade_agreement,
        guarantee=args.guarantee,
        max_fpr=args.max_fpr,
        delta=args.delta,
    )
    if rank() == 0:
        print(format_calibration(cal))
        if cal.guarantee is not None or cal.max_fpr is not None:
            from ..engine.guarantees import format_guarantees

            print(format_guarantees(cal.guarantee, cal.max_fpr))
        if cal.cascade is not None and args.cascade_agreement is not None:
            c = cal.cascade
            print(
                f"cascade band [{c['band'][0]:+.4f}, {c['band'][1]:+.4f}] (perceptual margin): on this data "
                f"{c['share_inverted'] * 100:.1f}% of images need the inversion, agreement with full Eq. 10 "
                f"{c['agreement'] * 100:.1f}% (target {c['target_agreement'] * 100:.0f}%)"
            )
        print(f"\nwrote {Path(args.checkpoint) / CALIBRATION_NAME}")
    return 0
