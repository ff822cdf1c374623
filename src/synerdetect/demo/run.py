"""``synerdetect demo``: the whole pipeline on a fresh machine, with nothing downloaded.

Builds a small benchmark (bundled real photographs vs synthetic generator stand-ins), trains the
``tiny`` preset on one family, calibrates it on a validation split of that family (images distinct from
the training and test ones), evaluates on every family with the calibration and leaves results.json,
the logit figure, the reliability diagram and the trained checkpoint (with calibration.json) in the
output folder.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any


def demo_config(out: Path, quick: bool = False):
    from ..config import merge
    from ..presets import get_preset

    cfg = get_preset("tiny")
    return merge(
        cfg,
        {
            "data": {
                "train": str(out / "data" / "train"),
                "train_layout": "cnndetection",
                "train_split": "train",
                "blur_prob": 0.0,
                "jpeg_prob": 0.0,
            },
            "train": {
                "output_dir": str(out / "run"),
                "epochs": 1 if quick else 4,
                "batch_size": 16,
                "checkpoint_every": 20,
                "log_every": 5,
                "num_workers": 0,
            },
        },
    )


#: The file that marks a folder the demo created (its run and checkpoint folders): only such folders are ever
#: removed, so a user's own ``run/`` or ``checkpoint/`` under ``--out`` is refused, never deleted.
DEMO_STAMP = ".synerdetect-demo"


def check_demo_folder(folder: Path) -> None:
    """Refuse (``FileExistsError``, one line) a ``folder`` the demo would replace but did not create: it exists,
    is not empty and holds no :data:`DEMO_STAMP`. Called for every such folder before any work starts."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder; move it or choose another --out")
    if (folder / DEMO_STAMP).is_file() or not any(folder.iterdir()):
        return
    raise FileExistsError(
        f"{folder} exists and was not created by the demo (no {DEMO_STAMP}); move it or choose another --out"
    )


def clear_demo_folder(folder: Path) -> None:
    """Remove ``folder`` when the demo created it (stamped) or it is empty; refuse any other (see
    :func:`check_demo_folder`)."""
    check_demo_folder(folder)
    if folder.exists():
        shutil.rmtree(folder)


def stamp_demo_folder(folder: Path) -> Path:
    """Create ``folder`` if needed and mark it as the demo's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO_STAMP).write_text("created by `synerdetect demo`; the demo may replace this folder\n")
    return folder


def copy_demo_checkpoint(src: str | Path, dst: Path) -> Path:
    """Copy the trained ``final/`` to ``dst`` (replacing only an earlier demo's copy) and stamp it."""
    clear_demo_folder(dst)
    shutil.copytree(src, dst)
    return stamp_demo_folder(dst)


#: The family the demo trains on; the other three are the unseen ones.
SEEN = ("gan_upsample",)


def build_benchmark(out: Path, quick: bool = False) -> tuple[int, int]:
    """The demo's benchmark under ``out/data`` (train on :data:`SEEN`, test on every family); returns
    ``(n_train, n_test)`` images per class."""
    from .synthetic import build_demo_benchmark

    n_train, n_test = (32, 16) if quick else (256, 64)
    build_demo_benchmark(out / "data", size=64, n_train=n_train, n_test=n_test, train_families=SEEN, seed=0)
    return n_train, n_test


def run_demo(out_dir: str | Path = "demo_out", *, quick: bool = False, progress: bool = True) -> int:
    from ..bench import measure_cascade
    from ..data import load_labelled
    from ..engine.evaluate import evaluate
    from ..methods import load_detector
    from .synthetic import FAMILY_KIND, describe

    # 1. The benchmark, after checking that no folder the demo would replace is someone else's.
    t0 = time.time()
    out = Path(out_dir)
    run, ckpt = out / "run", out / "checkpoint"
    for folder in (run, ckpt):
        check_demo_folder(folder)  # before minutes of work: never replace a folder the demo did not make
    out.mkdir(parents=True, exist_ok=True)
    print("SynerDetect demo: no weights or data are downloaded.\n")
    print(describe())
    n_train, n_test = build_benchmark(out, quick)
    print(
        f"\nbenchmark in {out / 'data'}: train on {', '.join(SEEN)} ({n_train} real + {n_train} fake), "
        f"test on {len(FAMILY_KIND)} families ({n_test} real + {n_test} fake each)"
    )

    # 2. Train the tiny preset on the seen family; the final weights become the demo's checkpoint.
    summary = _train(out, run, ckpt, quick=quick, progress=progress)
    model = load_detector(ckpt).eval()

    # 3. Calibrate (and fit the cascade band) on a validation split of the seen family.
    cal, val_root = _calibrate(out, ckpt, model, quick=quick, progress=progress)

    # 4. Evaluate on every family, calibrated.
    samples = load_labelled(str(out / "data" / "test"), "cnndetection", "test")
    res = evaluate(
        model,
        samples,
        out,
        image_size=None,
        batch_size=32,
        progress=progress,
        calibration=cal,
        title="demo: trained on gan_upsample",
        extra={
            "demo": True,
            "seen_families": list(SEEN),
            "checkpoint": str(ckpt),
            "note": "synthetic stand-ins for GAN/diffusion generators, not real generators",
        },
    )
    _print_results(res, cal)

    # 5. The cascade (engine/cascade.py): the inversion only for images whose perceptual margin is inside the band
    # fitted on the validation split; timed against the full method on the test set, in this run.
    assert cal.cascade is not None
    band = (cal.cascade["band"][0], cal.cascade["band"][1])
    val_samples = load_labelled(str(val_root / "test"), "cnndetection", "test")
    casc = measure_cascade(model, val_samples, samples, image_size=None, batch_size=32, band=band, out_dir=out)
    ct = casc["test"]
    print(
        f"cascade:       band [{band[0]:+.4f}, {band[1]:+.4f}] fitted on validation for 99% agreement with full "
        f"Eq. 10; on test {ct['share_inverted'] * 100:.1f}% of images inverted, "
        f"agreement {ct['agreement'] * 100:.1f}%, "
        f"accuracy {ct['acc_cascade'] * 100:.1f}% (full {ct['acc_full'] * 100:.1f}%), "
        f"{ct['seconds_full']:.1f} s -> {ct['seconds_cascade']:.1f} s ({ct['speedup']:.1f}x) at "
        f"{model.mcfg.inversion_steps} inversion steps (curve: cascade_curve.png)"
    )

    # 5b. Localisation (demo/localisation.py): the evidence maps against the masks of pasted seen-family regions.
    from ..engine.localisation import write_localisation
    from .localisation import run_localisation

    write_localisation(out, run_localisation(out, model, n=12 if quick else 24, progress=progress)["_loc"])

    # 6. demo_summary.json and where to go next.
    _write_summary(out, round(time.time() - t0, 1), summary, res, cal, band, ct)
    print(
        f"\nwrote {out}/results.json, results.csv, scores.jsonl, logit_distributions.png, reliability.png, "
        f"checkpoint/ (with calibration.json) in {time.time() - t0:.0f} s"
    )
    print(f"try: synerdetect predict {out}/data/test/gan_upsample/1_fake --checkpoint {ckpt}")
    return 0


def _train(out: Path, run: Path, ckpt: Path, *, quick: bool, progress: bool) -> dict[str, Any]:
    from ..engine.train import train

    cfg = demo_config(out, quick)
    assert Path(cfg.train.output_dir) == run
    clear_demo_folder(run)  # a fresh run each time: the demo shows training, not resuming
    stamp_demo_folder(run)
    print(
        f"\ntraining the tiny preset (random-weight CLIP + SD built from config, "
        f"{cfg.model.inversion_steps} inversion steps) for {cfg.train.epochs} epoch(s) ..."
    )
    summary = train(cfg, resume="never", progress=progress)
    copy_demo_checkpoint(summary["final"], ckpt)
    return summary


def _calibrate(out: Path, ckpt: Path, model, *, quick: bool, progress: bool):
    """The calibration (with the cascade band) fitted on a fresh validation split of the seen family."""
    from ..engine.calibrate import calibrate_checkpoint
    from ..engine.calibration import format_calibration
    from .synthetic import build_demo_benchmark

    # The same builder with another seed, so every image differs from the training and test ones (reals are crops
    # of the held-out photo rows, like the test reals; fakes get fresh noise). The builder always writes a train/
    # folder too (one image per class, unused): the val set is test/.
    n_val = 24 if quick else 64
    val_root = out / "data" / "val"
    build_demo_benchmark(val_root, size=64, n_train=1, n_test=n_val, train_families=SEEN, test_families=SEEN, seed=1)
    print(
        f"\ncalibrating on a validation split of {', '.join(SEEN)} ({n_val} real + {n_val} fake, seed 1, "
        f"in {val_root / 'test'}) ..."
    )
    cal = calibrate_checkpoint(
        ckpt,
        val_root / "test",
        layout="cnndetection",
        split="test",
        model=model,
        image_size=None,
        batch_size=32,
        progress=progress,
        cascade_agreement=0.99,
    )
    print(format_calibration(cal))
    return cal, val_root


def _pct_or_na(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def _print_results(res: dict[str, Any], cal) -> None:
    """The results table, seen and unseen accuracy, and the calibration on validation and test."""
    from ..engine.calibration import describe_band
    from .synthetic import FAMILY_KIND

    gens = res["summary"]["generators"]
    print("\n" + res["markdown"])
    print("\nseen family:   " + ", ".join(f"{g} acc {gens[g]['acc'] * 100:.1f}%" for g in SEEN if g in gens))
    unseen = [g for g in gens if g not in SEEN]
    print(
        "unseen:        "
        + ", ".join(f"{g} ({FAMILY_KIND.get(g, '?')}) acc {gens[g]['acc'] * 100:.1f}%" for g in unseen)
    )
    print(
        "(chance is 50%; the fakes are synthetic stand-ins made by this project, not real GANs or diffusion "
        "models, and the tiny model has random base weights: unseen-family numbers are whatever they are.)"
    )
    cs, vm = res["calibration"], cal.metrics
    print(
        f"calibration:   validation ECE {vm['ece_before'] * 100:.2f}% -> {vm['ece_after'] * 100:.2f}%, "
        f"band {describe_band(cal.band)}, coverage {vm['coverage'] * 100:.1f}%, selective accuracy "
        + _pct_or_na(vm["selective_accuracy"])
    )
    print(
        f"               test ECE {cs['raw']['ece'] * 100:.2f}% -> {cs['ece'] * 100:.2f}%, coverage "
        f"{cs['coverage'] * 100:.1f}%, selective accuracy "
        + _pct_or_na(cs["selective_accuracy"])
        + f" (accuracy on all {cs['accuracy'] * 100:.1f}%)"
    )
    for g in SEEN:
        if g in cs["generators"]:
            sg = cs["generators"][g]
            print(
                f"               seen family {g}: test ECE {sg['raw_ece'] * 100:.2f}% -> {sg['ece'] * 100:.2f}%, "
                f"coverage {sg['coverage'] * 100:.1f}%, selective accuracy " + _pct_or_na(sg["selective_accuracy"])
            )
    print(
        "(the calibration is fitted on the seen family only: unseen families shift the logits, so the pooled test "
        "set can be less calibrated than the validation split)"
    )


def _write_summary(out: Path, seconds: float, summary, res, cal, band, ct) -> None:
    from ..utils import atomic_write_json

    gens, cs = res["summary"]["generators"], res["calibration"]
    atomic_write_json(
        out / "demo_summary.json",
        {
            "seconds": seconds,
            "train": summary,
            "seen": list(SEEN),
            "acc": {g: gens[g]["acc"] for g in gens},
            "ap": {g: gens[g]["ap"] for g in gens},
            "calibration": {
                "validation": cal.metrics,
                "band": cal.band,
                "method": cal.method,
                "a": cal.a,
                "b": cal.b,
                "test": {k: cs[k] for k in ("ece", "brier", "nll", "coverage", "selective_accuracy", "accuracy")},
                "test_uncalibrated": {k: cs["raw"][k] for k in ("ece", "brier", "nll")},
            },
            "cascade": {"band": list(band), "validation": cal.cascade, "test": ct},
        },
    )
