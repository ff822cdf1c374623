"""Choose each method's optimiser and learning rate on a validation split of its training data (never on test).

Table 5a compares methods whose trainable parts differ (a linear probe, a CNN from scratch, attention heads, LoRA +
tuner): one optimiser setting for all of them favours whichever it happens to suit. :func:`tune` trains a method
once per candidate ``(optimiser, lr)`` on the training split, scores it on a held-out validation split of the
*same* training data, and :func:`pick` keeps the best (validation AP, then accuracy, then grid order). The test
set is never read. ``scripts/tune_methods.py`` runs it for every method on the demo; ``docs/method_tuning.json``
records the choice and the search.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig, merge
from ..data.layouts import Sample
from ..methods import load_detector
from .evaluate import evaluate
from .train import train

#: The search grid: (optimiser, learning rate). Small on purpose: 6 runs per method.
GRID: tuple[tuple[str, float], ...] = tuple((o, lr) for o in ("sgd", "adamw") for lr in (1e-4, 1e-3, 1e-2))


def validation_split(
    samples: Sequence[Sample], fraction: float = 0.25, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """``(train, val)``: a deterministic ``fraction`` of each (generator, label) group held out for validation, so
    both splits keep the class balance. Raises ``ValueError`` if a group would leave either split empty."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.generator, s.label), []).append(s)
    rng = random.Random(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda s: s.path)
        rng.shuffle(group)
        n_val = round(len(group) * fraction)
        if n_val == 0 or n_val == len(group):
            raise ValueError(f"group {key} has {len(group)} images: too few for a {fraction:.0%} validation split")
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def write_manifest(samples: Sequence[Sample], path: str | Path) -> Path:
    """A JSONL manifest (``path``, ``label``, ``generator``) that ``load_labelled(path, "manifest")`` reads back."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = (
        json.dumps({"path": str(Path(s.path).resolve()), "label": s.label, "generator": s.generator}) for s in samples
    )
    p.write_text("\n".join(rows) + "\n")
    return p


def optim_patch(name: str, lr: float) -> dict[str, Any]:
    """The config patch of one candidate: only the optimiser and its learning rate change (SGD keeps the paper's
    momentum 0.9; schedule, warm-up and clipping stay those of the base config)."""
    return {"optim": {"name": name, "lr": lr}}


def pick(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The best candidate: highest validation AP, then accuracy; a tie keeps the earlier one in the grid."""
    if not results:
        raise ValueError("no candidate results to pick from")
    best = results[0]
    for r in results[1:]:
        if (r["val_ap"], r["val_acc"]) > (best["val_ap"], best["val_acc"]):
            best = r
    return best


def tune(
    cfg: ExperimentConfig,
    method: str,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    out: str | Path,
    *,
    grid: Sequence[tuple[str, float]] = GRID,
    cfg_patch: dict[str, Any] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``method`` once per ``grid`` candidate on ``train_samples`` (written to a manifest under ``out``) and
    score it on ``val_samples``; returns ``{"method", "results": [...], "choice": {...}}``. ``cfg_patch`` is applied
    to every candidate (e.g. a shared feature cache)."""

    out = Path(out)
    manifest = write_manifest(train_samples, out / "train.jsonl")
    results = []
    for name, lr in grid:
        run = out / method / f"{name}_{lr:g}"
        c = merge(cfg, {"method": method, "data": {"train": str(manifest), "train_layout": "manifest"}})
        c = merge(c, {"train": {"output_dir": str(run), "checkpoint_every": 0}})
        c = merge(c, cfg_patch or {})
        c = merge(c, optim_patch(name, lr))
        summary = train(c, resume="auto", progress=False)
        model = load_detector(summary["final"]).eval()
        res = evaluate(model, list(val_samples), None, image_size=None, batch_size=32, progress=False)
        s = res["summary"]["mean"]
        r = {"optim": name, "lr": lr, "val_acc": float(s["acc"]), "val_ap": float(s["ap"])}
        r["train_seconds"] = summary.get("seconds")
        results.append(r)
        if on_result is not None:
            on_result(r)
        del model
    return {"method": method, "results": results, "choice": pick(results)}


__all__ = ["GRID", "optim_patch", "pick", "tune", "validation_split", "write_manifest"]
