"""Command line: ``synerdetect COMMAND`` (demo, train, adapt, evaluate, calibrate, predict, serve, card, push, ...).

One module per command, each with ``add_parser(sub)`` (its options, help and an example) and its ``cmd_*``
handler; the options several commands share are built once in :mod:`._common`. The command line only parses
arguments and prints; the work is done by the library modules, imported inside the handlers so that ``--help``,
``presets``, ``inspect`` and ``data check`` start without torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..version import __version__
from . import adapt, bench, cache, calibrate, card, data, demo, evaluate, inspect, predict, presets, push, serve, train
from .bench import MODES_HINT

#: In the order ``synerdetect --help`` lists them.
COMMANDS = (demo, presets, train, adapt, evaluate, calibrate, predict, serve, inspect, data, cache, bench, card, push)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="synerdetect",
        description="detect AI-generated images with SynerDetect (CLIP + frozen Stable Diffusion, CMID + OT-DCL)",
        epilog="example:\n  synerdetect predict photos/ --checkpoint runs/x/final\n\n"
        "`synerdetect COMMAND --help` shows a command's options and an example.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, accepting ``key=value`` overrides before or after the options."""
    parser = build_parser()
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["bench"] and len(words) > 1 and words[1].startswith("--") and words[1] != "--help":
        parser.error(f"bench {words[1]}: {MODES_HINT}")  # a flag of the old single bench command
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        elif args.command == "bench":
            parser.error(f"unrecognized arguments: {' '.join(extra)}; {MODES_HINT}")
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _quiet(args: argparse.Namespace) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "light", False):  # presets, inspect, data check: no model library to quieten
        from ._common import quiet_libraries

        quiet_libraries()


def _resolve_checkpoint(args: argparse.Namespace) -> None:
    """``--checkpoint org/name[@revision]`` (a Hugging Face Hub repo id) -> the downloaded folder, for every command
    that takes one; a local folder stays as it is."""
    spec = getattr(args, "checkpoint", None)
    if not spec:
        return
    from ..hub import is_repo_id, resolve_checkpoint

    if is_repo_id(spec) and args.command == "calibrate":  # it writes calibration.json into the checkpoint
        raise ValueError(
            f"--checkpoint {spec}: calibrate writes calibration.json into the checkpoint folder; download a copy "
            f"first (hf download {spec.split('@')[0]} --local-dir DIR) and calibrate DIR"
        )
    args.checkpoint = str(resolve_checkpoint(spec))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet(args)
    try:
        _resolve_checkpoint(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:  # OutputError, a full disk, ...: one line, no traceback
        if os.environ.get("SYNERDETECT_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main", "parse_args"]
