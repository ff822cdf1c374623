"""The import rule of docs/architecture.md: a module imports only from its own layer or the layers below it, and the
package's import graph has no circle. Imports are read from the source with ``ast`` (those inside functions
count too: a lazy import that runs back up a layer is still a loop), and the cycle check is the standard library's
``graphlib``, independent of the layer table."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import synerdetect

SRC = Path(synerdetect.__file__).resolve().parent

#: Bottom to top. A module's layer is that of the longest prefix listed here.
LAYERS: list[tuple[str, ...]] = [
    (
        "synerdetect.version",
        "synerdetect.utils",
        "synerdetect.config",
        "synerdetect.imageformats",
        "synerdetect.hub",
        "synerdetect.extras",
    ),
    ("synerdetect.presets",),
    ("synerdetect.data", "synerdetect.losses", "synerdetect.provenance", "synerdetect.card", "synerdetect.push"),
    ("synerdetect.model",),
    ("synerdetect.methods",),
    ("synerdetect.cache",),
    ("synerdetect.engine",),
    ("synerdetect.bench", "synerdetect.serve", "synerdetect.api"),
    ("synerdetect.demo",),
    ("synerdetect.cli", "synerdetect.__main__", "synerdetect"),
]


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _imports(name: str, path: Path, is_pkg: bool, known: set[str]) -> dict[str, int]:
    """The project modules ``name`` imports, each with the line of its first import."""
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import module`` imports the module; ``from module import name`` the module itself
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            if t in known and t != name:
                found.setdefault(t, node.lineno)
    return found


def _layer(name: str) -> int:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, f"{name} is in no layer of LAYERS: add it"
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    mods = _modules()
    return {name: _imports(name, path, is_pkg, set(mods)) for name, (path, is_pkg) in mods.items()}


def test_every_module_has_a_layer(graph):
    for name in graph:
        _layer(name)


def test_the_import_graph_has_no_circle(graph):
    try:
        list(graphlib.TopologicalSorter({k: set(v) for k, v in graph.items()}).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import circle: {' -> '.join(e.args[1])}")


def test_no_import_goes_back_up_a_layer(graph):
    upward = [
        f"{name}:{line} imports {target} (layer {_layer(target)} > {_layer(name)})"
        for name, targets in graph.items()
        for target, line in targets.items()
        if _layer(target) > _layer(name)
    ]
    assert not upward, "imports that run back up a layer:\n" + "\n".join(upward)


def test_engine_sibling_imports_sit_at_the_top():
    """Inside the engine, a sibling import in a function is how a circle hides: they are all module-level."""
    late = []
    for name, (path, _) in _modules().items():
        if not name.startswith("synerdetect.engine."):
            continue
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in top:
                late.append(f"{name}:{node.lineno} from .{node.module} import ...")
    assert not late, "\n".join(late)


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a model module importing the engine is reported (a hand-made case)."""
    fake = tmp_path / "synerdetect" / "model"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from ..engine import evaluate\n")
    known = {"synerdetect.model.bad", "synerdetect.engine", "synerdetect.engine.evaluate"}
    found = _imports("synerdetect.model.bad", fake / "bad.py", False, known)
    assert found == {"synerdetect.engine.evaluate": 2}
    assert _layer("synerdetect.engine.evaluate") > _layer("synerdetect.model.bad")


def test_predict_never_enters_train():
    """``predict``'s path (scoring and what it imports, transitively) does not load the training loop."""
    mods = _modules()
    known = set(mods)
    seen, todo = set(), ["synerdetect.engine.scoring"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        path, is_pkg = mods[m]
        todo += list(_imports(m, path, is_pkg, known))
    assert "synerdetect.engine.train" not in seen
    assert "synerdetect.engine.evaluate" not in seen
