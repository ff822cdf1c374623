"""``synerdetect demo --methods synerdetect,unifd,dire`` (or ``all``): the paper's comparisons on the demo benchmark.

Each method (:mod:`synerdetect.methods`) is trained exactly as the demo trains SynerDetect (the same benchmark,
the ``tiny`` preset and the demo's schedule, :func:`~synerdetect.demo.run.demo_config`, with ``method`` set) and
evaluated on every test family. Written to the output folder:

- ``comparison.json``: ``{"methods": {NAME: {"mean": {"acc", "ap"}, "generators": {GEN: {"acc", "ap", ...}}}}}``
- ``comparison.md``: one markdown table, methods x generators (accuracy / AP in %)
- ``comparison_logits.png``: Figure 3 of the paper for the demo - one row per method, one panel per test
  family, the real and fake distributions of the log-odds ``logit / tau``
- per method: ``runs/NAME/`` (the training run), ``checkpoints/NAME/`` and ``eval/NAME/`` (evaluate's results)

Calibration and the cascade (what the single-method demo adds after training) are not part of the comparison:
the cascade needs a perceptual-only path that most references do not have.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from .run import (
    SEEN,
    build_benchmark,
    check_demo_folder,
    clear_demo_folder,
    copy_demo_checkpoint,
    demo_config,
    stamp_demo_folder,
)


def method_config(out: Path, method: str, quick: bool = False):
    """The demo's experiment config with ``method`` set and a run folder of its own."""
    from ..config import merge

    return merge(demo_config(out, quick), {"method": method, "train": {"output_dir": str(out / "runs" / method)}})


def comparison_markdown(methods: dict[str, dict[str, Any]]) -> str:
    """One table: a row per method, per generator ``acc / AP`` (%), then the means."""
    gens = sorted({g for m in methods.values() for g in m["generators"]})

    def pct(v: float | None) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:.1f}"

    head = "| method | " + " | ".join(gens) + " | **mean** |"
    rows = [head, "|---|" + "---:|" * (len(gens) + 1)]
    for name, m in methods.items():
        cells = [f"{pct(m['generators'][g]['acc'])} / {pct(m['generators'][g]['ap'])}" for g in gens]
        mean = f"**{pct(m['mean']['acc'])} / {pct(m['mean']['ap'])}**"
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    seen = ", ".join(SEEN)
    return (
        "\n".join(rows)
        + f"\n\nCells: accuracy / AP (%), trained on {seen} only; decision rule logit > 0 (no threshold fitted). "
        "Synthetic stand-ins for generators and random-weight tiny base models: illustrative only.\n"
    )


def plot_comparison(logits: dict[str, dict[str, dict[int, list[float]]]], path: Path, *, dpi: int = 100) -> Path:
    """Figure 3 for the demo: rows = methods, columns = test families; real vs fake histograms of logit / tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(logits)
    gens = sorted({g for per in logits.values() for g in per})
    fig, axes = plt.subplots(
        len(names), len(gens), figsize=(3.2 * len(gens), 2.3 * len(names)), squeeze=False, sharey="row"
    )
    for i, name in enumerate(names):
        vals = [v for g in logits[name].values() for vs in g.values() for v in vs]
        lo, hi = (min(vals), max(vals)) if vals else (-1.0, 1.0)
        pad = 0.05 * (hi - lo) or 0.5
        bins = np.linspace(lo - pad, hi + pad, 31)  # one binning per method: its panels compare directly
        for j, gen in enumerate(gens):
            ax = axes[i][j]
            per = logits[name].get(gen, {})
            for label, colour, text in ((0, "tab:blue", "real"), (1, "tab:red", "fake")):
                if per.get(label):
                    ax.hist(per[label], bins=bins, color=colour, alpha=0.55, label=text)
            ax.axvline(0.0, color="0.3", lw=0.8, ls="--")
            if i == 0:
                ax.set_title(gen, fontsize=10)
            if j == 0:
                ax.set_ylabel(name, fontsize=10)
            if i == len(names) - 1:
                ax.set_xlabel("logit / tau (log-odds of fake)", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Logit distributions per method (trained on {', '.join(SEEN)}; demo stand-ins)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def run_comparison(
    out_dir: str | Path, methods: list[str], *, quick: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train and evaluate each of ``methods`` on the demo benchmark; write comparison.json / .md / _logits.png.
    Returns the comparison document (``{"methods": {...}, "seconds": ...}``)."""
    from ..data import load_labelled
    from ..engine.evaluate import evaluate
    from ..engine.train import train
    from ..methods import METHODS, check_method, load_detector
    from ..utils import atomic_write_json, atomic_write_text
    from .synthetic import describe

    out = Path(out_dir)
    for name in methods:
        check_method(name)  # every name is checked before the first minute of training
        for folder in (out / "runs" / name, out / "checkpoints" / name):
            check_demo_folder(folder)  # and every folder the comparison would replace
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    print("SynerDetect demo, method comparison (Table 5a / Figure 3): no weights or data are downloaded.\n")
    print(describe())
    build_benchmark(out, quick)
    samples = load_labelled(str(out / "data" / "test"), "cnndetection", "test")

    doc: dict[str, Any] = {"seen": list(SEEN), "methods": {}}
    logits: dict[str, dict[str, dict[int, list[float]]]] = {}
    for name in methods:
        t_m = time.time()
        cfg = method_config(out, name, quick)
        run = Path(cfg.train.output_dir)
        clear_demo_folder(run)  # a fresh run each time, like the single-method demo
        stamp_demo_folder(run)
        print(f"\n[{name}] {METHODS[name][1]}\ntraining for {cfg.train.epochs} epoch(s) ...", flush=True)
        summary = train(cfg, resume="never", progress=progress)
        ckpt = copy_demo_checkpoint(summary["final"], out / "checkpoints" / name)
        model = load_detector(ckpt).eval()  # through the checkpoint, as evaluate / predict load it
        res = evaluate(
            model,
            samples,
            out / "eval" / name,
            image_size=None,
            batch_size=32,
            progress=progress,
            title=f"demo, method {name}: trained on {', '.join(SEEN)}",
            extra={"demo": True, "method": name, "seen_families": list(SEEN), "checkpoint": str(ckpt)},
        )
        s = res["summary"]
        gens = {
            g: {k: m.get(k) for k in ("acc", "ap", "real_acc", "fake_acc", "n_real", "n_fake")}
            for g, m in s["generators"].items()
        }
        doc["methods"][name] = {
            "mean": {"acc": s["mean"]["acc"], "ap": s["mean"]["ap"]},
            "generators": gens,
            "train_seconds": summary.get("seconds"),
            "seconds": round(time.time() - t_m, 1),
            "checkpoint": str(ckpt),
        }
        tau = float(model.mcfg.tau)
        per: dict[str, dict[int, list[float]]] = {}
        for r in res["records"]:
            per.setdefault(r.generator, {0: [], 1: []})[int(r.label)].append(float(r.logit) / tau)
        logits[name] = per
        print(
            f"[{name}] mean acc {s['mean']['acc'] * 100:.1f}%, AP {s['mean']['ap'] * 100:.1f}% "
            f"({time.time() - t_m:.0f} s)",
            flush=True,
        )
        del model

    doc["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(out / "comparison.json", doc)
    md = comparison_markdown(doc["methods"])
    atomic_write_text(out / "comparison.md", md)
    plot_comparison(logits, out / "comparison_logits.png")
    print("\n" + md)
    print(f"wrote {out}/comparison.json, comparison.md, comparison_logits.png in {time.time() - t0:.0f} s")
    return doc


__all__ = ["comparison_markdown", "method_config", "plot_comparison", "run_comparison"]
