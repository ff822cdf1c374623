"""``synerdetect inspect``: provenance evidence only (C2PA, XMP, PNG text, EXIF); no model, no torch."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import add_command, add_file_outputs


def add_parser(sub: Any) -> None:
    ins = add_command(
        sub,
        "inspect",
        help="provenance evidence only (C2PA, IPTC/XMP, generator metadata, EXIF); no model is loaded",
        example="inspect photos/ --json provenance.json",
    )
    ins.add_argument("inputs", nargs="+", help="files, folders (recursive) and globs")
    add_file_outputs(ins, json_help="write the records to this JSON file instead of printing the table")
    ins.add_argument(
        "--c2pa-trust-anchors",
        help="PEM file of trusted C2PA root certificates (default: none, so every signer is reported untrusted)",
    )
    ins.set_defaults(func=cmd_inspect, light=True)


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..provenance import format_inspect_table, inspect_paths
    from ..utils import atomic_write_json
    from .predict import expand_and_check

    paths = expand_and_check(args.inputs, {"--json": args.json})
    if not paths:
        print("error: no input files", file=sys.stderr)
        return 2
    records = inspect_paths(paths, trust_anchors=args.c2pa_trust_anchors)
    if args.json:
        atomic_write_json(args.json, {"provenance": records})
    else:
        print(format_inspect_table(records))
    return 0 if any(not r.get("error") for r in records) else 1
