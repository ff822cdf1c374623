"""Small helpers shared by the library and the command line: the process's rank, atomic file writes, and
checking that an output location is writable before any work starts."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


class OutputError(OSError):
    """An output path cannot be written (read-only, under a file, a folder given as a file, ...)."""


# ---------------------------------------------------------------------------- distributed
def rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` of this process: explicit values, else torch.distributed when initialised, else the
    ``RANK`` / ``WORLD_SIZE`` variables torchrun and accelerate set, else ``(0, 1)``."""
    import torch.distributed as dist

    if rank is not None and world_size is not None:
        r, w = int(rank), int(world_size)
    elif dist.is_available() and dist.is_initialized():
        r, w = dist.get_rank(), dist.get_world_size()
    else:
        r = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
        w = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"invalid rank {r} / world size {w}")
    return r, w


def is_main_process() -> bool:
    return rank_world()[0] == 0


# ---------------------------------------------------------------------------- atomic writes
def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_bytes(f, data: bytes) -> None:
    """Write ``data`` to an open binary file (a separate function so tests can simulate a crash mid-write)."""
    f.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``path`` atomically: a hidden temporary file in the same folder, fsync, ``os.replace``, fsync the
    folder. A full disk or a crash leaves the previous file intact, never a truncated one. The file gets the
    usual permissions (0666 minus the umask, i.e. 0644 by default), not the 0600 of a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            _write_bytes(f, data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if fsync:
        _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, **kw: Any) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), **kw)


def atomic_write_json(
    path: str | os.PathLike, doc: Any, *, indent: int | None = 2, sort_keys: bool = False, **kw: Any
) -> Path:
    return atomic_write_text(path, json.dumps(doc, indent=indent, sort_keys=sort_keys, default=str) + "\n", **kw)


# ---------------------------------------------------------------------------- output checks
def _probe_dir(d: Path, what: str) -> None:
    """Create (if needed) and write-test folder ``d``; raise OutputError with one line otherwise."""
    for parent in [d, *d.parents]:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{what} {d}: {parent} is a file, not a folder")
        if parent.exists():
            break
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{what} {d}: cannot create the folder ({e.strerror or e})") from None
    probe = d / f".synerdetect-write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{what} {d}: not writable ({e.strerror or e})") from None


def check_output_file(path: str | os.PathLike | None, what: str = "output file") -> None:
    """Before any work: the file ``path`` can be (over)written. ``None`` is accepted (no output asked for)."""
    if path is None:
        return
    p = Path(path)
    if str(path) in ("-",):
        return
    if p.is_dir():
        raise OutputError(f"{what} {p}: is a folder; give a file name")
    if p.exists() and not p.is_file():  # /dev/full, a FIFO, ...: cannot be replaced atomically
        raise OutputError(f"{what} {p}: not a regular file")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{what} {p}: not writable (permission denied)")
    _probe_dir(p.parent if str(p.parent) else Path("."), what)


def check_output_dir(path: str | os.PathLike | None, what: str = "output folder") -> None:
    """Before any work: the folder ``path`` exists or can be created, and files can be written in it."""
    if path is None:
        return
    _probe_dir(Path(path), what)


def barrier() -> None:
    """Wait for every process of the run (a no-op without torch.distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
