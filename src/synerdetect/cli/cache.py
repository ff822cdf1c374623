"""``synerdetect cache build``: precompute the feature cache (VAE + inverted latents); shard with torchrun."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._common import add_command, add_data_options, device, init_dist_if_launched, rank


def add_parser(sub: Any) -> None:
    from ..presets import list_presets

    ca = add_command(
        sub,
        "cache",
        help="feature cache (VAE + inverted latents)",
        example="cache build --checkpoint runs/x/final --data /data/GenImage --cache-dir cache/",
    )
    csub = ca.add_subparsers(dest="cache_command", required=True, metavar="{build}")
    cb = add_command(
        csub,
        "build",
        help="precompute features (shard with torchrun / accelerate launch)",
        example="cache build --checkpoint runs/x/final --data /data/GenImage --cache-dir cache/",
    )
    cb.add_argument("--config", help="experiment YAML")
    cb.add_argument("--preset", choices=list_presets(), help="preset if the YAML names none")
    cb.add_argument("--checkpoint", help="condition the inversion on this trained detector's prompt")
    add_data_options(cb)
    cb.add_argument("--cache-dir", metavar="DIR", help="the cache folder (default: the config's cache.dir)")
    cb.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    cb.add_argument("overrides", nargs="*", help="key=value config overrides")
    cb.set_defaults(func=cmd_cache_build)


def cmd_cache_build(args: argparse.Namespace) -> int:
    from ..cache import build_cache
    from ..data import load_labelled
    from ..methods import build_detector, load_detector
    from ..presets import load_experiment
    from ..utils import check_output_dir

    if not (args.checkpoint or args.config or args.preset):
        raise ValueError(
            "cache build: say which detector conditions the inversion: --checkpoint DIR (a trained "
            "detector) or --config CONFIG.yaml / --preset NAME (an untrained one)"
        )
    init_dist_if_launched()
    cfg = load_experiment(args.config, args.overrides, preset=args.preset)
    root = args.cache_dir or cfg.cache.dir
    if not root:
        print("error: give --cache-dir or set cache.dir in the config", file=sys.stderr)
        return 2
    check_output_dir(root, "--cache-dir")
    model = load_detector(args.checkpoint) if args.checkpoint else build_detector(cfg)
    model = model.to(device(None)).eval().enable_fast_path()
    samples = load_labelled(args.data, args.layout, args.split)
    # The size the detector reads images at (the checkpoint's own when one is given), or keys never match.
    stats = build_cache(model, samples, root, image_size=model.cfg.data.image_size, batch_size=args.batch_size)
    if rank() == 0:
        print(json.dumps(stats, indent=2, default=str))
    return 0
