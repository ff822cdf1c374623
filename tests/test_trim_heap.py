"""utils.trim_heap: freed C-heap memory that glibc keeps in its arena goes back to the operating system (what the
service's batcher calls when it falls idle after a batch). Measured on the process's own RSS, with the heap shaped
by hand through libc's malloc/free so that glibc's automatic trimming cannot do it first."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import pytest

from synerdetect.utils import trim_heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc are Linux")
def test_trim_heap_returns_freed_heap_pages():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 KiB blocks stay under glibc's mmap threshold, so they come from the heap; the last block stays allocated,
    # pinning the heap's top so that free() alone cannot shrink it.
    n, size = 2000, 64 * 1024
    blocks = [libc.malloc(size) for _ in range(n)]
    assert all(blocks)
    for b in blocks:
        ctypes.memset(b, 1, size)  # touch: make the pages resident
    base = _rss_mb()
    for b in blocks[:-1]:
        libc.free(b)
    kept = _rss_mb()
    assert trim_heap() is True
    trimmed = _rss_mb()
    libc.free(blocks[-1])
    if base - kept > 64:
        pytest.skip("this libc trimmed the freed blocks by itself")  # nothing left for trim_heap to show
    assert kept - trimmed > 64, (base, kept, trimmed)  # of the ~125 MB freed, most goes back
