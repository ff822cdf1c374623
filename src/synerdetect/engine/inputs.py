"""What ``synerdetect predict`` and ``inspect`` read: files, folders (recursive) and globs expanded to image paths.

Torch-free on purpose: ``inspect`` reads provenance only and must start without loading a model library.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..data.imageio import file_kind
from ..data.layouts import LayoutError, discover


def _special_file_kind(path: str) -> str | None:
    """``"FIFO"``, ``"socket"``, ``"character device"``... for a special file, from ``stat`` (nothing is opened:
    reading a FIFO would block); None for a regular file, a folder or nothing at all."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else file_kind(mode)


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (recursive) and globs -> sorted unique image paths, plus inputs that matched nothing."""
    paths: list[str] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            # the data layer's folder scan: iterative (a 1200-level tree is fine), reports FIFOs and sockets
            try:
                found = sorted(s.path for s in discover(p, layout="folder"))
            except LayoutError:
                found = []
            if not found:
                missing.append((item, "folder holds no image files"))
            paths += found
        elif p.is_file():
            paths.append(str(p))  # an explicit file is tried even with an odd extension
        elif (kind := _special_file_kind(item)) is not None:
            missing.append((item, f"not a regular file ({kind})"))
        else:
            matches = sorted(glob.glob(item, recursive=True))
            hits = [h for h in matches if Path(h).is_file()]
            special = [(h, f"not a regular file ({k})") for h in matches if (k := _special_file_kind(h)) is not None]
            missing += special  # a glob that matches a FIFO says so, like a folder scan
            if hits:
                paths += hits
            elif not special:
                missing.append((item, "no such file, folder or glob match"))
    return list(dict.fromkeys(paths)), missing


__all__ = ["expand_inputs"]
