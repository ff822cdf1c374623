"""Dataset sanity check: decode every file and summarise what is there.

``check_dataset`` discovers the samples (any layout), decodes every file with
:func:`~synerdetect.data.imageio.load_image` in a thread pool (Pillow releases
the GIL while decoding) and returns a JSON-serialisable report::

    {
      "root": str, "layout": str, "split": str | None,
      "total": int, "readable": int, "unreadable": int,
      "formats": [sorted format names],
      "counts": {generator: {"real"|"fake"|"unlabelled": {format: n}}},   # readable files
      "bad_counts": {generator: {class: n}},                               # unreadable files
      "bad_files": [{"path", "reason", "generator", "label"}],            # sorted by path
      "min_side": int | None, "max_side": int | None,                      # over readable files
      "small": int,                                                        # readable, shorter side < 224
      "warnings": [str],   # e.g. files listed twice in a manifest (kept once), ignored folders
    }

:func:`format_check_report` renders it as Markdown.

A tree whose labels would be silently wrong (class folders inside class
folders, a generator folder named like a class, genimage and cnndetection
layouts mixed in one tree) is not checked image by image: ``check_dataset``
raises the same :class:`~synerdetect.data.layouts.AmbiguousLayoutError` as
:func:`~synerdetect.data.layouts.discover`, whose one-line message names the
folder and how to proceed; a manifest with contradictory labels or not in UTF-8
raises :class:`~synerdetect.data.layouts.ManifestError` likewise.  FIFOs,
sockets and devices are reported as unreadable files (``"not a regular file
(FIFO)"``), never opened.
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from .imageio import DEFAULT_MAX_PIXELS, UnreadableImage, load_image_with_format
from .layouts import Sample, detect_layout, discover_with_warnings

__all__ = ["check_dataset", "format_check_report"]

_CLASS_NAMES = {0: "real", 1: "fake", -1: "unlabelled"}
_SMALL_SIDE = 224


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _check_one(sample: Sample, max_pixels: int | None) -> tuple[Sample, str | None, str | None, tuple[int, int] | None]:
    """(sample, format, error reason, size)."""
    try:
        img, fmt = load_image_with_format(sample.path, max_pixels=max_pixels)
    except UnreadableImage as e:
        return sample, None, e.reason, None
    except Exception as e:  # noqa: BLE001 - a checker must not die on one file
        return sample, None, f"unexpected error: {type(e).__name__}: {e}", None
    size = img.size
    img.close()
    return sample, fmt, None, size


def _iter_results(samples: list[Sample], max_pixels: int | None, workers: int):
    """Results in sample order; at most ``4 * workers`` files in flight."""
    if workers <= 1:
        for s in samples:
            yield _check_one(s, max_pixels)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check") as pool:
        pending: deque = deque()
        for s in samples:
            pending.append(pool.submit(_check_one, s, max_pixels))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def check_dataset(
    root: str | os.PathLike,
    layout: str = "auto",
    split: str | None = None,
    *,
    workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode every image of a dataset and report counts and unreadable files.

    Args:
        root, layout, split: as for :func:`~synerdetect.data.layouts.discover`.
        workers: decoding threads (default ``min(8, cpu_count)``; ``0``/``1`` = serial).
        max_pixels: decompression-bomb cap (see :func:`load_image`).
        progress: show a tqdm progress bar.
    """
    resolved = detect_layout(root) if str(layout).strip().lower() == "auto" else str(layout)
    samples, warnings = discover_with_warnings(root, layout=resolved, split=split)
    workers = _default_workers() if workers is None else int(workers)

    counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    bad: list[dict[str, Any]] = []
    bad_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    formats: set[str] = set()
    min_side: int | None = None
    max_side: int | None = None
    small = 0

    bar = tqdm(total=len(samples), desc="checking images", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for sample, fmt, reason, size in _iter_results(samples, max_pixels, workers):
            bar.update(1)
            if reason is not None:
                bad.append(
                    {"path": sample.path, "reason": reason, "generator": sample.generator, "label": sample.label}
                )
                bad_counts[sample.generator][_CLASS_NAMES.get(sample.label, str(sample.label))] += 1
                continue
            assert fmt is not None and size is not None
            formats.add(fmt)
            counts[sample.generator][_CLASS_NAMES.get(sample.label, str(sample.label))][fmt] += 1
            short, long_ = min(size), max(size)
            min_side = short if min_side is None else min(min_side, short)
            max_side = long_ if max_side is None else max(max_side, long_)
            small += short < _SMALL_SIDE
    finally:
        bar.close()

    bad.sort(key=lambda b: b["path"])
    plain_counts = {g: {c: dict(sorted(f.items())) for c, f in sorted(counts[g].items())} for g in sorted(counts)}
    return {
        "root": os.path.abspath(os.fspath(root)),
        "layout": resolved,
        "split": split,
        "total": len(samples),
        "readable": len(samples) - len(bad),
        "unreadable": len(bad),
        "formats": sorted(formats),
        "counts": plain_counts,
        "bad_counts": {g: dict(sorted(bad_counts[g].items())) for g in sorted(bad_counts)},
        "bad_files": bad,
        "min_side": min_side,
        "max_side": max_side,
        "small": small,
        "warnings": list(warnings),
    }


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _visible(text: str) -> str:
    """Control characters (newline, tab...) spelled out, so a file name cannot break a report line."""
    out = []
    for ch in str(text):
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _md_code(text: str) -> str:
    """``text`` as an inline code span (control characters escaped; backticks fenced)."""
    text = _visible(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def format_check_report(report: dict[str, Any], *, max_bad: int | None = None) -> str:
    """Markdown summary: per generator x class table with one column per format,
    totals, then the unreadable files with reasons (all, or the first ``max_bad``)."""
    fmts = list(report.get("formats", []))
    lines = [
        f"# Dataset check: {_md_code(str(report.get('root')))}",
        "",
        f"- layout: `{report.get('layout')}`, split: `{report.get('split')}`",
        f"- files: {report.get('total', 0)} total, {report.get('readable', 0)} readable, "
        f"{report.get('unreadable', 0)} unreadable",
    ]
    if report.get("min_side") is not None:
        lines.append(
            f"- image sides: min {report['min_side']} px, max {report['max_side']} px; "
            f"{report.get('small', 0)} readable image(s) with shorter side < {_SMALL_SIDE} px"
        )
    counts = report.get("counts", {})
    bad_counts = report.get("bad_counts", {})
    with_bad = bool(report.get("unreadable", 0))
    extra = ["unreadable"] if with_bad else []
    header = ["generator", "class", *fmts, *extra, "total"]
    lines += ["", "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    col_tot: dict[str, int] = defaultdict(int)
    for gen in sorted(set(counts) | set(bad_counts)):
        classes = sorted(set(counts.get(gen, {})) | set(bad_counts.get(gen, {})))
        for cls in classes:
            per_fmt = counts.get(gen, {}).get(cls, {})
            cells = {f: per_fmt.get(f, 0) for f in fmts}
            if with_bad:
                cells["unreadable"] = bad_counts.get(gen, {}).get(cls, 0)
            cells["total"] = sum(cells.values())
            for k, v in cells.items():
                col_tot[k] += v
            row = " | ".join(str(cells[k]) for k in header[2:])
            lines.append(f"| {_md_escape(_visible(gen))} | {cls} | {row} |")
    lines.append("| **total** | | " + " | ".join(f"**{col_tot[k]}**" for k in header[2:]) + " |")

    bad = report.get("bad_files", [])
    lines += ["", f"## Unreadable files ({len(bad)})", ""]
    if not bad:
        lines.append("None.")
    else:
        shown = bad if max_bad is None else bad[:max_bad]
        for b in shown:
            lines.append(f"- {_md_code(b['path'])}: {_md_escape(_visible(b['reason']))}")
        if len(shown) < len(bad):
            lines.append(f"- ... and {len(bad) - len(shown)} more")
    warnings = report.get("warnings") or []
    if warnings:
        lines += ["", f"## Warnings ({len(warnings)})", ""]
        lines += [f"- {_md_escape(_visible(w))}" for w in warnings]
    return "\n".join(lines) + "\n"
