"""``synerdetect data check``: counts per generator x class x format and the unreadable files (no torch)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_command, add_file_outputs


def add_parser(sub: Any) -> None:
    from ..data.layouts import LAYOUTS

    da = add_command(sub, "data", help="dataset tools", example="data check /data/GenImage --json report.json")
    dsub = da.add_subparsers(dest="data_command", required=True, metavar="{check}")
    dc = add_command(
        dsub,
        "check",
        help="counts per generator x class x format; unreadable files with reasons",
        example="data check /data/GenImage --json report.json",
    )
    dc.add_argument("path", help="dataset root or manifest")
    dc.add_argument("--layout", default="auto", choices=LAYOUTS, help="dataset layout (default: auto)")
    dc.add_argument("--split", default=None, help="train | val | test (layout-dependent)")
    add_file_outputs(dc, json_help="also write the report as JSON (not inside the dataset)")
    dc.set_defaults(func=cmd_data_check, light=True)


def cmd_data_check(args: argparse.Namespace) -> int:
    from ..data import check_dataset, format_check_report
    from ..utils import atomic_write_json, check_not_an_input, check_output_file

    check_output_file(args.json, "--json")
    check_not_an_input(args.json, [args.path], "--json")  # a report inside the dataset would be counted next time
    report = check_dataset(args.path, layout=args.layout, split=args.split)
    print(format_check_report(report))
    if args.json:
        atomic_write_json(args.json, report)
    return 0
