"""A Hugging Face Hub cache laid out exactly as ``huggingface_hub`` lays it out, built from a local folder.

``<cache>/models--org--name/blobs/<hash>`` (LFS files under their sha256, others under their git blob sha1),
``snapshots/<commit>/<path>`` as relative symlinks into ``blobs/`` and ``refs/<revision>`` holding the commit: what
``snapshot_download`` leaves after a download, and what it reads back with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".png")


def blob_name(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix in LFS_SUFFIXES:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's object id


def make_hub_cache(
    cache: Path, repo_id: str, folder: Path, *, revision: str = "main", commit: str | None = None
) -> Path:
    """Put ``folder``'s files into ``cache`` as repo ``repo_id`` at ``revision``; returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for src in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = repo / "blobs" / blob_name(src)
        if not blob.exists():
            blob.write_bytes(src.read_bytes())
        dst = snapshot / src.relative_to(folder)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, dst.parent), dst)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)  # no newline, as the hub client writes it
    return snapshot
