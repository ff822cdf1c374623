"""Optional extras of the install and the one line that adds a missing one.

The base install holds training, evaluation, prediction, provenance and the Hub; the HTTP service and the demo's
photographs are extras (``pip install "synerdetect[serve]"``, ``"synerdetect[demo]"``; ``[all]`` holds both). A
command that needs an extra checks for it first (:func:`require_extra`, which looks the modules up without
importing them) and says which ``pip install`` line adds it, instead of failing later with an ImportError deep in
a library.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtra", "missing_modules", "require_extra"]

#: extra -> the import names of its distributions (pyproject.toml's optional-dependencies, by module).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "python_multipart", "fastapi_offline", "prometheus_client"),
    "demo": ("skimage",),
}


class MissingExtra(RuntimeError):
    """A command or module needs an extra that is not installed (the message is the pip line that adds it)."""


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (a ``sys.modules`` entry of None counts as missing)."""
    missing = []
    for name in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-removed install
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` naming the pip line when ``extra`` is not fully installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(
            f'{what} needs the [{extra}] extra (missing: {", ".join(missing)}): pip install "synerdetect[{extra}]"'
        )
