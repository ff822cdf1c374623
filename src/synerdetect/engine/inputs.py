"""What ``synerdetect predict`` and ``inspect`` read: files, folders (recursive) and globs expanded to image paths.

Torch-free on purpose: ``inspect`` reads provenance only and must start without loading a model library.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from ..data.layouts import LayoutError, discover


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
        else:
            hits = sorted(h for h in glob.glob(item, recursive=True) if Path(h).is_file())
            if hits:
                paths += hits
            else:
                missing.append((item, "no such file, folder or glob match"))
    return list(dict.fromkeys(paths)), missing


__all__ = ["expand_inputs"]
