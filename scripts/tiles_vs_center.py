"""Measure the whole-image view (``data.eval_view: tiles``) against the centre crop on a demo benchmark built at
256 px, over several seeds: the ledger row of docs/method.md.

Per seed: the demo benchmark at ``--image-px`` (default 256; train on the seen family, test on all four), the tiny
preset trained as the demo trains it (``train.seed`` = the seed: initialisation, data order, CMID noise), then one
scoring pass per test image that yields the centre logit and every tile's perceptual logit, so each aggregation rule
(mean, max, top-k mean) is computed from the same forward passes. Then the demo's localisation set (composites of
the seen family, fixed seed 0): pixel-AUC / best IoU of the three maps and the whole-image accuracy of each view.

    python scripts/tiles_vs_center.py --out tiles_out --seeds 0 1 2

Writes ``<out>/tiles_vs_center.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from synerdetect.config import merge
from synerdetect.data import ImageDataset, collate, load_labelled
from synerdetect.demo import build_demo_benchmark
from synerdetect.demo.localisation import build_localisation_set
from synerdetect.demo.run import SEEN, demo_config
from synerdetect.engine.localisation import measure_localisation
from synerdetect.engine.train import train
from synerdetect.methods import load_detector
from synerdetect.model.base import view_transform
from synerdetect.model.evidence import aggregate_tiles

RULES = ("mean", "max", "topk")


@torch.no_grad()
def logits_by_view(model, samples) -> dict[str, np.ndarray]:
    """Labels, generators and the logit of each view (center; tiles under each rule) from one pass."""
    model.cfg.data.eval_view = "center"  # the tiles are scored alongside; the rules are applied below
    ds = ImageDataset(samples, view_transform(model.cfg, train=False, tiles=True), seed=0)
    out: dict[str, list] = {"label": [], "generator": [], "center": [], **{r: [] for r in RULES}}
    for batch in DataLoader(ds, batch_size=16, collate_fn=collate):
        x = batch["image"]
        pred, extra = model.predict_with_evidence(x)
        sim_v = torch.stack([pred["sim_v_real"], pred["sim_v_fake"]], 1)
        n_part = pred["logit"] - (sim_v[:, 1] - sim_v[:, 0])  # the z_n term of Eq. 10
        out["center"] += pred["logit"].tolist()
        for r in RULES:
            agg = aggregate_tiles(extra["tile_sim"], x.owner, len(x), r, model.cfg.data.tile_topk)
            out[r] += (agg[:, 1] - agg[:, 0] + n_part).tolist()
        out["label"] += batch["label"].tolist()
        out["generator"] += batch["generator"]
    return {k: np.asarray(v) for k, v in out.items()}


def accuracies(d: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    res = {}
    for view in ("center", *RULES):
        right = (d[view] > 0) == (d["label"] == 1)
        per = {g: float(right[d["generator"] == g].mean()) for g in sorted(set(d["generator"]))}
        unseen = [v for g, v in per.items() if g not in SEEN]
        res[view] = {
            "seen": statistics.mean(per[g] for g in SEEN if g in per),
            "unseen": statistics.mean(unseen) if unseen else float("nan"),
            "all": float(right.mean()),
            "fake": float(right[d["label"] == 1].mean()),
            "real": float(right[d["label"] == 0].mean()),
        }
    return res


def run_seed(out: Path, seed: int, px: int, n_train: int, n_test: int, loc_root: Path) -> dict:
    t0 = time.time()
    data = out / f"data_{px}"
    build_demo_benchmark(data, size=px, n_train=n_train, n_test=n_test, train_families=SEEN, seed=0)
    cfg = demo_config(out / f"seed{seed}")
    cfg = merge(cfg, {"data": {"train": str(data / "train")}, "train": {"seed": seed}})
    summary = train(cfg, resume="never", progress=False)
    model = load_detector(summary["final"]).eval()
    bench = accuracies(logits_by_view(model, load_labelled(str(data / "test"), "cnndetection", "test")))
    loc_samples = load_labelled(str(loc_root), "cnndetection", None)
    comp = accuracies(logits_by_view(model, loc_samples))
    loc = measure_localisation(model, loc_samples, loc_root / "masks", progress=False)
    maps = {
        k: {m: v[k][m] for m in ("pixel_auc", "pixel_auc_per_image", "iou_best")}
        for g, v in loc["per_generator"].items()
        for k in ("perceptual", "generative", "combined")
    }
    return {"seed": seed, "benchmark": bench, "composites": comp, "maps": maps, "seconds": round(time.time() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--image-px", type=int, default=256)
    ap.add_argument("--n-train", type=int, default=128)
    ap.add_argument("--n-test", type=int, default=32)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loc_root = build_localisation_set(out / "localisation", n=24)
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(out, seed, args.image_px, args.n_train, args.n_test, loc_root))
        (out / "tiles_vs_center.json").write_text(json.dumps(runs, indent=1))
        print(json.dumps(runs[-1]), flush=True)

    def ms(vals: list[float]) -> str:
        return f"{statistics.mean(vals) * 100:.1f} ± {statistics.pstdev(vals) * 100:.1f}"

    print("\n| view | seen acc | unseen mean acc | composites+originals acc | composites acc | originals acc |")
    print("|---|---:|---:|---:|---:|---:|")
    for view in ("center", *RULES):
        b = [r["benchmark"][view] for r in runs]
        c = [r["composites"][view] for r in runs]
        print(
            f"| {view} | {ms([x['seen'] for x in b])} | {ms([x['unseen'] for x in b])} | {ms([x['all'] for x in c])} "
            f"| {ms([x['fake'] for x in c])} | {ms([x['real'] for x in c])} |"
        )
    for k in ("perceptual", "generative", "combined"):
        auc = [r["maps"][k]["pixel_auc"] for r in runs]
        auc_i = [r["maps"][k]["pixel_auc_per_image"] for r in runs]
        iou = [r["maps"][k]["iou_best"] for r in runs]
        print(f"map {k}: pixel-AUC {ms(auc)} % pooled, {ms(auc_i)} % per image; IoU (best threshold) {ms(iou)} %")


if __name__ == "__main__":
    main()
