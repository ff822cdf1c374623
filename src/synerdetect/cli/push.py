"""``synerdetect push``: publish a checkpoint on the Hugging Face Hub (card, repo, upload; no model, no torch)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_command


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "push",
        help="upload a checkpoint to the Hugging Face Hub (writes its model card first when it has none); "
        "credentials from HF_TOKEN or `hf auth login`",
        example="push runs/x/final org/name --private --dry-run",
    )
    p.add_argument("folder", metavar="CKPT", help="the checkpoint folder (save_pretrained / final/)")
    p.add_argument("repo_id", metavar="ORG/NAME", help="the Hub repo (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", metavar="BRANCH", help="upload to this branch (created if needed; default: main)")
    p.add_argument("--results", nargs="*", default=[], metavar="DIR", help="results for the card, when it is written")
    p.add_argument("--dry-run", action="store_true", help="list the files and their sizes; write and upload nothing")
    p.set_defaults(func=cmd_push, light=True)


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    x, unit = n / 1000, "kB"
    for bigger in ("MB", "GB"):
        if x < 1000:
            break
        x, unit = x / 1000, bigger
    return f"{x:.1f} {unit}"


def cmd_push(args: argparse.Namespace) -> int:
    from ..push import push_checkpoint

    res = push_checkpoint(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        dry_run=args.dry_run,
        results=tuple(args.results),
    )
    width = max(len(p) for p, _ in res.files)
    for path, size in res.files:
        print(f"{path:<{width}}  {_size(size) if size is not None else '-':>9}")
    total = sum(s or 0 for _, s in res.files)
    if res.left_out:
        print(f"not uploaded (not part of a published checkpoint): {', '.join(res.left_out)}")
    where = f"{res.repo_id}" + (f" (branch {res.revision})" if res.revision else "")
    if args.dry_run:
        print(f"\ndry run: {len(res.files)} file(s), {_size(total)} would go to {where}; nothing uploaded")
    else:
        print(f"\nuploaded {len(res.files)} file(s), {_size(total)} to {where}: {res.url}")
    return 0
