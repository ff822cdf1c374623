"""Batch inspection and a plain-text table, for ``synerdetect inspect PATH... [--json]``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from synerdetect.provenance.core import load_trust_anchors, read_provenance


def inspect_paths(
    paths: Iterable[str | os.PathLike], *, trust_anchors: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """``[{"path": str(p), **read_provenance(p)}]`` for each file path, in order (folders are not expanded).

    The trust anchors are loaded once, up front; a bad trust anchors file raises ``ValueError``.
    """
    anchors_pem = load_trust_anchors(trust_anchors)
    return [{"path": str(p), **read_provenance(p, trust_anchors=anchors_pem)} for p in paths]


def _declared(record: dict[str, Any]) -> str:
    if record.get("error"):
        return "error"
    value = record.get("declared_ai")
    return "null" if value is None else str(bool(value)).lower()


def _sources(record: dict[str, Any]) -> str:
    seen = dict.fromkeys(item.get("source", "?") for item in record.get("evidence") or [])
    return ",".join(seen) or "-"


def _c2pa_state(record: dict[str, Any]) -> str:
    info = record.get("c2pa")
    if record.get("error"):
        return f"error: {record['error']}"
    if not isinstance(info, dict):
        return "-"
    state = str(info.get("validation_state"))
    if state == "valid":
        return "valid, trusted" if info.get("trusted") else "valid, untrusted"
    failures = [f for f in info.get("failures") or [] if f != "signingCredential.untrusted"]
    return f"{state}: {', '.join(failures)}" if failures else state


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def format_inspect_table(records: list[dict[str, Any]], *, max_path_width: int = 60) -> str:
    """A fixed-width table: path, declared_ai, evidence sources, C2PA state (or the error)."""
    rows = [(str(r.get("path", "")), _declared(r), _sources(r), _c2pa_state(r)) for r in records]
    path_w = min(max([len("path")] + [len(r[0]) for r in rows]), max_path_width)
    decl_w = max([len("declared_ai")] + [len(r[1]) for r in rows])
    src_w = max([len("sources")] + [len(r[2]) for r in rows])
    lines = [f"{'path':<{path_w}}  {'declared_ai':<{decl_w}}  {'sources':<{src_w}}  c2pa"]
    lines.append(f"{'-' * path_w}  {'-' * decl_w}  {'-' * src_w}  {'-' * 4}")
    for path, declared, sources, state in rows:
        lines.append(f"{_fit(path, path_w):<{path_w}}  {declared:<{decl_w}}  {sources:<{src_w}}  {state}".rstrip())
    return "\n".join(lines)
