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
    ``split`` column, ``split=`` filters on it.  The manifest must be UTF-8
    (a BOM is fine); otherwise :class:`ManifestError` gives the byte offset and
    line of the first bad byte.

    Files listed more than once are compared by their normalised absolute path
    (relative, absolute, ``./`` and ``../`` spellings are the same file;
    symlinked aliases are not resolved).  The same file listed as both real and
    fake is a :class:`ManifestError` naming the rows.  The same file with the
    same label, generator and split is kept once, with a warning naming the
    rows; under several generators it is kept once per generator (benchmarks
    share real images between generator test sets), and in several splits it is
    kept per split -- both with a warning.  Warnings are logged by
    :func:`discover`, returned by :func:`discover_with_warnings` and listed by
    the dataset checker.

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

Ambiguous trees raise :class:`AmbiguousLayoutError` (a :class:`LayoutError`,
one-line message naming the folder and how to proceed) instead of giving
silently wrong labels:

* a class folder (any of ``0_real 1_fake real fake nature ai``) holding
  another class folder at any depth, e.g. ``test/gen/0_real/1_fake/`` (its fakes
  would be labelled real) or ``test/real/{0_real,1_fake}``; also a class
  folder between the root and a label folder (``test/gen/ai/0_real``);
* a generator folder named like a class (``test/real/`` given as the root, or a
  GenImage ``real/<subset>/train/ai``);
* with ``layout="auto"``, a tree holding both a genimage
  (``<gen>/[<subset>/]train|val/ai|nature``) and a cnndetection
  (``<gen>/0_real|1_fake``) layout.  An explicit ``layout="genimage"`` or
  ``"cnndetection"`` loads that layout and warns about the folders it ignores.

Image files are recognised by extension (``jpg jpeg jfif png webp avif bmp tif
tiff gif heic heif``, case-insensitive); hidden files/folders (``.name``) and
``__MACOSX`` are skipped; symlinked folders are followed (with loop protection
by device and inode).  Folders are walked with an explicit stack, so any depth
works (a 1200-level tree is scanned in linear time).  An entry with an image
extension that is not a regular file (FIFO, socket, device, broken symlink) is
listed, never opened here, and reported as unreadable by the loaders
(``"not a regular file (FIFO)"``).  File names may contain any character,
newlines included.  Folder layouts are returned sorted by path; manifests keep
their row order.  Sample paths are absolute (``os.path.abspath``, symlinks not
resolved).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .imageio import IMAGE_EXTENSIONS, file_kind

__all__ = [
    "LAYOUTS",
    "AmbiguousLayoutError",
    "LayoutError",
    "ManifestError",
    "Sample",
    "count_by_generator",
    "detect_layout",
    "discover",
    "discover_with_warnings",
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
#: Every folder name treated as a class (label) folder by some layout.
CLASS_DIR_NAMES: frozenset[str] = frozenset(CNN_LABEL_DIRS) | frozenset(GENIMAGE_LABEL_DIRS)

_LABEL_VALUES: dict[str, int] = {
    "0": 0,
    "1": 1,
    "real": 0,
    "fake": 1,
    "nature": 0,
    "ai": 1,
    "0_real": 0,
    "1_fake": 1,
}


class LayoutError(ValueError):
    """The folder does not match the requested (or any known) layout."""


class AmbiguousLayoutError(LayoutError):
    """The tree would give silently wrong labels or generators: class folders
    inside class folders, a generator folder named like a class, or two layouts
    mixed in one tree.  The message (one line) names the offending folder and
    says how to proceed; ``.problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems else [message]


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


class _Scan:
    """Problems (raised together as :class:`AmbiguousLayoutError`) and warnings collected by one discovery."""

    def __init__(self) -> None:
        self._problems: dict[str, None] = {}
        self.warnings: list[str] = []

    def problem(self, message: str) -> None:
        self._problems.setdefault(message, None)

    def raise_problems(self) -> None:
        problems = list(self._problems)
        if not problems:
            return
        msg = problems[0]
        if len(problems) > 1:
            msg += f" [and {len(problems) - 1} more problem(s) of this kind]"
        raise AmbiguousLayoutError(msg, problems)


# ----------------------------------------------------------------------------- public API


def discover(root: str | os.PathLike, layout: str = "auto", split: str | None = None) -> list[Sample]:
    """List the labelled images of a dataset.  See the module docstring.

    Warnings (duplicate manifest rows, folders of another layout that an
    explicit ``layout`` ignores) are logged; :func:`discover_with_warnings`
    returns them instead.

    Raises:
        LayoutError: root missing, layout not recognised, requested split
            absent, or no image found.
        AmbiguousLayoutError: (a :class:`LayoutError`) nested class folders, a
            generator folder named like a class, or mixed layouts.
        ManifestError: malformed manifest row, contradictory labels for one
            file, or a manifest that is not UTF-8.
    """
    samples, warnings = discover_with_warnings(root, layout, split)
    for w in warnings:
        logger.warning("%s", w)
    return samples


def discover_with_warnings(
    root: str | os.PathLike, layout: str = "auto", split: str | None = None
) -> tuple[list[Sample], list[str]]:
    """:func:`discover`, returning ``(samples, warnings)`` instead of logging the warnings."""
    layout = _normalize_layout(layout)
    root_p = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not root_p.exists():
        raise LayoutError(f"dataset root does not exist: {root_p}")
    if layout == "auto":
        layout = detect_layout(root_p)
        logger.info("detected layout %r for %s", layout, root_p)
    if layout != "manifest" and layout != "folder" and not root_p.is_dir():
        raise LayoutError(f"layout {layout!r} needs a folder, got a file: {root_p}")

    scan = _Scan()
    if layout == "cnndetection":
        _warn_other_layout(root_p, layout, scan)
        samples = _discover_cnndetection(root_p, split, scan)
    elif layout == "genimage":
        _warn_other_layout(root_p, layout, scan)
        samples = _discover_genimage(root_p, split, scan)
    elif layout == "chameleon":
        samples = _discover_chameleon(root_p, split, scan)
    elif layout == "manifest":
        return _discover_manifest(root_p, split, scan), scan.warnings
    elif layout == "folder":
        samples = _discover_folder(root_p, split)
    else:  # pragma: no cover - _normalize_layout guards
        raise LayoutError(f"unknown layout {layout!r}")
    scan.raise_problems()
    if not samples:
        raise LayoutError(f"no image files found under {root_p} (layout {layout!r}, split {split!r})")
    samples.sort(key=lambda s: s.path)
    return samples, scan.warnings


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the layout ``discover(root, "auto")`` would use.

    Raises :class:`AmbiguousLayoutError` when the tree mixes the genimage and
    cnndetection layouts (auto-detection would silently drop one of them).
    """
    root_p = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if root_p.is_file():
        if root_p.suffix.lower() in MANIFEST_EXTENSIONS:
            return "manifest"
        raise LayoutError(
            f"{root_p} is a file; only manifests ({', '.join(sorted(MANIFEST_EXTENSIONS))}) "
            "can be given as a dataset root"
        )
    if not root_p.is_dir():
        try:
            kind = file_kind(os.stat(root_p).st_mode)
        except OSError:
            raise LayoutError(f"dataset root does not exist: {root_p}") from None
        raise LayoutError(f"dataset root is neither a folder nor a manifest file: {root_p} ({kind})")
    genimage = _genimage_split_dirs(root_p)
    if genimage:
        cnn = _cnn_label_dir_example(root_p)
        if cnn is not None:
            raise AmbiguousLayoutError(_mixed_problem(root_p, genimage[0], cnn))
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
    raise ValueError(f"unrecognised label {value!r}; expected one of 0, 1, real, fake, nature, ai, 0_real, 1_fake")


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


def _is_class_name(name: str) -> bool:
    return name.lower() in CLASS_DIR_NAMES


def _list_dir(d: Path, *, want_files: bool = True) -> tuple[list[Path], list[str]]:
    """(subdirs, image file paths), sorted by name, hidden entries skipped, symlinks followed.

    Every non-folder entry with an image extension is listed, regular file or
    not (FIFO, socket, device, broken symlink): the loaders report those as
    unreadable instead of the scan dropping them silently.  Nothing is opened.
    """
    try:
        with os.scandir(d) as it:
            entries = list(it)
    except OSError as e:
        logger.warning("cannot list %s: %s", d, e)
        return [], []
    dirs: list[Path] = []
    files: list[tuple[str, str]] = []
    for entry in entries:
        name = entry.name
        if _skip_name(name):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            continue
        if is_dir:
            dirs.append(Path(entry.path))
        elif want_files and _is_image(name):
            files.append((name, entry.path))
    dirs.sort(key=lambda p: p.name)
    files.sort()
    return dirs, [path for _, path in files]


def _subdirs(d: Path) -> list[Path]:
    return _list_dir(d, want_files=False)[0]


def _dir_key(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder (symlinks followed): identifies it in O(1), whatever its depth."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk(d: Path) -> Iterator[tuple[Path, list[Path], list[str]]]:
    """``(folder, subfolders, image files)`` for ``d`` and every folder below it.

    Depth-first in name order, with an explicit stack (no recursion: any depth
    works); a folder reached twice (symlink loop or alias) is skipped.
    """
    seen: set[tuple[int, int]] = set()
    stack = [d]
    while stack:
        cur = stack.pop()
        key = _dir_key(cur)
        if key is not None:
            if key in seen:
                logger.warning("skipping symlink loop at %s", cur)
                continue
            seen.add(key)
        dirs, files = _list_dir(cur)
        yield cur, dirs, files
        stack.extend(reversed(dirs))


def _walk_images(d: Path) -> Iterator[str]:
    """All image files below ``d`` (recursively, deterministic order)."""
    for _cur, _dirs, files in _walk(d):
        yield from files


def _label_children(d: Path, names: dict[str, int]) -> list[tuple[Path, int]]:
    return [(c, names[c.name.lower()]) for c in _subdirs(d) if c.name.lower() in names]


def _find_label_dirs(
    base: Path,
    names: dict[str, int],
    *,
    max_depth: int,
    first_only: bool = False,
    skip: Iterable[str] = (),
) -> list[tuple[Path, int, tuple[str, ...]]]:
    """Breadth-first search for label folders 1..max_depth levels below ``base``.

    Returns ``(label_dir, label, parts)`` where ``parts`` are the folder names
    between ``base`` and the label folder.  Label folders are not descended
    into (the outermost label folder wins); folders named in ``skip`` are
    neither returned nor descended into.
    """
    skip_set = {n.lower() for n in skip}
    found: list[tuple[Path, int, tuple[str, ...]]] = []
    level: list[tuple[Path, tuple[str, ...]]] = [(base, ())]
    base_key = _dir_key(base)
    seen = {base_key} if base_key is not None else set()
    for _depth in range(1, max_depth + 1):
        nxt: list[tuple[Path, tuple[str, ...]]] = []
        for d, parts in level:
            for c in _subdirs(d):
                key = c.name.lower()
                if key in skip_set:
                    continue
                if key in names:
                    found.append((c, names[key], parts))
                    if first_only:
                        return found
                    continue
                dk = _dir_key(c)
                if dk is not None:
                    if dk in seen:
                        continue
                    seen.add(dk)
                nxt.append((c, parts + (c.name,)))
        level = nxt
        if not level:
            break
    return found


def _dataset_name(root: Path) -> str:
    return root.parent.name if _is_split(root.name) else root.name


def _dataset_dir(root: Path) -> Path:
    return root.parent if _is_split(root.name) else root


def _nested_problem(outer: Path, inner: Path) -> str:
    return (
        f"class folder {inner} is inside class folder {outer}, so the label of its images is ambiguous "
        f"({outer.name!r} or {inner.name!r}); move {inner.name!r} out of {outer.name!r}, or give the labels "
        "in a manifest (--layout manifest), or load the images unlabelled (--layout folder)"
    )


def _generator_problem(gen_dir: Path, name: str) -> str:
    return (
        f"generator folder {gen_dir} is named like a class folder ({name!r}), so its images would be reported "
        f"as generator {name!r}; rename the folder, or give the generators in a manifest (--layout manifest)"
    )


def _mixed_problem(root: Path, genimage_dir: Path, cnn_dir: Path) -> str:
    return (
        f"{root} mixes two layouts, genimage (e.g. {genimage_dir}) and cnndetection (e.g. {cnn_dir}), and "
        "auto-detection would silently drop one; load one of them with --layout genimage or "
        "--layout cnndetection, or give each its own root folder"
    )


def _check_ancestors(scan: _Scan, base: Path, parts: tuple[str, ...], label_dir: Path) -> None:
    """A class-named folder between ``base`` and a label folder (e.g. ``gen/ai/0_real``) is a problem."""
    for i, name in enumerate(parts):
        if _is_class_name(name):
            scan.problem(_nested_problem(base.joinpath(*parts[: i + 1]), label_dir))
            return


def _samples_from_label_dir(
    scan: _Scan, label_dir: Path, label: int, generator: str, gen_dir: Path, split: str | None
) -> list[Sample]:
    """Images below one class folder; class-named folders inside it and class-named generators are problems."""
    if _is_class_name(generator):
        scan.problem(_generator_problem(gen_dir, generator))
    samples: list[Sample] = []
    for _cur, dirs, files in _walk(label_dir):
        for sub in dirs:
            if _is_class_name(sub.name):
                scan.problem(_nested_problem(label_dir, sub))
        samples.extend(Sample(p, label, generator, split) for p in files)
    return samples


def _split_matches(found: str | None, wanted: str | None) -> bool:
    return wanted is None or (found is not None and found.lower() == wanted.lower())


def _cnn_label_dir_example(root: Path) -> Path | None:
    """A cnndetection label folder 1-4 levels below root, outside genimage class folders (or None)."""
    found = _find_label_dirs(root, CNN_LABEL_DIRS, max_depth=4, first_only=True, skip=GENIMAGE_LABEL_DIRS)
    return found[0][0] if found else None


def _warn_other_layout(root: Path, layout: str, scan: _Scan) -> None:
    """With an explicit genimage/cnndetection layout, say which folders of the other layout are ignored."""
    if layout == "genimage":
        other = _cnn_label_dir_example(root)
        if other is not None:
            scan.warnings.append(
                f"{root}: ignoring cnndetection folders (e.g. {other}) because layout 'genimage' was requested"
            )
    elif layout == "cnndetection":
        g = _genimage_split_dirs(root)
        if g:
            scan.warnings.append(
                f"{root}: ignoring genimage folders (e.g. {g[0]}) because layout 'cnndetection' was requested"
            )


# ----------------------------------------------------------------------------- cnndetection


_CNN_MAX_DEPTH = 6


def _discover_cnndetection(root: Path, split: str | None, scan: _Scan) -> list[Sample]:
    # units: (base folder, split name, fixed generator or None, folder the fixed generator is named after)
    units: list[tuple[Path, str | None, str | None, Path | None]] = []
    parent_is_split = _is_split(root.parent.name) and root.parent != root
    if _label_children(root, CNN_LABEL_DIRS):
        own_split = root.name if _is_split(root.name) else (root.parent.name if parent_is_split else None)
        units.append((root, own_split, _dataset_name(root), _dataset_dir(root)))
    elif _is_split(root.name):
        units.append((root, root.name, None, None))
    elif parent_is_split:
        units.append((root, root.parent.name, root.name, root))
    else:
        split_dirs = [
            d
            for d in _subdirs(root)
            if _is_split(d.name) and _find_label_dirs(d, CNN_LABEL_DIRS, max_depth=4, first_only=True)
        ]
        if split_dirs:
            chosen = [d for d in split_dirs if _split_matches(d.name, split)]
            if not chosen:
                raise LayoutError(f"split {split!r} not found under {root}; available: {[d.name for d in split_dirs]}")
            units.extend((d, d.name, None, None) for d in chosen)
        else:
            units.append((root, None, None, None))

    samples: list[Sample] = []
    for base, base_split, fixed_gen, fixed_dir in units:
        if base_split is not None and not _split_matches(base_split, split):
            raise LayoutError(f"{root} is the {base_split!r} split but split={split!r} was requested")
        rec_split = base_split if base_split is not None else split
        label_dirs = _find_label_dirs(base, CNN_LABEL_DIRS, max_depth=_CNN_MAX_DEPTH)
        if not label_dirs:
            raise LayoutError(f"no 0_real/1_fake (or real/fake) folders found under {base} (cnndetection layout)")
        for label_dir, label, parts in label_dirs:
            if fixed_gen is not None and fixed_dir is not None:
                gen, gen_dir = fixed_gen, fixed_dir
            elif parts:
                gen, gen_dir = parts[0], base / parts[0]
            else:
                gen, gen_dir = _dataset_name(base), _dataset_dir(base)
            _check_ancestors(scan, base, parts, label_dir)
            samples.extend(_samples_from_label_dir(scan, label_dir, label, gen, gen_dir, rec_split))
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


def _discover_genimage(root: Path, split: str | None, scan: _Scan) -> list[Sample]:
    split_dirs = _genimage_split_dirs(root)
    if not split_dirs:
        raise LayoutError(
            f"no <generator>/<subset>/{{train,val}}/{{ai,nature}}/ folders found under {root} (genimage layout)"
        )
    chosen = [d for d in split_dirs if _split_matches(d.name, split)]
    if not chosen:
        raise LayoutError(f"split {split!r} not found under {root}; available: {sorted({d.name for d in split_dirs})}")
    samples: list[Sample] = []
    for d in chosen:
        parts: tuple[str, ...] = ()
        if d == root:  # root is a split folder: <generator>/<subset>/<split>
            gen_dir = root.parent.parent
        else:
            parts = d.relative_to(root).parts[:-1]  # folders between root and the split folder
            if len(parts) >= 2:  # root is the dataset root
                gen_dir = root / parts[0]
            elif len(parts) == 1:  # root is a generator folder
                gen_dir = root
            else:  # root is a subset folder
                gen_dir = root.parent
        gen = gen_dir.name
        for label_dir, label in _label_children(d, GENIMAGE_LABEL_DIRS):
            samples.extend(_samples_from_label_dir(scan, label_dir, label, gen, gen_dir, d.name))
            _check_ancestors(scan, root, parts, label_dir)
    return samples


# ----------------------------------------------------------------------------- chameleon


def _flat_label_bases(root: Path) -> list[tuple[Path, str | None]]:
    """Folders holding 0_real/1_fake directly: root itself, or root/<split>."""
    if _label_children(root, CNN_LABEL_DIRS):
        return [(root, root.name if _is_split(root.name) else None)]
    return [(d, d.name) for d in _subdirs(root) if _is_split(d.name) and _label_children(d, CNN_LABEL_DIRS)]


def _discover_chameleon(root: Path, split: str | None, scan: _Scan) -> list[Sample]:
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
            samples.extend(_samples_from_label_dir(scan, label_dir, label, "chameleon", base, rec_split))
    return samples


# ----------------------------------------------------------------------------- folder


def _discover_folder(root: Path, split: str | None) -> list[Sample]:
    if not root.is_dir():
        if not _is_image(root.name):
            raise LayoutError(f"{root} is not an image file (by extension)")
        return [Sample(str(root), -1, root.parent.name, split)]
    samples = []
    root_s = str(root)
    for p in _walk_images(root):
        rel = os.path.relpath(p, root_s).split(os.sep)
        gen = rel[0] if len(rel) > 1 else root.name
        samples.append(Sample(p, -1, gen, split))
    return samples


# ----------------------------------------------------------------------------- manifest

_MAX_DUPLICATE_WARNINGS = 20
_CLASS_WORDS = {0: "real", 1: "fake", -1: "unlabelled"}

# one manifest row after validation: (resolved path, label, generator, split, "line N" / "item N")
_Entry = tuple[str, int, str, str | None, str]


def _discover_manifest(path: Path, split: str | None, scan: _Scan) -> list[Sample]:
    if not path.is_file():
        raise LayoutError(f"manifest must be a file: {path}")
    ext = path.suffix.lower()
    try:
        if ext == ".csv":
            rows = _read_csv_manifest(path)
        elif ext == ".jsonl":
            rows = _read_jsonl_manifest(path)
        elif ext == ".json":
            rows = _read_json_manifest(path)
        else:
            raise LayoutError(f"unsupported manifest extension {ext!r} ({path}); use .csv, .jsonl or .json")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if not rows:
        raise ManifestError(f"{path}: manifest has no rows")

    labelled = any(r.get("label") not in (None, "") for _, r in rows)
    has_split = any(r.get("split") not in (None, "") for _, r in rows)
    base = path.parent
    entries: list[_Entry] = []
    for ref, row in rows:
        where = f"{path}, {ref}"
        p = row.get("path")
        if not isinstance(p, str) or not p.strip():
            raise ManifestError(f"{where}: missing or empty 'path'")
        p = os.path.expanduser(p.strip())
        # one spelling per file: relative, absolute, ./ and ../ variants of the same path compare equal
        full = os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))
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
        entries.append((full, label, gen, row_split, ref))

    scan.warnings.extend(_manifest_duplicates(path, entries))

    samples: list[Sample] = []
    kept: set[tuple[str, str, str | None]] = set()
    for full, label, gen, row_split, _ref in entries:
        if has_split:
            if not _split_matches(row_split, split):
                continue
            rec_split = row_split
        else:
            rec_split = split
        key = (full, gen, rec_split)
        if key in kept:  # exact duplicate (warned above): kept once
            continue
        kept.add(key)
        samples.append(Sample(full, label, gen, rec_split))
    if not samples:
        raise LayoutError(f"{path}: no rows with split {split!r}")
    return samples


def _manifest_duplicates(path: Path, entries: list[_Entry]) -> list[str]:
    """Warnings for files listed more than once; :class:`ManifestError` for contradictory labels.

    * same file, labels 0 and 1: error naming the rows;
    * same file, label, generator and split: warning, the file is kept once;
    * same file under several generators: warning, kept once per generator (benchmarks
      share real images between generator test sets);
    * same file in several splits: warning (the splits share an image).
    """
    by_path: dict[str, list[_Entry]] = defaultdict(list)
    for e in entries:
        by_path[e[0]].append(e)
    msgs: list[str] = []
    for full, es in by_path.items():
        if len(es) < 2:
            continue
        labels = sorted({e[1] for e in es})
        if len(labels) > 1:
            listed = " and ".join(
                f"as {_CLASS_WORDS[lab]} ({', '.join(e[4] for e in es if e[1] == lab)})" for lab in labels
            )
            raise ManifestError(f"{path}: {full} is listed with contradictory labels, {listed}; keep one of them")
        label_txt = "" if labels[0] == -1 else f" with label {_CLASS_WORDS[labels[0]]}"
        same: dict[tuple[str, str | None], list[str]] = defaultdict(list)
        for e in es:
            same[(e[2], e[3])].append(e[4])
        for refs in same.values():
            if len(refs) > 1:
                msgs.append(f"{path}: {full} is listed {len(refs)} times{label_txt} ({', '.join(refs)}); kept once")
        gens: dict[str, str] = {}
        splits: dict[str, str] = {}
        for e in es:
            gens.setdefault(e[2], e[4])
            if e[3] is not None:
                splits.setdefault(e[3], e[4])
        if len(gens) > 1:
            listed = ", ".join(f"{g!r} ({ref})" for g, ref in gens.items())
            msgs.append(f"{path}: {full} is listed under {len(gens)} generators, {listed}; kept once per generator")
        if len(splits) > 1:
            listed = ", ".join(f"{s!r} ({ref})" for s, ref in splits.items())
            msgs.append(f"{path}: {full} is listed in {len(splits)} splits, {listed}; the splits share this image")
    if len(msgs) > _MAX_DUPLICATE_WARNINGS:
        n_more = len(msgs) - _MAX_DUPLICATE_WARNINGS
        msgs = msgs[:_MAX_DUPLICATE_WARNINGS] + [f"{path}: {n_more} more duplicate-row warning(s) not shown"]
    return msgs


def _not_utf8(path: Path) -> ManifestError:
    """One-line error for a manifest that is not UTF-8, with the byte offset and line of the first bad byte."""
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        off = e.start
        line = data.count(b"\n", 0, off) + 1
        return ManifestError(
            f"{path}: not UTF-8 text (byte 0x{data[off]:02x} at byte offset {off}, line {line}); "
            "re-save the manifest as UTF-8"
        )
    except OSError:
        pass
    return ManifestError(f"{path}: not UTF-8 text; re-save the manifest as UTF-8")


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
                rows.append((f"line {line}", {c: v.strip() for c, v in zip(cols, values)}))
        except csv.Error as e:
            raise ManifestError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from None
    return rows


def _row_from_json(path: Path, ref: str, obj: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise ManifestError(f"{path}, {ref}: expected a JSON object, got {type(obj).__name__}")
    return ref, {str(k).strip().lower(): v for k, v in obj.items()}


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
            rows.append(_row_from_json(path, f"line {line_no}", obj))
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
    return [_row_from_json(path, f"item {i}", obj) for i, obj in enumerate(data, start=1)]


def load_labelled(
    data: str | os.PathLike, layout: str = "auto", split: str | None = None, generators: list[str] | None = None
) -> list[Sample]:
    """The labelled (real or fake) images of ``data``, optionally only those of ``generators``; a
    :class:`LayoutError` when none is left."""
    samples = [s for s in discover(data, layout=layout, split=split) if s.label in (0, 1)]
    if generators:
        wanted = set(generators)
        samples = [s for s in samples if s.generator in wanted]
    if not samples:
        raise LayoutError(
            f"no labelled images found in {data} (layout={layout}, split={split}, generators={generators})"
        )
    return samples
