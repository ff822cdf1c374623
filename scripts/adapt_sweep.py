"""Measure ``synerdetect adapt`` on the demo: for each unseen family, adapt the demo checkpoint with N shots of that
family's fakes and as many reals, over seeds, with and without replay of the seen family's training data.

    python scripts/adapt_sweep.py --ref demo_out --out adapt_sweep [--families ...] [--shots 16 32 64]
        [--seeds 0 1 2] [--steps 20] [--lr 3e-3 ...] [--replay-ratio 0.5 ...] [--plot docs/adapt_shots.png]

``--ref`` is a finished ``synerdetect demo`` folder (its checkpoint/, data/train, data/test and data/val). The new
family's images come from the demo's own builder with another seed (training-pool photographs, so the test images
stay unseen). Every run is scored on the new family's and the seen family's test images and on the seen family's
validation split (``val:<family>`` rows); choose defaults from the validation columns only. Finished runs are kept
in ``<out>/sweep.json`` and skipped when the command is run again. Prints the markdown table (mean ± std over
seeds) and draws the shots curve with ``--plot``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path
from typing import Any

from synerdetect.data import load_labelled
from synerdetect.demo import build_demo_benchmark
from synerdetect.demo.run import SEEN
from synerdetect.engine.adapt import AdaptOptions, adapt

UNSEEN = ("diffusion_latent", "diffusion_noise", "gan_spectral")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True, help="a finished demo folder")
    p.add_argument("--out", required=True)
    p.add_argument("--families", nargs="+", default=list(UNSEEN))
    p.add_argument("--shots", nargs="+", type=int, default=[16, 32, 64])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", nargs="+", type=float, default=[3e-3])
    p.add_argument("--replay-ratio", nargs="+", type=float, default=[0.5])
    p.add_argument("--no-baseline", action="store_true", help="skip the runs without replay")
    p.add_argument("--plot", default=None, help="PNG of the shots curve")
    p.add_argument("--report-only", action="store_true", help="no new runs: the table and plot of sweep.json")
    return p.parse_args()


def family_data(ref: Path, out: Path, family: str, n: int) -> tuple[Path, Path]:
    """The new family's pool (``n`` fakes and reals from training photographs) and the eval manifest: the test
    images of the family and of the seen family, and the seen family's validation split as ``val:<family>``."""
    pool = out / "new" / family
    build_demo_benchmark(pool, size=64, n_train=n, n_test=1, train_families=(family,), test_families=(family,), seed=3)
    rows = [s for g in (family, *SEEN) for s in load_labelled(str(ref / "data" / "test" / g), "cnndetection", "test")]
    val = load_labelled(str(ref / "data" / "val" / "test"), "cnndetection", "test")
    manifest = out / "eval" / f"{family}.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "generator"])
        w.writerows([s.path, s.label, s.generator] for s in rows)
        w.writerows([s.path, s.label, f"val:{s.generator}"] for s in val if s.generator in SEEN)
    return pool / "train", manifest


def one_run(ref: Path, data: Path, folder: Path, o: AdaptOptions, replay: bool, before) -> dict:
    rep = adapt(
        ref / "checkpoint",
        data,
        folder,
        replay=ref / "data" / "train" if replay else None,
        options=o,
        progress=False,
        before=before,
    )
    fam = {r["family"]: r for r in rep["families"]}
    hist = rep["validation"]
    best = max(hist, key=lambda h: (h["val_acc"], h["val_ap"] or 0.0))
    return {
        "acc": {g: [r["acc_before"], r["acc_after"]] for g, r in fam.items()},
        "ap": {g: [r["ap_before"], r["ap_after"]] for g, r in fam.items()},
        "new_val_acc": best["val_acc"],
        "cost": rep["lineage"]["cost"],
        "best_step": rep["lineage"]["steps"]["best_step"],
        "_before": rep["before"],
    }


def main() -> int:
    args = parse_args()
    ref, out = Path(args.ref), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "sweep.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.is_file() else {}
    seen = SEEN[0]
    for family in [] if args.report_only else args.families:
        data, manifest = family_data(ref, out, family, max(args.shots))
        before = None
        for lr in args.lr:
            for ratio in args.replay_ratio:
                for replay in [True] + ([] if args.no_baseline else [False]):
                    for shots in args.shots:
                        for seed in args.seeds:
                            key = f"{family}|{shots}|{seed}|{int(replay)}|{lr}|{ratio if replay else 0}"
                            if key in results:
                                continue
                            o = AdaptOptions(
                                shots=shots,
                                steps=args.steps,
                                lr=lr,
                                replay_ratio=ratio,
                                seed=seed,
                                eval_sets=[str(manifest)],
                                refit_calibration=False,
                            )
                            t0 = time.time()
                            folder = out / "runs" / key.replace("|", "_")
                            res = one_run(ref, data, folder, o, replay, before)
                            before = res.pop("_before")
                            results[key] = res
                            store.write_text(json.dumps(results, indent=1))
                            a = res["acc"]
                            print(
                                f"{key}: new {a[family][0]:.3f}->{a[family][1]:.3f} seen {a[seen][0]:.3f}->"
                                f"{a[seen][1]:.3f} val:seen ->{a['val:' + seen][1]:.3f} "
                                f"new val {res['new_val_acc']:.3f}"
                                f" ({time.time() - t0:.0f} s)",
                                flush=True,
                            )
    print(table(results, seen))
    if args.plot:
        plot(results, seen, Path(args.plot), args.lr[0], args.replay_ratio[0])
    return 0


def _ms(values: list[float]) -> str:
    m = statistics.mean(values) * 100
    return f"{m:.1f} ± {statistics.stdev(values) * 100:.1f}" if len(values) > 1 else f"{m:.1f}"


def groups(results: dict[str, Any]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for key, res in results.items():
        family, shots, _seed, replay, lr, ratio = key.split("|")
        out.setdefault((family, int(shots), int(replay), float(lr), float(ratio)), []).append(res)
    return out


def table(results: dict[str, Any], seen: str) -> str:
    lines = [
        "| new family | shots | seeds | replay | lr | new acc before | new acc after | seen acc before | "
        "seen acc after | seen val acc after | new val acc (best) | s / run |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (family, shots, replay, lr, ratio), runs in sorted(groups(results).items()):

        def col(g: str, i: int, runs: list[dict] = runs) -> str:
            return _ms([r["acc"][g][i] for r in runs])

        lines.append(
            f"| {family} | {shots} | {len(runs)} | {f'yes ({ratio:g})' if replay else 'no'} | {lr:g} | "
            f"{col(family, 0)} | {col(family, 1)} | {col(seen, 0)} | {col(seen, 1)} | {col('val:' + seen, 1)} | "
            f"{_ms([r['new_val_acc'] for r in runs])} | "
            f"{statistics.mean(r['cost']['wall_seconds'] for r in runs):.0f} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], seen: str, path: Path, lr: float, ratio: float) -> None:
    """Accuracy after adapting against shots, with and without replay, at one lr and replay share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = groups(results)
    families = sorted({k[0] for k in g})
    fig, axes = plt.subplots(1, len(families), figsize=(4 * len(families), 3.4), sharey=True, squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        for replay, style in ((1, "-"), (0, "--")):
            keys = sorted(
                k for k in g if k[0] == family and k[2] == replay and k[3] == lr and k[4] == (ratio if replay else 0)
            )
            if not keys:
                continue
            shots = [k[1] for k in keys]
            for fam, colour, name in ((family, "C0", "new family"), (seen, "C1", "seen family")):
                means = [statistics.mean(r["acc"][fam][1] for r in g[k]) * 100 for k in keys]
                sds = [statistics.stdev(r["acc"][fam][1] for r in g[k]) * 100 if len(g[k]) > 1 else 0 for k in keys]
                ax.errorbar(
                    shots,
                    means,
                    yerr=sds,
                    fmt=style + "o",
                    color=colour,
                    capsize=3,
                    label=f"{name}, {'replay' if replay else 'no replay'}",
                )
            ax.axhline(g[keys[0]][0]["acc"][family][0] * 100, color="C0", lw=0.8, ls=":")
            ax.axhline(g[keys[0]][0]["acc"][seen][0] * 100, color="C1", lw=0.8, ls=":")
        ax.set_title(f"new: {family}")
        ax.set_xscale("log", base=2)
        ax.set_xticks([16, 32, 64], ["16", "32", "64"])
        ax.set_xlabel("shots (fakes; as many reals)")
    axes[0][0].set_ylabel("test accuracy after adapt (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("synerdetect adapt on the demo (mean ± std over seeds; dotted: before)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
