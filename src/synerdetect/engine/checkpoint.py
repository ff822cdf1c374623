"""Resumable training checkpoints without pickle.

A checkpoint folder holds the detector (``save_pretrained``: trainable weights in safetensors + config),
the optimiser state (tensors in safetensors, scalars and param groups in JSON) and ``trainer_state.json``
(epoch, batches done in the epoch, global step). Data order, augmentation and CMID noise are pure
functions of (seed, epoch, index/step), so no RNG state needs saving for an exact resume.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..utils import atomic_write_json

OPTIM_TENSORS = "optimizer.safetensors"
OPTIM_META = "optimizer.json"
STATE = "trainer_state.json"
FINAL_STATE = STATE  # a run's final/ folder holds the same files, so a finished run can be extended


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{idx}.{name}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = val
    save_file(tensors, str(folder / OPTIM_TENSORS))
    atomic_write_json(folder / OPTIM_META, {"param_groups": sd["param_groups"], "scalars": scalars}, indent=None)


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    from safetensors.torch import load_file

    meta = json.loads((folder / OPTIM_META).read_text())
    tensors = load_file(str(folder / OPTIM_TENSORS))
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    for idx, st in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(st)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(model, optimizer, state: dict[str, Any], root: Path, keep: int = 2) -> Path:
    """Write ``root/step-XXXXXXXX`` atomically (tmp folder + rename) and prune old ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state['global_step']:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    save_optimizer(optimizer, tmp)
    atomic_write_json(tmp / STATE, state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (the state file is written last, inside the renamed folder), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE).is_file() and (p / OPTIM_META).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(root: Path) -> Path | None:
    cps = list_checkpoints(root)
    return cps[-1] if cps else None


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE).read_text())


def save_final(model, optimizer, state: dict[str, Any], final: Path, *, extra: dict | None = None) -> Path:
    """The run's ``final/`` folder: the detector (``save_pretrained``) plus the optimiser and trainer state, written
    beside it and swapped in atomically, so that a finished run can later be extended."""
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, extra=extra)
    save_optimizer(optimizer, tmp)
    atomic_write_json(tmp / STATE, state)
    old = final.parent / f".old-{final.name}-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (a missing, empty, truncated or garbage file), or None."""
    from safetensors import safe_open

    from ..model.detector import WEIGHTS_NAME

    for name in (STATE, OPTIM_META):
        try:
            json.loads((folder / name).read_text())
        except (OSError, ValueError) as e:
            return f"{name}: {type(e).__name__}: {e}"
    for name in (WEIGHTS_NAME, OPTIM_TENSORS):
        try:
            with safe_open(str(folder / name), framework="pt") as f:
                for k in f.keys():
                    f.get_slice(k)  # reads the header entry of every tensor; offsets are checked against the size
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            return f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        if (folder / name).stat().st_size == 0:
            return f"{name}: empty file"
    return None


def find_resumable(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest state a run can continue from: ``final/`` (a finished run), else the newest periodic checkpoint.
    Corrupt ones are skipped and returned with the reason, so a caller can say that it fell back."""
    candidates = []
    final = run_dir / "final"
    if (final / STATE).is_file():
        candidates.append(final)
    candidates += list(reversed(list_checkpoints(run_dir / "checkpoints")))
    skipped: list[tuple[Path, str]] = []
    for c in candidates:
        why = checkpoint_problem(c)
        if why is None:
            return c, skipped
        skipped.append((c, why))
    return None, skipped
