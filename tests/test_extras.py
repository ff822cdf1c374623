"""A command whose extra is missing prints the one pip line that adds it (the module is hidden through
``sys.modules[name] = None``, which makes Python's import system treat it as absent)."""

from __future__ import annotations

import importlib
import sys

import pytest

from synerdetect.cli import main
from synerdetect.extras import EXTRAS, MissingExtra, missing_modules


def test_everything_is_installed_here():
    assert missing_modules("serve") == [] and missing_modules("demo") == []


@pytest.mark.parametrize(
    ("hidden", "argv", "line"),
    [
        ("fastapi", ["serve", "--checkpoint", "x"], 'pip install "synerdetect[serve]"'),
        ("prometheus_client", ["bench", "serve", "--checkpoint", "x"], 'pip install "synerdetect[serve]"'),
        ("skimage", ["demo", "--out", "unused"], 'pip install "synerdetect[demo]"'),
    ],
)
def test_a_missing_extra_is_one_pip_line(hidden, argv, line, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, hidden, None)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(line) and hidden in err and "\n" not in err
    assert not (tmp_path / "unused").exists()


def test_the_service_package_says_so_too(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    for name in [m for m in sys.modules if m == "synerdetect.serve" or m.startswith("synerdetect.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtra, match=r'uvicorn\): pip install "synerdetect\[serve\]"'):
        importlib.import_module("synerdetect.serve")


def test_the_extras_match_pyproject():
    import tomllib
    from pathlib import Path

    doc = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = doc["project"]["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        names = [r.split(">")[0].split("[")[0].replace("-", "_").lower() for r in extras[extra]]
        assert len(names) == len(modules), extra
    assert "synerdetect[serve,demo]" in extras["all"] and "synerdetect[all]" in extras["test"]
    base = " ".join(doc["project"]["dependencies"])
    assert "fastapi" not in base and "scikit-image" not in base and "pillow-heif" in base
