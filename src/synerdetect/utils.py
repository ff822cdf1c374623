"""Small helpers shared by the library and the command line: the process's rank, atomic file writes, and
checking that an output location is writable before any work starts."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import math
import os
import re
import sys
import uuid
from collections.abc import Iterable, Mapping
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


#: The hidden temporary file of :func:`atomic_write_bytes`: ``.NAME.PID.8HEX.tmp`` beside ``NAME``.
_TMP_SUFFIX = r"\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp"


def _tmp_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a PID we wrote: never treat as stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but is not ours, or cannot tell: keep the file
    return True


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed :func:`atomic_write_bytes` left beside ``path`` (kill -9 skips its
    cleanup). Only files named exactly as this module names them for ``path`` and whose writer PID is no live
    process are removed; a write in flight in another process keeps its file. Returns the removed paths."""
    path = Path(path)
    pattern = re.compile(r"\." + re.escape(path.name) + _TMP_SUFFIX)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for e in entries:
        m = pattern.fullmatch(e.name)
        if m is None or _pid_alive(int(m["pid"])):
            continue
        try:
            if e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            pass  # another writer removed it first, or the folder is read-only: not this write's problem
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``path`` atomically: a hidden temporary file in the same folder, fsync, ``os.replace``, fsync the
    folder. A full disk or a crash leaves the previous file intact, never a truncated one. The file gets the
    usual permissions (0666 minus the umask, i.e. 0644 by default), not the 0600 of a temporary file.
    Temporary files a killed earlier write to the same path left behind are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = _tmp_name(path)
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


def jsonable(x: Any) -> Any:
    """A plain-JSON copy of ``x``: numpy scalars and arrays -> Python, paths -> str, objects with ``to_dict()``
    -> their dict, sets -> lists, and non-finite floats -> None (strict JSON has no NaN; readers such as
    ``jq`` and browsers reject it). Anything else is left for ``json.dumps(default=str)``."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int)):
        return x
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    np = sys.modules.get("numpy")  # no numpy object can exist unless numpy is imported: do not import it here
    if np is not None and isinstance(x, (np.ndarray, np.generic)):
        return jsonable(x.tolist())
    to_dict = getattr(x, "to_dict", None)
    if callable(to_dict):
        return jsonable(to_dict())
    return x


def atomic_write_json(
    path: str | os.PathLike, doc: Any, *, indent: int | None = 2, sort_keys: bool = False, **kw: Any
) -> Path:
    """``doc`` as strict JSON (see :func:`jsonable`: NaN and infinities are written as null), atomically."""
    text = json.dumps(jsonable(doc), indent=indent, sort_keys=sort_keys, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n", **kw)


# ---------------------------------------------------------------------------- CSV
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the operating system; True when it could (glibc).

    A decoded 9400 x 9400 image is freed after its batch, but glibc keeps freed heap memory in its arenas, so a
    server's RSS would stay at the peak of the largest image it ever decoded. ``malloc_trim(0)`` returns the free
    pages of every arena. No Python library exposes it, hence ctypes; elsewhere (musl, macOS) this is a no-op."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)  # its result only says whether anything was released
    return True


@functools.cache
def _malloc_trim() -> Any:
    """libc's ``malloc_trim``, looked up once (the batcher calls :func:`trim_heap` after every idle batch)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def one_line(text: object, limit: int = 300) -> str:
    """``text`` as one line for an error message: whitespace runs (newlines in a library's message) folded to one
    space, cut to ``limit`` characters with ``...``."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")


def public_paths(value: Any) -> Any:
    """``value`` (any JSON-like value) with every local filesystem path cut to its last component, for what gets
    published (the model card): ``/home/ann/data/val`` -> ``val``. Names and Hub repo ids (``org/name@commit``, not
    a local path) are kept. The folder's name still says which data set or parent it was; the rest of the path says
    only where it lay on one machine (and whose home it was), which no reader can use."""
    if isinstance(value, Mapping):
        return {k: public_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public_paths(v) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value):
        if value.startswith(("/", "~", "\\")) or _WINDOWS_ABS.match(value) or os.path.exists(value):
            return Path(value.rstrip("/\\").replace("\\", "/")).name
    return value


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: a text starting with ``= + - @``, a tab or a carriage return gets a
    leading ``'`` (the rule of the web page's CSV, serve/static). Numbers, booleans and None are unchanged, so a
    negative logit stays a number."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


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


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_not_an_input(
    path: str | os.PathLike | None, inputs: Iterable[str | os.PathLike], what: str = "output"
) -> None:
    """Before any work: the output ``path`` (a file or a folder) is none of ``inputs`` and lies in none of the
    input folders, so a run neither replaces what it reads nor writes where its next run would read (symlinks
    resolved). ``inputs`` may name files, folders, or anything else (globs, missing paths: ignored)."""
    if path is None or str(path) == "-":
        return
    out = Path(path).resolve()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            if _is_within(out, p.resolve()):
                raise OutputError(f"{what} {path}: inside the input folder {item}; write it somewhere else")
        elif p.exists() and (out == p.resolve() or (out.exists() and os.path.samefile(out, p))):
            raise OutputError(f"{what} {path}: is the input file {item}; write it somewhere else")


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


def flatten_dict(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out
