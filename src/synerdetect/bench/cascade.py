"""The cascade of Eq. 10 measured on a trained checkpoint: the band fitted on validation, then on test the share of
images inverted, the agreement with full Eq. 10, the accuracy of both and the wall time of a full pass against a
cascade pass, in one run (``synerdetect bench cascade``; the demo calls :func:`measure_cascade` too).

The cascade itself (band fit, curve, the regrouping predictor) is :mod:`synerdetect.engine.cascade`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..data import load_labelled
from ..engine.cascade import cascade_curve, cascade_stats, fit_cascade_band, plot_cascade_curve
from ..engine.inference import both_branches, timed_scores
from ..methods import load_detector
from ..utils import atomic_write_json, atomic_write_text
from .components import BenchConfig, Recorder


def measure_cascade(
    model,
    val_samples,
    test_samples,
    *,
    image_size: int | None,
    batch_size: int = 16,
    target_agreement: float = 0.99,
    band: tuple[float, float] | None = None,
    out_dir=None,
) -> dict[str, Any]:
    """Fit the band on ``val_samples`` (or use ``band``); on ``test_samples`` measure the curve (band vs share
    inverted vs agreement vs accuracy) and, at the band, the wall time of a full pass and of a cascade pass (data
    loading included in both, in one run), the agreement with full and the accuracy of both. Writes
    ``cascade_curve.png`` / ``cascade.json`` / ``cascade.md`` (the curves on test and validation as tables) into
    ``out_dir`` when given."""
    fitted, val_curve = None, None
    if band is None or len(val_samples):
        val = both_branches(model, val_samples, image_size=image_size, batch_size=batch_size)
        val_curve = cascade_curve(val["margin"], val["full"], val["label"])
        if band is None:
            fitted = fit_cascade_band(val["margin"], val["full"], target_agreement=target_agreement)
            band = (fitted["band"][0], fitted["band"][1])
    full_records, t_full = timed_scores(model, test_samples, image_size=image_size, batch_size=batch_size, mode="full")
    test = both_branches(model, test_samples, image_size=image_size, batch_size=batch_size, full_records=full_records)
    curve = cascade_curve(test["margin"], test["full"], test["label"])
    cascade_records, t_cascade = timed_scores(
        model, test_samples, image_size=image_size, batch_size=batch_size, mode="cascade", band=band
    )
    decided = {how: sum(r.decided_by == how for r in cascade_records) for how in ("perceptual", "full")}
    at_band = cascade_stats(test["margin"], test["full"], band, test["label"])
    result = {
        "band": list(band),
        "target_agreement": target_agreement,
        "val": fitted,
        "test": {
            **at_band,
            "decided": decided,
            "seconds_full": t_full,
            "seconds_cascade": t_cascade,
            "speedup": t_full / t_cascade if t_cascade > 0 else None,
        },
        "inversion_steps": model.mcfg.inversion_steps,
        "curve": curve,
        "val_curve": val_curve,
    }
    if out_dir is not None:
        out = Path(out_dir)
        plot_cascade_curve(curve, out / "cascade_curve.png", fitted=at_band)
        atomic_write_json(out / "cascade.json", result)
        steps = model.mcfg.inversion_steps
        md = f"# Cascade over Eq. 10 ({steps} inversion steps)\n\n## Test\n\n{curve_markdown(curve)}\n"
        if val_curve is not None:
            md += f"\n## Validation\n\n{curve_markdown(val_curve)}\n"
        atomic_write_text(out / "cascade.md", md)
    return result


def curve_markdown(curve: list[dict[str, Any]]) -> str:
    rows = ["| band ±w | inverted | agreement with full | cascade acc | full acc |", "|---:|---:|---:|---:|---:|"]
    for c in curve:
        rows.append(
            f"| {c['half_width']:.4f} | {c['share_inverted'] * 100:.1f}% | {c['agreement'] * 100:.1f}% | "
            f"{c.get('acc_cascade', float('nan')) * 100:.1f}% | {c.get('acc_full', float('nan')) * 100:.1f}% |"
        )
    return "\n".join(rows)


def run_cascade_bench(
    checkpoint: str | os.PathLike,
    val: str,
    test: str,
    *,
    steps: int | None = 100,
    device: str = "cpu",
    batch_size: int = 32,
    target_agreement: float = 0.99,
    layout: str = "auto",
    out: str | os.PathLike | None = None,
    print_lines: bool = True,
) -> list[dict]:
    """The cascade of Eq. 10 (engine/cascade.py) on a trained checkpoint, in one run: fit the band on the labelled
    ``val`` set, then on ``test`` the share of images inverted, the agreement with full Eq. 10, the accuracy of
    both and the wall time of a full pass vs a cascade pass. ``steps`` overrides the inversion steps (100: the
    paper's). JSON lines like :func:`run_bench`; the curve goes to ``cascade_curve.png`` beside ``out``."""
    over = {"model.inversion_steps": int(steps)} if steps else {}
    model = load_detector(Path(checkpoint), **over).to(torch.device(device)).eval().enable_fast_path()
    bc = BenchConfig(
        preset="tiny" if model.cfg.preset == "tiny" else "paper",
        device=device,
        batch_size=batch_size,
        out=out,
        print_lines=print_lines,
        sharded=False,
    )
    emit = Recorder(bc, model)
    try:
        size = model.cfg.data.image_size
        res = measure_cascade(
            model,
            load_labelled(val, layout),
            load_labelled(test, layout),
            image_size=size,
            batch_size=batch_size,
            target_agreement=target_agreement,
            out_dir=Path(out).parent if out else None,
        )
        t = res["test"]
        kw = {"band": res["band"], "images": t["n"], "preset": model.cfg.preset}
        emit("cascade_inverted_share", t["share_inverted"], "share", **kw)
        emit(
            "cascade_agreement",
            t["agreement"],
            "share",
            note=f"share of test decisions equal to full; target {target_agreement}",
            **kw,
        )
        emit("cascade_accuracy", t["acc_cascade"], "share", **kw)
        emit("full_accuracy", t["acc_full"], "share", **kw)
        emit("full_pass_seconds", t["seconds_full"], "s", **kw)
        emit("cascade_pass_seconds", t["seconds_cascade"], "s", **kw)
        emit("cascade_speedup", t["speedup"], "x", note="target >= 3 on tiny at 100 steps", **kw)
    finally:
        emit.close()
    return emit.lines
