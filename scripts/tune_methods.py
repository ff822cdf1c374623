"""Choose each method's optimiser and learning rate on the demo, on a validation split of its training data.

For every method (SynerDetect and the Table 5a references) and every candidate of the grid
(``synerdetect.engine.tuning.GRID``: {sgd, adamw} x {1e-4, 1e-3, 1e-2}), train on 75 % of the demo's training
images (the seen family) and score AP / accuracy on the other 25 %; pick the best by validation AP (then accuracy).
The demo's test set is never read during the search. With ``--final``, each method is then trained on the whole
training set twice - with the demo's own optimiser (AdamW 1e-2, cosine: "before") and with its chosen one
("after"; skipped when the two are the same) - and evaluated on the demo's test set, so the ranking before and
after the search can be compared.

    python scripts/tune_methods.py --out tune_out [--methods all] [--final] [--seed 0]

Everything but the optimiser and its learning rate is the demo's recipe (``demo_config``: tiny preset, 4 epochs,
batch 16, warm-up 5, cosine, clip 1.0). The frozen-feature references that read the inversion (inversion_probe,
fusion_a/b/c) read it from one feature cache per method during the search (``cache.policy=cached-fixed``: the
inversion is the un-augmented view, so their inversion branch sees no flip during the search). DIRE reads the
cache too, with ``data.flip=false`` during its search (DIRE refuses a cache while training augments: its map
subtracts the inversion's view from the training view). UniFD has no inversion; SynerDetect and every ``--final``
run are online, as in the demo. The search's ``adamw 1e-2`` candidate is the demo's own optimiser, so the search
table holds the "before" ranking (on the validation split) too.
Writes ``<out>/tuning.json`` (resumable: finished candidates are kept) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

from synerdetect.config import merge
from synerdetect.data import load_labelled
from synerdetect.demo import build_demo_benchmark
from synerdetect.demo.run import SEEN, demo_config
from synerdetect.engine.evaluate import evaluate
from synerdetect.engine.train import train
from synerdetect.engine.tuning import GRID, optim_patch, pick, tune, validation_split
from synerdetect.methods import load_detector, parse_methods

#: Methods whose inversion can come from a shared cache during the search (frozen, unconditional features).
CACHED_DURING_SEARCH = {"inversion_probe", "fusion_a", "fusion_b", "fusion_c", "dire"}


def report(method: str, result: dict) -> None:
    print(f"{method} {result}", flush=True)


def merge_dicts(a: dict, b: dict) -> dict:
    return {**a, **{k: {**a.get(k, {}), **v} for k, v in b.items()}}


def final_run(out: Path, method: str, seed: int, patch: dict, tag: str) -> dict:
    cfg = merge(demo_config(out), {"method": method, "train": {"seed": seed, "checkpoint_every": 0}})
    cfg = merge(cfg, {"train": {"output_dir": str(out / "final" / method / tag)}})
    cfg = merge(cfg, patch)
    summary = train(cfg, resume="auto", progress=False)
    model = load_detector(summary["final"]).eval()
    samples = load_labelled(str(out / "data" / "test"), "cnndetection", "test")
    s = evaluate(model, samples, None, image_size=None, batch_size=32, progress=False)["summary"]
    gens = {g: {"acc": m["acc"], "ap": m["ap"]} for g, m in s["generators"].items()}
    return {
        "mean_acc": s["mean"]["acc"],
        "mean_ap": s["mean"]["ap"],
        "generators": gens,
        "optim": cfg.optim.name,
        "lr": cfg.optim.lr,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tune_out")
    ap.add_argument("--methods", default="all", help="comma-separated names or 'all'")
    ap.add_argument("--seed", type=int, default=0, help="train.seed of every run (and of the validation split)")
    ap.add_argument("--fraction", type=float, default=0.25, help="share of the training images held out")
    ap.add_argument("--final", action="store_true", help="then train before/after on all training data, test")
    ap.add_argument(
        "--lora", action="store_true", help="with --final: also train each fusion with model.reference_lora=true"
    )
    args = ap.parse_args()
    out = Path(args.out)
    build_demo_benchmark(out / "data", size=64, n_train=256, n_test=64, train_families=SEEN, seed=0)
    path = out / "tuning.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"search": {}, "final": {}}
    samples = load_labelled(str(out / "data" / "train"), "cnndetection", "train")
    tr, va = validation_split(samples, args.fraction, seed=args.seed)
    doc["split"] = {"train": len(tr), "val": len(va), "fraction": args.fraction, "seed": args.seed}
    base = merge(demo_config(out), {"train": {"seed": args.seed}})
    methods = parse_methods(args.methods)

    for method in methods:
        done = {(r["optim"], r["lr"]): r for r in doc["search"].get(method, {}).get("results", [])}
        todo = [g for g in GRID if g not in done]
        if todo:
            patch: dict[str, dict] = {"cache": {"policy": "cached-fixed", "dir": str(out / "cache" / method)}}
            if method == "dire":  # DIRE's cache is valid only when the training view is the evaluation view
                patch["data"] = {"flip": False}
            t0 = time.time()
            res = tune(
                base,
                method,
                tr,
                va,
                out / "search",
                grid=todo,
                cfg_patch=patch if method in CACHED_DURING_SEARCH else None,
                on_result=partial(report, method),
            )
            results = [done.get(g) or next(r for r in res["results"] if (r["optim"], r["lr"]) == g) for g in GRID]
            doc["search"][method] = {"results": results, "choice": pick(results), "seconds": time.time() - t0}
            path.write_text(json.dumps(doc, indent=1))

    print("\n| method | " + " | ".join(f"{o} {lr:g}" for o, lr in GRID) + " | choice |")
    print("|---|" + "---:|" * len(GRID) + "---|")
    for method in methods:
        s = doc["search"][method]
        cells = [f"{r['val_ap'] * 100:.1f} / {r['val_acc'] * 100:.1f}" for r in s["results"]]
        c = s["choice"]
        print(f"| {method} | " + " | ".join(cells) + f" | {c['optim']} {c['lr']:g} |")

    if args.final:
        demo_optim = (base.optim.name, base.optim.lr)
        for method in methods:
            c = doc["search"][method]["choice"]
            f = doc["final"].setdefault(method, {})
            if "before" not in f:
                f["before"] = final_run(out, method, args.seed, {}, "before")
                path.write_text(json.dumps(doc, indent=1))
            if "after" not in f:
                same = (c["optim"], c["lr"]) == demo_optim
                patch = optim_patch(c["optim"], c["lr"])
                f["after"] = f["before"] if same else final_run(out, method, args.seed, patch, "after")
                path.write_text(json.dumps(doc, indent=1))
            if args.lora and method.startswith("fusion_") and "after_lora" not in f:
                patch = merge_dicts(optim_patch(c["optim"], c["lr"]), {"model": {"reference_lora": True}})
                f["after_lora"] = final_run(out, method, args.seed, patch, "after_lora")
                path.write_text(json.dumps(doc, indent=1))
        print("\n| method | before: mean acc / AP | after: optimiser | after: mean acc / AP |\n|---|---:|---|---:|")
        for method in methods:
            b, a = doc["final"][method]["before"], doc["final"][method]["after"]
            lo = doc["final"][method].get("after_lora")
            print(
                f"| {method} | {b['mean_acc'] * 100:.1f} / {b['mean_ap'] * 100:.1f} | {a['optim']} {a['lr']:g} | "
                f"{a['mean_acc'] * 100:.1f} / {a['mean_ap'] * 100:.1f} |"
                + (f" with LoRA: {lo['mean_acc'] * 100:.1f} / {lo['mean_ap'] * 100:.1f} |" if lo else "")
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
