"""``synerdetect card``: write a checkpoint's model card (README.md) from its own files (no model, no torch)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_command


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "card",
        help="write CKPT/README.md, a Hugging Face model card, from the checkpoint's config, calibration and the "
        "results.json of each --results folder",
        example="card runs/x/final --results results/progan results/genimage",
    )
    p.add_argument("folder", metavar="CKPT", help="the checkpoint folder (save_pretrained / final/)")
    p.add_argument("--results", nargs="*", default=[], metavar="DIR", help="evaluate --out folders (or results.json)")
    p.add_argument("--license", default="apache-2.0", help="the card's licence id (default: apache-2.0)")
    p.add_argument("--repo-id", help="the Hub id it will be published as (shown in the card's usage lines)")
    p.add_argument("--force", action="store_true", help="replace a README.md that `card` did not write")
    p.set_defaults(func=cmd_card, light=True)


def cmd_card(args: argparse.Namespace) -> int:
    from ..card import write_card

    path = write_card(args.folder, args.results, license=args.license, repo_id=args.repo_id, force=args.force)
    print(f"wrote {path}")
    return 0
