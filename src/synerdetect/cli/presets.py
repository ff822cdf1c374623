"""``synerdetect presets``: the presets and the Table 5 ablations (no model, no torch)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_command


def add_parser(sub: Any) -> None:
    p = add_command(sub, "presets", help="list presets and ablations", example="presets")
    p.set_defaults(func=cmd_presets, light=True)


def cmd_presets(_args: argparse.Namespace) -> int:
    from ..presets import ABLATIONS, get_preset, list_presets

    for name in list_presets():
        cfg = get_preset(name)
        print(
            f"{name}: clip={cfg.model.clip} sd={cfg.model.sd} clip_size={cfg.model.clip_size} "
            f"sd_size={cfg.model.sd_size} inversion_steps={cfg.model.inversion_steps} "
            f"optim={cfg.optim.name}@{cfg.optim.lr} batch={cfg.train.batch_size} epochs={cfg.train.epochs}"
        )
    print("ablations (Table 5):", ", ".join(sorted(ABLATIONS)))
    return 0
