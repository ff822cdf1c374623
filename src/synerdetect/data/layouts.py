"""Dataset layouts: turn a folder tree (or a manifest file) into labelled samples.

Labels come **only** from explicit folder names or manifest values, never from
the alphabetical order of folders:

* real (``0``): ``0_real``, ``real``, ``nature``
* fake (``1``): ``1_fake``, ``fake``, ``ai``

(matched case-insensitively; ``nature``/``ai`` only in the GenImage layout).

Supported layouts (``discover(root, layout=...)``):

``cnndetection``  (CNNDetection, UniversalFakeDetect, AIGCDetectBenchmark)
    ``<root>/{train,val,test}/<X>/[<class>/]{0_real,1_fake}/...``.
    ``generator`` is the **first folder below the split** (``<X>``): the LSUN
    object class for CNNDetection ``train``/``val``, the generator name for
    ``test`` (``test/stylegan/car/0_real`` -> ``"stylegan"``).  Callers group as
    they need.  ``root`` may be

    * the dataset root holding ``train/ val/ test/`` (``split`` selects one,
      ``None`` takes all; ``Sample.split`` is the split folder name);
    * a split folder (``.../test``) -> generator = first folder below it;
    * a generator folder inside a split folder (``.../test/progan``) ->
      generator = its name (``"progan"``), even when it holds class subfolders;
    * a folder holding ``0_real``/``1_fake`` directly -> generator = its name
      (or its parent's name when it is itself a split folder, e.g.
      ``Chameleon/test`` -> ``"Chameleon"``);
    * any other folder of generator folders (e.g. UniFD ``diffusion_datasets``)
      -> generator = first folder below ``root``, ``split`` is not selectable
      there and is only recorded on the samples.

    ``real``/``fake`` folder names are accepted as well as ``0_real``/``1_fake``.

``genimage``
    ``<root>/<generator>/<subset>/{train,val}/{ai,nature}/...`` (e.g.
    ``stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/train/ai``).  ``generator``
    is the top folder name.  ``root`` may also be one generator folder
    (generator = its name), one subset folder (generator = its parent's name)
    or one split folder (generator = its grand-parent's name).  ``split``
    selects ``train``/``val``.

``chameleon``
    ``<root>/test/{0_real,1_fake}`` or ``<root>/{0_real,1_fake}``;
    generator = ``"chameleon"``.

``manifest``
    ``root`` is a ``.csv`` (header with ``path,label[,generator][,split]``),
    ``.jsonl`` (one JSON object per line) or ``.json`` (a list of objects, or
    ``{"samples": [...]}``, or JSON lines).  Relative paths are resolved
    against the manifest's folder.  Labels: ``0/1/real/fake/nature/ai/0_real/
    1_fake``.  Without any ``label`` column/key all labels are ``-1``
    (prediction).  Missing generator -> ``"unknown"``.  A bad row raises
    :class:`ManifestError` naming the file and line.  When the manifest has a
    ``split`` column, ``split=`` filters on it.

``folder``
    every image below ``root`` (recursively), ``label=-1`` (prediction);
    generator = first folder below ``root`` (root's own name for top-level files).

``auto``
    manifest for a ``.csv/.jsonl/.json`` file; ``genimage`` if
    ``[*/[*/]]{train,val}/{ai,nature}`` exists; ``chameleon`` if
    ``{0_real,1_fake}`` sit directly in ``root`` or ``root/<split>`` and the
    dataset folder name contains "chameleon"; ``cnndetection`` if label folders
    exist 1-4 levels below ``root``; otherwise :class:`LayoutError` listing what
    was looked for (use ``layout="folder"`` for unlabelled images).

Image files are recognised by extension (``jpg jpeg png webp bmp tif tiff gif``,
case-insensitive); hidden files/folders (``.name``) and ``__MACOSX`` are
skipped; symlinked folders are followed (with loop protection).  Folder
layouts are returned sorted by path; manifests keep their row order.
Sample paths are absolute (``os.path.abspath``, symlinks not resolved).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .imageio import IMAGE_EXTENSIONS

__all__ = [
    "LAYOUTS",
    "LayoutError",
    "ManifestError",
    "Sample",
    "count_by_generator",
    "detect_layout",
    "discover",
    "generators",
    "parse_label",
]

logger = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("auto", "cnndetection", "genimage", "chameleon", "manifest", "folder")
_LAYOUT_ALIASES = {
    "aigcdetectbenchmark": "cnndetection",
    "aigcdetect": "cnndetection",
    "unifd": "cnndetection",
    "csv": "manifest",
    "jsonl": "manifest",
}

SPLIT_NAMES: frozenset[str] = frozenset({"train", "val", "valid", "validation", "test"})
CNN_LABEL_DIRS: dict[str, int] = {"0_real": 0, "1_fake": 1, "real": 0, "fake": 1}
GENIMAGE_LABEL_DIRS: dict[str, int] = {"nature": 0, "ai": 1}
MANIFEST_EXTENSIONS: frozenset[str] = frozenset({".csv", ".jsonl", ".json"})

_LABEL_VALUES: dict[str, int] = {
    "0": 0, "1": 1,
    "real": 0, "fake": 1,
    "nature": 0, "ai": 1,
    "0_real": 0, "1_fake": 1,
}


class LayoutError(ValueError):
    """The folder does not match the requested (or any known) layout."""


class ManifestError(ValueError):
    """A manifest file is malformed (message names file and line)."""


@dataclass(frozen=True)
class Sample:
    """One image.  ``label``: 0 real, 1 fake, -1 unknown (prediction)."""

    path: str
    label: int
    generator: str
    split: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- public API


def discover(root: str | os.PathLike, layout: str = "auto", split: str | None = None) -> list[Sample]:
    """List the labelled images of a dataset.  See the module docstring.

    Raises:
        LayoutError: root missing, layout not recognised, requested split
            absent, or no image found.
        ManifestError: malformed manifest row.
    """
    layout = _normalize_layout(layout)
    root_p = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not root_p.exists():
        raise LayoutError(f"dataset root does not exist: {root_p}")
    if layout == "auto":
        layout = detect_layout(root_p)
        logger.info("detected layout %r for %s", layout, root_p)
    if layout != "manifest" and layout != "folder" and not root_p.is_dir():
        raise LayoutError(f"layout {layout!r} needs a folder, got a file: {root_p}")

    if layout == "cnndetection":
        samples = _discover_cnndetection(root_p, split)
    elif layout == "genimage":
        samples = _discover_genimage(root_p, split)
    elif layout == "chameleon":
        samples = _discover_chameleon(root_p, split)
    elif layout == "manifest":
        return _discover_manifest(root_p, split)
    elif layout == "folder":
        samples = _discover_folder(root_p, split)
    else:  # pragma: no cover - _normalize_layout guards
        raise LayoutError(f"unknown layout {layout!r}")
    if not samples:
        raise LayoutError(f"no image files found under {root_p} (layout {layout!r}, split {split!r})")
    samples.sort(key=lambda s: s.path)
    return samples


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the layout ``discover(root, "auto")`` would use."""
    root_p = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if root_p.is_file():
        if root_p.suffix.lower() in MANIFEST_EXTENSIONS:
            return "manifest"
        raise LayoutError(
            f"{root_p} is a file; only manifests ({', '.join(sorted(MANIFEST_EXTENSIONS))}) "
            "can be given as a dataset root"
        )
    if not root_p.is_dir():
        raise LayoutError(f"dataset root does not exist: {root_p}")
    if _genimage_split_dirs(root_p):
        return "genimage"
    flat = _flat_label_bases(root_p)
    if flat and "chameleon" in _dataset_name(root_p).lower():
        return "chameleon"
    if flat or _find_label_dirs(root_p, CNN_LABEL_DIRS, max_depth=4, first_only=True):
        return "cnndetection"
    raise LayoutError(
        f"could not recognise the dataset layout of {root_p}. Looked for:\n"
        "  - manifest: root is a .csv / .jsonl / .json file\n"
        "  - genimage: [<generator>/[<subset>/]]{train,val}/{ai,nature}/\n"
        "  - chameleon: [test/]{0_real,1_fake}/ in a folder named *chameleon*\n"
        "  - cnndetection: {0_real,1_fake,real,fake}/ folders 1-4 levels below root "
        "(e.g. test/<generator>/[<class>/]0_real/)\n"
        "Pass layout=... explicitly, or layout='folder' for unlabelled images."
    )


def generators(samples: Iterable[Sample]) -> list[str]:
    """Sorted distinct generator names."""
    return sorted({s.generator for s in samples})


def count_by_generator(samples: Iterable[Sample]) -> dict[str, dict[int, int]]:
    """``{generator: {label: count}}`` (generators sorted)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for s in samples:
        counts[s.generator][s.label] += 1
    return {g: dict(sorted(counts[g].items())) for g in sorted(counts)}


def parse_label(value: Any) -> int:
    """Parse a label value (0/1/real/fake/nature/ai/0_real/1_fake) -> 0 or 1.

    Raises ValueError for anything else (booleans are rejected as ambiguous).
    """
    if isinstance(value, bool):
        raise ValueError(f"ambiguous boolean label {value!r}; use 0/1 or real/fake")
    if isinstance(value, int):
        if value in (0, 1):
            return value
        raise ValueError(f"label must be 0 or 1, got {value!r}")
    if isinstance(value, float):
        if value in (0.0, 1.0):
            return int(value)
        raise ValueError(f"label must be 0 or 1, got {value!r}")
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _LABEL_VALUES:
            return _LABEL_VALUES[key]
        if key in ("0.0", "1.0"):
            return int(float(key))
    raise ValueError(
        f"unrecognised label {value!r}; expected one of 0, 1, real, fake, nature, ai, 0_real, 1_fake"
    )


# ----------------------------------------------------------------------------- file system helpers


def _normalize_layout(layout: str) -> str:
    key = str(layout).strip().lower()
    key = _LAYOUT_ALIASES.get(key, key)
    if key not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return key


def _skip_name(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _is_split(name: str) -> bool:
    return name.lower() in SPLIT_NAMES


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _list_dir(d: Path, *, want_files: bool = True) -> tuple[list[Path], list[str]]:
    """(subdirs, image file paths), sorted by name, hidden entries skipped, symlinks followed."""
    try:
        with os.scandir(d) as it:
            entries = list(it)
    except OSError as e:
        logger.warning("cannot list %s: %s", d, e)
        return [], []
    dirs: list[Path] = []
    files: list[tuple[str, str]] = []
    for e in entries:
        name = e.name
        if _skip_name(name):
            continue
        try:
            if want_files and _is_image(name):
                if e.is_file(follow_symlinks=True):
                    files.append((name, e.path))
                    continue
            if e.is_dir(follow_symlinks=True):
                dirs.append(Path(e.path))
        except OSError:
            continue
    dirs.sort(key=lambda p: p.name)
    files.sort()
    return dirs, [path for _, path in files]


def _subdirs(d: Path) -> list[Path]:
    return _list_dir(d, want_files=False)[0]


def _walk_images(d: Path) -> Iterator[str]:
    """All image files below ``d`` (recursively, deterministic order)."""
    seen: set[str] = set()
    stack = [d]
    while stack:
        cur = stack.pop()
        try:
            real = os.path.realpath(cur)
        except OSError:
            continue
        if real in seen:
            logger.warning("skipping symlink loop at %s", cur)
            continue
        seen.add(real)
        dirs, files = _list_dir(cur)
        yield from files
        stack.extend(reversed(dirs))


def _label_children(d: Path, names: dict[str, int]) -> list[tuple[Path, int]]:
    return [(c, names[c.name.lower()]) for c in _subdirs(d) if c.name.lower() in names]


def _find_label_dirs(
    base: Path, names: dict[str, int], *, max_depth: int, first_only: bool = False
) -> list[tuple[Path, int, tuple[str, ...]]]:
    """Breadth-first search for label folders 1..max_depth levels below ``base``.

    Returns ``(label_dir, label, parts)`` where ``parts`` are the folder names
    between ``base`` and the label folder.  Label folders are not descended
    into (the outermost label folder wins).
    """
    found: list[tuple[Path, int, tuple[str, ...]]] = []
    level: list[tuple[Path, tuple[str, ...]]] = [(base, ())]
    seen = {os.path.realpath(base)}
    for _depth in range(1, max_depth + 1):
        nxt: list[tuple[Path, tuple[str, ...]]] = []
        for d, parts in level:
            for c in _subdirs(d):
                key = c.name.lower()
                if key in names:
                    found.append((c, names[key], parts))
                    if first_only:
                        return found
                    continue
                real = os.path.realpath(c)
                if real in seen:
                    continue
                seen.add(real)
                nxt.append((c, parts + (c.name,)))
        level = nxt
        if not level:
            break
    return found


def _dataset_name(root: Path) -> str:
    return root.parent.name if _is_split(root.name) else root.name


def _samples_from_label_dir(
    label_dir: Path, label: int, generator: str, split: str | None
) -> list[Sample]:
    return [Sample(p, label, generator, split) for p in _walk_images(label_dir)]


def _split_matches(found: str | None, wanted: str | None) -> bool:
    return wanted is None or (found is not None and found.lower() == wanted.lower())


# ----------------------------------------------------------------------------- cnndetection


_CNN_MAX_DEPTH = 6


def _discover_cnndetection(root: Path, split: str | None) -> list[Sample]:
    # units: (base folder, split name, fixed generator or None)
    units: list[tuple[Path, str | None, str | None]] = []
    parent_is_split = _is_split(root.parent.name) and root.parent != root
    if _label_children(root, CNN_LABEL_DIRS):
        own_split = root.name if _is_split(root.name) else (root.parent.name if parent_is_split else None)
        units.append((root, own_split, _dataset_name(root)))
    elif _is_split(root.name):
        units.append((root, root.name, None))
    elif parent_is_split:
        units.append((root, root.parent.name, root.name))
    else:
        split_dirs = [
            d for d in _subdirs(root)
            if _is_split(d.name) and _find_label_dirs(d, CNN_LABEL_DIRS, max_depth=4, first_only=True)
        ]
        if split_dirs:
            chosen = [d for d in split_dirs if _split_matches(d.name, split)]
            if not chosen:
                raise LayoutError(
                    f"split {split!r} not found under {root}; available: {[d.name for d in split_dirs]}"
                )
            units.extend((d, d.name, None) for d in chosen)
        else:
            units.append((root, None, None))

    samples: list[Sample] = []
    for base, base_split, fixed_gen in units:
        if base_split is not None and not _split_matches(base_split, split):
            raise LayoutError(f"{root} is the {base_split!r} split but split={split!r} was requested")
        rec_split = base_split if base_split is not None else split
        label_dirs = _find_label_dirs(base, CNN_LABEL_DIRS, max_depth=_CNN_MAX_DEPTH)
        if not label_dirs:
            raise LayoutError(
                f"no 0_real/1_fake (or real/fake) folders found under {base} (cnndetection layout)"
            )
        for label_dir, label, parts in label_dirs:
            if fixed_gen is not None:
                gen = fixed_gen
            elif parts:
                gen = parts[0]
            else:
                gen = _dataset_name(base)
            samples.extend(_samples_from_label_dir(label_dir, label, gen, rec_split))
    return samples


# ----------------------------------------------------------------------------- genimage


def _genimage_split_dirs(root: Path) -> list[Path]:
    """Split folders (train/val/...) holding ai/nature folders, 0..3 levels below root."""
    if _is_split(root.name) and _label_children(root, GENIMAGE_LABEL_DIRS):
        return [root]
    out: list[Path] = []
    level = [root]
    for _depth in range(3):
        nxt: list[Path] = []
        for d in level:
            for c in _subdirs(d):
                if _is_split(c.name) and _label_children(c, GENIMAGE_LABEL_DIRS):
                    out.append(c)
                elif c.name.lower() not in GENIMAGE_LABEL_DIRS:
                    nxt.append(c)
        level = nxt
    return out


def _discover_genimage(root: Path, split: str | None) -> list[Sample]:
    split_dirs = _genimage_split_dirs(root)
    if not split_dirs:
        raise LayoutError(
            f"no <generator>/<subset>/{{train,val}}/{{ai,nature}}/ folders found under {root} (genimage layout)"
        )
    chosen = [d for d in split_dirs if _split_matches(d.name, split)]
    if not chosen:
        raise LayoutError(
            f"split {split!r} not found under {root}; available: {sorted({d.name for d in split_dirs})}"
        )
    samples: list[Sample] = []
    for d in chosen:
        if d == root:  # root is a split folder: <generator>/<subset>/<split>
            gen = root.parent.parent.name
        else:
            parts = d.relative_to(root).parts[:-1]  # folders between root and the split folder
            if len(parts) >= 2:  # root is the dataset root
                gen = parts[0]
            elif len(parts) == 1:  # root is a generator folder
                gen = root.name
            else:  # root is a subset folder
                gen = root.parent.name
        for label_dir, label in _label_children(d, GENIMAGE_LABEL_DIRS):
            samples.extend(_samples_from_label_dir(label_dir, label, gen, d.name))
    return samples


# ----------------------------------------------------------------------------- chameleon


def _flat_label_bases(root: Path) -> list[tuple[Path, str | None]]:
    """Folders holding 0_real/1_fake directly: root itself, or root/<split>."""
    if _label_children(root, CNN_LABEL_DIRS):
        return [(root, root.name if _is_split(root.name) else None)]
    return [(d, d.name) for d in _subdirs(root) if _is_split(d.name) and _label_children(d, CNN_LABEL_DIRS)]


def _discover_chameleon(root: Path, split: str | None) -> list[Sample]:
    bases = _flat_label_bases(root)
    if not bases:
        raise LayoutError(f"no [test/]{{0_real,1_fake}}/ folders found under {root} (chameleon layout)")
    chosen = [(b, s) for b, s in bases if s is None or _split_matches(s, split)]
    if not chosen:
        raise LayoutError(f"split {split!r} not found under {root}; available: {[s for _, s in bases]}")
    samples: list[Sample] = []
    for base, base_split in chosen:
        rec_split = base_split if base_split is not None else split
        for label_dir, label in _label_children(base, CNN_LABEL_DIRS):
            samples.extend(_samples_from_label_dir(label_dir, label, "chameleon", rec_split))
    return samples


# ----------------------------------------------------------------------------- folder


def _discover_folder(root: Path, split: str | None) -> list[Sample]:
    if root.is_file():
        if not _is_image(root.name):
            raise LayoutError(f"{root} is not an image file (by extension)")
        return [Sample(str(root), -1, root.parent.name, split)]
    samples = []
    for p in _walk_images(root):
        parts = Path(p).relative_to(root).parts
        gen = parts[0] if len(parts) > 1 else root.name
        samples.append(Sample(p, -1, gen, split))
    return samples


# ----------------------------------------------------------------------------- manifest


def _discover_manifest(path: Path, split: str | None) -> list[Sample]:
    if not path.is_file():
        raise LayoutError(f"manifest must be a file: {path}")
    ext = path.suffix.lower()
    if ext == ".csv":
        rows = _read_csv_manifest(path)
    elif ext == ".jsonl":
        rows = _read_jsonl_manifest(path)
    elif ext == ".json":
        rows = _read_json_manifest(path)
    else:
        raise LayoutError(f"unsupported manifest extension {ext!r} ({path}); use .csv, .jsonl or .json")
    if not rows:
        raise ManifestError(f"{path}: manifest has no rows")

    labelled = any(r.get("label") not in (None, "") for _, r in rows)
    has_split = any(r.get("split") not in (None, "") for _, r in rows)
    base = path.parent
    samples: list[Sample] = []
    for where, row in rows:
        p = row.get("path")
        if not isinstance(p, str) or not p.strip():
            raise ManifestError(f"{where}: missing or empty 'path'")
        p = os.path.expanduser(p.strip())
        full = p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
        if labelled:
            raw = row.get("label")
            if raw is None or raw == "":
                raise ManifestError(f"{where}: missing 'label' (other rows have one)")
            try:
                label = parse_label(raw)
            except ValueError as e:
                raise ManifestError(f"{where}: {e}") from None
        else:
            label = -1
        gen = row.get("generator")
        if gen is None or (isinstance(gen, str) and not gen.strip()):
            gen = "unknown"
        elif not isinstance(gen, (str, int)):
            raise ManifestError(f"{where}: 'generator' must be a string, got {gen!r}")
        gen = str(gen).strip()
        row_split = row.get("split")
        row_split = str(row_split).strip() if row_split not in (None, "") else None
        if has_split:
            if not _split_matches(row_split, split):
                continue
            rec_split = row_split
        else:
            rec_split = split
        samples.append(Sample(full, label, gen, rec_split))
    if not samples:
        raise LayoutError(f"{path}: no rows with split {split!r}")
    return samples


def _read_csv_manifest(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows: list[tuple[str, dict[str, Any]]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ManifestError(f"{path}: empty manifest (expected a header with path,label[,generator])") from None
        cols = [h.strip().lower() for h in header]
        if "path" not in cols:
            raise ManifestError(f"{path}, line 1: header must contain a 'path' column, got {header}")
        if len(set(cols)) != len(cols):
            raise ManifestError(f"{path}, line 1: duplicate column names in header {header}")
        try:
            for values in reader:
                line = reader.line_num
                if not values or all(not v.strip() for v in values):
                    continue
                if len(values) != len(cols):
                    raise ManifestError(
                        f"{path}, line {line}: expected {len(cols)} fields ({','.join(cols)}), "
                        f"got {len(values)}: {values}"
                    )
                rows.append((f"{path}, line {line}", {c: v.strip() for c, v in zip(cols, values)}))
        except csv.Error as e:
            raise ManifestError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from None
    return rows


def _row_from_json(where: str, obj: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return where, {str(k).strip().lower(): v for k, v in obj.items()}


def _read_jsonl_manifest(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}, line {line_no}: invalid JSON ({e.msg})") from None
            rows.append(_row_from_json(f"{path}, line {line_no}", obj))
    return rows


def _read_json_manifest(path: Path) -> list[tuple[str, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _read_jsonl_manifest(path)  # JSON lines with a .json extension
    if isinstance(data, dict) and isinstance(data.get("samples"), list):
        data = data["samples"]
    if isinstance(data, dict):  # single object -> one row
        data = [data]
    if not isinstance(data, list):
        raise ManifestError(f"{path}: expected a list of objects or {{'samples': [...]}}")
    return [_row_from_json(f"{path}, item {i}", obj) for i, obj in enumerate(data, start=1)]
