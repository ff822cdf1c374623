"""An adapted checkpoint's ``lineage.json``: where it came from (the parent's weights hash), what it was adapted on
(fingerprints of the data), how (steps, optimiser), what its calibration became, the cost and the before/after table
per family. Torch-free, so that what reads or renders a lineage (the model card, its tests) need not load a model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..data import Sample
from ..hub import hub_ref

LINEAGE_NAME = "lineage.json"
WEIGHTS_NAME = "trainable.safetensors"  # model/base.py's; the folder layout every loader reads


def build_lineage(
    *,
    parent: Path,
    data: str | Path,
    new_train: list[Sample],
    new_val: list[Sample],
    memory: list[Sample],
    replay_source: str | None,
    steps: dict[str, Any],
    requested_steps: int,
    val_every: int,
    patience: int,
    lr: float,
    seed: int,
    ratio: float,
    batch: tuple[int, int],
    calibration: dict[str, Any],
    cost: dict[str, Any],
    table: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``lineage.json`` of an adapted checkpoint: the parent (its folder, or ``repo: org/name@commit`` when it
    came from the Hub, and its weights hash), the data it was adapted on (fingerprints), the steps (``steps``: the
    early stopper's state), the optimiser settings, the calibration refit, the cost and the before/after ``table``
    (:func:`family_rows`)."""
    return {
        # a parent from the Hub is named by what anyone can fetch again (org/name@commit), not by this machine's
        # cache folder
        "parent": ({"repo": ref} if (ref := hub_ref(parent)) else {"path": str(parent.resolve())})
        | {"sha256": weights_sha256(parent)},
        "adapted_on": {
            "train": data_fingerprint(new_train),
            "validation": data_fingerprint(new_val),
            "replay": data_fingerprint(memory) | {"source": replay_source},
            "source": str(Path(data).resolve()),
        },
        "steps": {
            "requested": requested_steps,
            "done": steps["steps_done"],
            "best_step": steps["best_step"],
            "stopped_early": steps["stopped_early"],
            "val_every": val_every,
            "patience": patience,
        },
        "optim": {"lr": lr, "replay_ratio": ratio, "batch": {"new": batch[0], "replay": batch[1]}, "seed": seed},
        "calibration": calibration,
        "cost": cost,
        "table": table,
    }


def weights_sha256(folder: str | Path) -> str:
    """sha256 of a checkpoint's weights file (its trainable weights; the frozen ones are named by its config)."""
    return _file_sha256(Path(folder) / WEIGHTS_NAME)


def _file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:  # hashlib reads it in chunks: a large image is never held whole
        return hashlib.file_digest(f, "sha256").hexdigest()


def data_fingerprint(samples: list[Sample]) -> dict[str, Any]:
    """Counts per class and generator and one sha256 over the sorted sha256 of each file's bytes (names and
    folders do not matter)."""
    digests = sorted(_file_sha256(s.path) for s in samples)
    counts: dict[str, dict[str, int]] = {}
    for s in samples:
        c = counts.setdefault(s.generator, {"real": 0, "fake": 0})
        c["fake" if s.label == 1 else "real"] += 1
    return {
        "n_real": sum(1 for s in samples if s.label == 0),
        "n_fake": sum(1 for s in samples if s.label == 1),
        "by_generator": counts,
        "sha256": hashlib.sha256("\n".join(digests).encode()).hexdigest(),
    }


def family_rows(before: dict[str, Any], after: dict[str, Any], new_families: list[str]) -> list[dict[str, Any]]:
    """One row per family: accuracy and AP before / after; forgetting (the accuracy drop) on old families."""
    rows = []
    for g in sorted(set(before["generators"]) | set(after["generators"]), key=lambda g: (g not in new_families, g)):
        b, a = before["generators"].get(g, {}), after["generators"].get(g, {})
        acc_b, acc_a = b.get("acc"), a.get("acc")
        drop = None if acc_b is None or acc_a is None else acc_b - acc_a
        rows.append(
            {
                "family": g,
                "role": "new" if g in new_families else "old",
                "n_images": (a.get("n_real") or 0) + (a.get("n_fake") or 0),
                "acc_before": acc_b,
                "acc_after": acc_a,
                "ap_before": b.get("ap"),
                "ap_after": a.get("ap"),
                "gain": None if drop is None else -drop,
                "forgetting": None if g in new_families or drop is None else drop,
            }
        )
    return rows
