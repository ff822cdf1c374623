"""``synerdetect demo``: the whole pipeline on a fresh machine, with nothing downloaded.

Builds a small benchmark (bundled real photographs vs synthetic generator stand-ins), trains the
``tiny`` preset on one family, evaluates on every family and leaves results.json, the logit figure
and the trained checkpoint in the output folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path


def demo_config(out: Path, quick: bool = False):
    from ..config import merge
    from ..presets import get_preset

    cfg = get_preset("tiny")
    return merge(cfg, {
        "data": {"train": str(out / "data" / "train"), "train_layout": "cnndetection", "train_split": "train",
                 "image_size": 64, "blur_prob": 0.0, "jpeg_prob": 0.0},
        "train": {"output_dir": str(out / "run"), "epochs": 1 if quick else 4, "batch_size": 16,
                  "checkpoint_every": 20, "log_every": 5, "num_workers": 0},
    })


def run_demo(out_dir: str | Path = "demo_out", *, quick: bool = False, progress: bool = True) -> int:
    import torch

    from ..engine.evaluate import evaluate, load_labelled
    from ..engine.train import train
    from ..model.detector import SynerDetect
    from .synthetic import FAMILY_KIND, build_demo_benchmark, describe

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seen = ("gan_upsample",)
    print("SynerDetect demo: no weights or data are downloaded.\n")
    print(describe())
    n_train, n_test = (32, 16) if quick else (256, 64)
    build_demo_benchmark(out / "data", size=64, n_train=n_train, n_test=n_test, train_families=seen, seed=0)
    print(f"\nbenchmark in {out / 'data'}: train on {', '.join(seen)} ({n_train} real + {n_train} fake), "
          f"test on {len(FAMILY_KIND)} families ({n_test} real + {n_test} fake each)")

    cfg = demo_config(out, quick)
    run = Path(cfg.train.output_dir)
    if (run / "final").exists():
        shutil.rmtree(run)  # a fresh run each time: the demo shows training, not resuming
    print(f"\ntraining the tiny preset (random-weight CLIP + SD built from config, "
          f"{cfg.model.inversion_steps} inversion steps) for {cfg.train.epochs} epoch(s) ...")
    summary = train(cfg, resume="never", progress=progress)
    ckpt = out / "checkpoint"
    if ckpt.exists():
        shutil.rmtree(ckpt)
    shutil.copytree(summary["final"], ckpt)

    model = SynerDetect.from_pretrained(ckpt).eval()
    samples = load_labelled(str(out / "data" / "test"), "cnndetection", "test")
    res = evaluate(model, samples, out, image_size=64, batch_size=32, progress=progress,
                   title="demo: trained on gan_upsample",
                   extra={"demo": True, "seen_families": list(seen), "checkpoint": str(ckpt),
                          "note": "synthetic stand-ins for GAN/diffusion generators, not real generators"})
    gens = res["summary"]["generators"]
    print("\n" + res["markdown"])
    print("\nseen family:   " + ", ".join(f"{g} acc {gens[g]['acc'] * 100:.1f}%" for g in seen if g in gens))
    unseen = [g for g in gens if g not in seen]
    print("unseen:        " + ", ".join(f"{g} ({FAMILY_KIND.get(g, '?')}) acc {gens[g]['acc'] * 100:.1f}%"
                                        for g in unseen))
    print("(chance is 50%; the fakes are synthetic stand-ins made by this project, not real GANs or diffusion "
          "models, and the tiny model has random base weights: unseen-family numbers are whatever they are.)")
    (out / "demo_summary.json").write_text(json.dumps({
        "seconds": round(time.time() - t0, 1), "train": summary, "seen": list(seen),
        "acc": {g: gens[g]["acc"] for g in gens}, "ap": {g: gens[g]["ap"] for g in gens}}, indent=2, default=str))
    print(f"\nwrote {out}/results.json, results.csv, scores.jsonl, logit_distributions.png, checkpoint/ "
          f"in {time.time() - t0:.0f} s")
    print(f"try: synerdetect predict {out}/data/test/gan_upsample/1_fake --checkpoint {ckpt}")
    return 0
