"""A model card for a trained checkpoint, written from its own files (``synerdetect card``).

Every number in the card is read from a file: the saved config (``synerdetect_config.json``), the calibration
(``calibration.json``, with the ``guarantee`` and ``max_fpr`` sections when calibrate stored them), the fine-tuning
lineage (``lineage.json``) when there is one, and each ``results.json`` given (``synerdetect evaluate``: raw and
harmonized per-generator results, robustness, calibration on the test set). Sections whose file or key is missing
say so instead of inventing a number. The YAML header (``library_name``, ``license``, ``tags``, ``base_model``,
``pipeline_tag``, ``model-index``) is built with ``huggingface_hub.ModelCardData`` so that the Hub reads it.

Sections of unknown shape (the calibration guarantee, the lineage) are rendered generically: scalars as key/value
lines, a list of dicts as a table, so that new fields show up without a change here.

Local paths are shown as their folder's base name (a published card must not carry where files lay on one
machine; see :func:`synerdetect.utils.public_paths`); Hub repo ids stay whole.

Torch-free: ``card`` and ``push --dry-run`` run without loading a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .hub import parse_repo_id
from .utils import flatten_dict, public_paths

__all__ = ["CARD_MARKER", "CARD_NAME", "build_card", "card_text", "read_results", "write_card"]

CARD_NAME = "README.md"
#: The first line of the card body: ``card`` only overwrites a README.md that carries it (one it wrote itself).
CARD_MARKER = "<!-- written by `synerdetect card` from this folder's files; rerun it rather than editing -->"
CONFIG_NAME = "synerdetect_config.json"  # = model.base.CONFIG_NAME (checked by tests/test_card.py)
CALIBRATION_NAME = "calibration.json"
LINEAGE_NAME = "lineage.json"

#: Config fields that describe where a run wrote or read things, not the recipe: left out of the comparison with
#: the paper's recipe.
NOT_RECIPE = {
    "model.clip",
    "model.sd",
    "train.output_dir",
    "train.num_workers",
    "train.log_every",
    "train.val_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "cache.dir",
}
NOT_RECIPE_PREFIXES = ("data.train", "data.val", "data.test")  # paths, layouts, splits


# ----------------------------------------------------------------------------- reading
def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return doc


def read_results(spec: str | Path) -> tuple[str, dict[str, Any]]:
    """``(name, results.json)`` of an evaluate output folder or a results.json file (name: the folder's name)."""
    p = Path(spec)
    path = p / "results.json" if p.is_dir() else p
    doc = _read_json(path)
    if doc is None:
        raise ValueError(f"--results {spec}: no results.json there (give an evaluate --out folder or the file)")
    if not isinstance(doc.get("generators"), dict):
        raise ValueError(f"{path}: no per-generator results (not written by synerdetect evaluate?)")
    return path.parent.name or str(path), doc


def recipe_changes(config: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, the paper preset's value, this checkpoint's value)`` for every recipe setting that differs
    from the ``paper`` preset (paths and logging left out)."""
    from .presets import get_preset

    paper = flatten_dict(asdict(get_preset("paper")))
    mine = flatten_dict(config)
    rows = []
    for key, val in mine.items():
        if key in NOT_RECIPE or key.startswith(NOT_RECIPE_PREFIXES) or key in ("preset",):
            continue
        ref = paper.get(key, "(not in this version's paper preset)")
        if _norm(ref) != _norm(val):
            rows.append((key, ref, val))
    return rows


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# ----------------------------------------------------------------------------- formatting
def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, int | float) or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _val(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list | tuple) and all(isinstance(x, int | float) for x in v):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    if isinstance(v, list | tuple):
        return ", ".join(_val(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_val(x)}" for k, x in v.items())
    return "`null`" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_val(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(lines)


def generic(doc: Any, *, indent: str = "") -> str:
    """Any JSON value as markdown: scalars as ``- key: value`` lines, a list of dicts as a table, nested dicts
    indented (the guarantee and lineage sections, whose fields other commands define)."""
    if isinstance(doc, Mapping):
        lines, tables = [], []
        for k, v in doc.items():
            if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
                tables.append(f"\n{indent}**{k}**\n\n" + _dict_table(v))
            elif isinstance(v, Mapping):
                lines.append(f"{indent}- {k}:\n" + generic(v, indent=indent + "  "))
            else:
                lines.append(f"{indent}- {k}: {_val(v)}")
        return "\n".join(lines) + "".join("\n" + t for t in tables)
    if isinstance(doc, list) and doc and all(isinstance(x, Mapping) for x in doc):
        return _dict_table(doc)
    return f"{indent}{_val(doc)}"


def _dict_table(rows: Sequence[Mapping[str, Any]]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    return _table(cols, [[r.get(c, "") for c in cols] for r in rows])


GEN_HEADER = ["generator", "acc", "real acc", "fake acc", "AP", "#real", "#fake", "formats"]


def _formats(m: Mapping[str, Any]) -> str:
    f = m.get("formats") or {}
    return "; ".join(f"{cls} " + ", ".join(f"{k} {n}" for k, n in (f.get(cls) or {}).items()) for cls in f)


def generator_table(summary: Mapping[str, Any]) -> str:
    """The per-generator table of a results summary (accuracies and AP in %), and the mean row."""
    rows = [
        [g, _pct(m.get("acc")), _pct(m.get("real_acc")), _pct(m.get("fake_acc")), _pct(m.get("ap")),
         str(m.get("n_real", "")), str(m.get("n_fake", "")), _formats(m)]
        for g, m in summary["generators"].items()
    ]  # fmt: skip
    mean = summary.get("mean") or {}
    rows.append(
        ["**mean**", _pct(mean.get("acc")), _pct(mean.get("real_acc")), _pct(mean.get("fake_acc")),
         _pct(mean.get("ap")), "", "", ""]
    )  # fmt: skip
    return _table(GEN_HEADER, rows)


# ----------------------------------------------------------------------------- the card
def _base_models(config: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The CLIP and SD the config names, and those of them that are Hub repo ids (the ``base_model`` field)."""
    model = config.get("model", {})
    named = {"CLIP": str(model.get("clip", "")), "Stable Diffusion": str(model.get("sd", ""))}
    hub_ids = [v for v in named.values() if parse_repo_id(v) is not None and not v.startswith("base/")]
    return named, hub_ids


def build_card(
    checkpoint: str | Path,
    results: Sequence[str | Path] = (),
    *,
    license: str = "apache-2.0",
    repo_id: str | None = None,
) -> Any:
    """The :class:`huggingface_hub.ModelCard` of ``checkpoint``, with the per-generator results of each
    ``results`` folder / file (see the module docstring)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    folder = Path(checkpoint)
    doc = _read_json(folder / CONFIG_NAME)
    if doc is None or not isinstance(doc.get("config"), dict):
        raise ValueError(f"{folder} is not a SynerDetect checkpoint (no readable {CONFIG_NAME})")
    # A card is published: every local path the files recorded (data.train, fitted_on.data, lineage.parent.path,
    # adapted_on.source, ...) is shown as its folder's base name, which still names the data set or parent, while
    # the rest of the path only tells where it lay on one machine (and whose home it was). Hub repo ids
    # (``org/name@commit``, as adapt records a Hub parent) are public and resolvable, so they stay whole.
    named, hub_ids = _base_models(doc["config"])
    named = {k: v if v.startswith("base/") else public_paths(v) for k, v in named.items()}
    config, extra = public_paths(doc["config"]), public_paths(doc.get("extra") or {})
    calibration = public_paths(_read_json(folder / CALIBRATION_NAME))
    lineage = public_paths(_read_json(folder / LINEAGE_NAME))
    evaluated = [(n, public_paths(r)) for n, r in (read_results(r) for r in results)]
    name = repo_id or folder.resolve().name
    method = str(config.get("method", "synerdetect"))
    evals = [
        EvalResult(
            task_type="image-classification",
            task_name="AI-generated image detection",
            dataset_type=set_name,
            dataset_name=f"{set_name}: {gen}",
            dataset_split=gen,
            metric_type=metric,
            metric_name=label,
            metric_value=round(100 * float(m[key]), 2),
        )
        for set_name, res in evaluated
        for gen, m in res["generators"].items()
        for key, metric, label in (("acc", "accuracy", "accuracy (%)"), ("ap", "average_precision", "AP (%)"))
        if isinstance(m.get(key), int | float)
    ]
    data = ModelCardData(
        library_name="synerdetect",
        license=license,
        tags=["ai-generated-image-detection", "synthetic-image-detection", "image-forensics", method, "clip",
              "stable-diffusion"],
        base_model=hub_ids or None,
        pipeline_tag="image-classification",
        model_name=name,
        eval_results=evals or None,
    )  # fmt: skip
    body = card_text(
        name=name,
        config=config,
        extra=extra,
        calibration=calibration,
        lineage=lineage,
        evaluated=evaluated,
        base=named,
        repo_id=repo_id,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def card_text(
    *,
    name: str,
    config: Mapping[str, Any],
    extra: Mapping[str, Any],
    calibration: Mapping[str, Any] | None,
    lineage: Mapping[str, Any] | None,
    evaluated: Sequence[tuple[str, Mapping[str, Any]]],
    base: Mapping[str, str],
    repo_id: str | None,
) -> str:
    """The markdown body, section by section."""
    parts = [
        CARD_MARKER,
        f"# {name}",
        _what_it_detects(config, base),
        _training(config, extra),
        _results(evaluated),
        _robustness(evaluated),
        _calibration(calibration, evaluated),
    ]
    if lineage is not None:
        parts.append("## Lineage (fine-tuning)\n\nFrom `lineage.json`:\n\n" + generic(lineage))
    parts += [_limits(config, evaluated), _how_to_use(repo_id or "org/name", repo_id is None)]
    return "\n\n".join(parts) + "\n"


def _what_it_detects(config: Mapping[str, Any], base: Mapping[str, str]) -> str:
    method = config.get("method", "synerdetect")
    bases = "; ".join(f"{k}: `{v}`" for k, v in base.items())
    shipped = " (paths under `base/` are random-weight `tiny` models shipped in this folder)"
    return (
        "## What it detects\n\n"
        f"A `{method}` detector of AI-generated images, trained with the "
        "SynerDetect toolkit (`pip install synerdetect`): for each image it gives `real` or `fake` (the Eq. 10 "
        "decision "
        "`s_fake > s_real`), a calibrated `prob_fake` and an `uncertain` verdict inside the calibrated band. "
        f"Base models named by its config: {bases}"
        + (shipped if any(v.startswith("base/") for v in base.values()) else "")
        + "."
    )


def _training(config: Mapping[str, Any], extra: Mapping[str, Any]) -> str:
    data, train = config.get("data", {}), config.get("train", {})
    lines = [
        "## Training data and recipe",
        "",
        f"- preset: `{config.get('preset')}`, method: `{config.get('method')}`",
        f"- training data: `{data.get('train')}` (layout `{data.get('train_layout')}`, split "
        f"`{data.get('train_split')}`, generators {_val(data.get('train_generators') or 'all')})",
        f"- steps: {_val(extra.get('global_step', 'not recorded'))}, epochs {_val(train.get('epochs'))}, batch "
        f"{_val(train.get('batch_size'))}, seed {_val(train.get('seed'))}, precision "
        f"{_val(train.get('mixed_precision'))}",
    ]
    changes = recipe_changes(config)
    lines += ["", f"Settings that differ from the paper's recipe (the `paper` preset): {len(changes)}.", ""]
    if changes:
        lines.append(_table(["setting", "paper", "this checkpoint"], changes))
    return "\n".join(lines)


def _results(evaluated: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    if not evaluated:
        return "## Results\n\nNo `results.json` was given to `synerdetect card --results`."
    out = ["## Results", "", "Accuracy and AP in %, from each `results.json` (`synerdetect evaluate`)."]
    for set_name, res in evaluated:
        out += ["", f"### {set_name}", "", "Raw (the files as they are):", "", generator_table(res)]
        harm = res.get("harmonized")
        if isinstance(harm, Mapping) and isinstance(harm.get("generators"), Mapping):
            spec = (harm.get("harmonize") or {}).get("spec", "?")
            out += ["", f"Harmonized (every image re-encoded `{spec}` first, real and fake alike):", ""]
            out.append(generator_table(harm))
        for w in res.get("warnings") or []:
            out += ["", f"> warning: {w}"]
    return "\n".join(out)


def _robustness(evaluated: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    out = ["## Robustness"]
    found = False
    for set_name, res in evaluated:
        rob = res.get("robustness")
        if not isinstance(rob, Mapping) or not isinstance(rob.get("perturbations"), Mapping):
            continue
        found = True
        rows = []
        for kind, k in rob["perturbations"].items():
            for level, m in (k.get("levels") or {}).items():
                rows.append([kind, level, _pct(m.get("acc")), _pct(m.get("ap")), str(m.get("n_images", ""))])
            rows.append([f"**{kind}**", "mean", _pct(k.get("mAcc")), _pct(k.get("mAP")), ""])
        out += ["", f"### {set_name}", "", _table(["perturbation", "level", "acc", "AP", "#images"], rows)]
    if not found:
        out += ["", "No robustness sweep in the results given (`synerdetect evaluate --perturb`)."]
    return "\n".join(out)


def _calibration(cal: Mapping[str, Any] | None, evaluated: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    out = ["## Calibration"]
    if cal is None:
        out += ["", "Not calibrated (no `calibration.json`): `prob_fake` is the raw softmax and no verdict is "
                "`uncertain`."]  # fmt: skip
        return "\n".join(out)
    m, fit = cal.get("metrics") or {}, cal.get("fitted_on") or {}
    out += [
        "",
        f"- method: {cal.get('method')}, uncertain band (logit): {_val(cal.get('band'))}, target accuracy outside "
        f"it: {_pct(cal.get('target_accuracy'))}%",
        f"- fitted on: `{fit.get('data')}` (split `{fit.get('split')}`, generators "
        f"{_val(fit.get('generators') or 'all')}, {fit.get('n_real')} real / {fit.get('n_fake')} fake)",
        f"- validation ECE {_pct(m.get('ece_before'))}% -> {_pct(m.get('ece_after'))}%, coverage "
        f"{_pct(m.get('coverage'))}%, selective accuracy {_pct(m.get('selective_accuracy'))}%",
    ]
    if isinstance(cal.get("cascade"), Mapping):
        c = cal["cascade"]
        out.append(
            f"- cascade band (perceptual margin) {_val(c.get('band'))}: {_pct(c.get('share_inverted'))}% of "
            f"validation images inverted, agreement with full Eq. 10 {_pct(c.get('agreement'))}%"
        )
    for key, title in (("guarantee", "Guarantee"), ("max_fpr", "False-positive-rate bound")):
        if isinstance(cal.get(key), Mapping):
            out += ["", f"**{title}** (`calibration.json` `{key}`):", "", generic(cal[key])]
    for set_name, res in evaluated:
        c = res.get("calibration")
        if isinstance(c, Mapping) and c.get("calibrated"):
            raw = c.get("raw") or {}
            out.append(
                f"- on {set_name}: ECE {_pct(raw.get('ece'))}% raw -> {_pct(c.get('ece'))}% calibrated, coverage "
                f"{_pct(c.get('coverage'))}%, selective accuracy {_pct(c.get('selective_accuracy'))}%"
            )
    return "\n".join(out)


def _limits(config: Mapping[str, Any], evaluated: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    data = config.get("data", {})
    trained = data.get("train_generators") or None
    seen = sorted({g for _, r in evaluated for g in (r.get("seen_families") or [])})
    lines = [
        "## Intended use and limits",
        "",
        "- Use: a signal for triage and research on whether an image was generated, read with its `prob_fake` "
        "and `uncertain` verdict; not proof on its own, and not for decisions about people without human review.",
        f"- Trained on `{data.get('train')}`"
        + (f", generators {', '.join(map(str, trained))}" if trained else "")
        + (f" (seen families in the results: {', '.join(seen)})" if seen else "")
        + ". Generators, editing tools and post-processing it was not trained on can be missed: read the "
        "per-generator table above, where the unseen ones show it.",
        f"- Loader: {_val(data.get('clip_view'))} view for CLIP, image size "
        f"{_val(data.get('image_size') or 'the model views')}; training augmentation: JPEG p="
        f"{_val(data.get('jpeg_prob'))}, blur p={_val(data.get('blur_prob'))}.",
    ]
    for set_name, res in evaluated:
        fmts = {g: _formats(m) for g, m in res["generators"].items()}
        warn = [
            m.get("format_shortcut_warning") for m in res["generators"].values() if m.get("format_shortcut_warning")
        ]
        lines.append(
            f"- Formats in {set_name}: " + "; ".join(f"{g}: {f}" for g, f in fmts.items())
            + (f". Format shortcut: {warn[0]}" if warn else "")
        )  # fmt: skip
    lines.append(
        "- Format caveat: real and fake images stored in different formats (PNG fakes, JPEG photos) let a "
        "detector learn the container instead of the generator; compare the raw and harmonized tables (evaluate "
        "`--harmonize jpeg:96`) before trusting a number."
    )
    return "\n".join(lines)


def _how_to_use(repo_id: str, placeholder: bool) -> str:
    note = " (replace `org/name` with this repo's id, or give the folder)" if placeholder else ""
    return (
        "## How to use it\n\n"
        f"`pip install synerdetect`, then{note}:\n\n"
        "```python\n"
        "import synerdetect\n"
        f'detector = synerdetect.load("{repo_id}")          # or a folder; device="cuda"; mode="cascade"\n'
        'records = detector(["photo.jpg", pil_image, raw_bytes])   # the records of `synerdetect predict --json`\n'
        "```\n\n"
        f"or on the command line: `synerdetect predict photos/ --checkpoint {repo_id}`."
    )


def write_card(
    checkpoint: str | Path,
    results: Sequence[str | Path] = (),
    *,
    license: str = "apache-2.0",
    repo_id: str | None = None,
    force: bool = False,
) -> Path:
    """Write ``checkpoint/README.md`` (atomically). A README.md that ``card`` did not write is kept unless
    ``force``."""
    from .utils import atomic_write_text

    folder = Path(checkpoint)
    target = folder / CARD_NAME
    if target.exists() and not force and CARD_MARKER not in target.read_text(errors="replace"):
        raise ValueError(f"{target} exists and was not written by `synerdetect card`; pass --force to replace it")
    card = build_card(folder, results, license=license, repo_id=repo_id)
    return atomic_write_text(target, str(card))
