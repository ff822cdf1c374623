"""``synerdetect train``: train a detector from an experiment YAML, a preset and ``key=value`` overrides."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import add_command


def add_parser(sub: Any) -> None:
    from ..methods import list_methods
    from ..presets import ABLATIONS, list_presets

    t = add_command(
        sub,
        "train",
        help="train a detector (run under torchrun/accelerate launch for DDP)",
        example="train --config configs/tiny_demo.yaml train.epochs=2 train.output_dir=runs/tiny",
    )
    t.add_argument("--config", help="experiment YAML (see configs/)")
    t.add_argument("--preset", choices=list_presets(), help="preset if the YAML names none (default: paper)")
    t.add_argument("--ablation", choices=sorted(ABLATIONS), help="a Table 5 ablation")
    t.add_argument(
        "--method",
        default=None,
        choices=list_methods(),
        help="detection method (the config's `method`, default synerdetect): synerdetect, or a reference of Table 5a",
    )
    t.add_argument("--resume", default="auto", help="auto | never | CHECKPOINT_DIR (default: auto)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2 data.train=/data")
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..engine.train import train
    from ..methods import check_method
    from ..presets import load_experiment, with_ablation
    from ..utils import is_main_process

    overrides = list(args.overrides) + ([f"method={args.method}"] if args.method else [])
    cfg = load_experiment(args.config, overrides, preset=args.preset)
    if args.ablation:
        cfg = with_ablation(cfg, args.ablation)
    check_method(cfg.method)  # an unknown method fails before the data is read
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    if is_main_process():
        print(json.dumps(summary, indent=2, default=str))
    return 0
