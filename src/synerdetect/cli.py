"""Command line: ``synerdetect {demo,train,evaluate,predict,inspect,data,cache,bench,presets}`` and more.

The command line only parses arguments and prints; the work is done by the library modules.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from pathlib import Path


def _quiet() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .model.backbones.loaders import quiet_libraries

    quiet_libraries()


def _load_model(checkpoint: str, device: str | None):
    from .model.detector import SynerDetect

    model = SynerDetect.from_pretrained(checkpoint)
    return model.to(_device(device)).eval().enable_fast_path()


def _device(requested: str | None):
    """The explicit device, else this process's own GPU under torchrun (cuda:LOCAL_RANK), else cuda or cpu."""
    import torch

    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: this machine has no usable CUDA device (use --device cpu)")
        return dev
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState(cpu=not torch.cuda.is_available()).device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _image_size(model, override: int | None) -> int | None:
    """The older single-view loader size: the override, else the checkpoint's data.image_size; None (the default)
    reads two views of each file at the model's own sizes."""

    return override or model.cfg.data.image_size


def _init_dist_if_launched() -> None:
    """Under torchrun / accelerate launch, join the process group (gloo on CPU, nccl on GPU)."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # joins torch.distributed from the launcher's env


# ----------------------------------------------------------------------------- commands
def cmd_presets(args) -> int:
    from .presets import ABLATIONS, get_preset, list_presets

    for name in list_presets():
        cfg = get_preset(name)
        print(
            f"{name}: clip={cfg.model.clip} sd={cfg.model.sd} clip_size={cfg.model.clip_size} "
            f"sd_size={cfg.model.sd_size} inversion_steps={cfg.model.inversion_steps} "
            f"optim={cfg.optim.name}@{cfg.optim.lr} batch={cfg.train.batch_size} epochs={cfg.train.epochs}"
        )
    print("ablations (Table 5):", ", ".join(sorted(ABLATIONS)))
    return 0


def cmd_train(args) -> int:
    from .engine.train import train
    from .methods import check_method
    from .presets import load_experiment, with_ablation
    from .utils import is_main_process

    overrides = list(args.overrides) + ([f"method={args.method}"] if args.method else [])
    cfg = load_experiment(args.config, overrides, preset=args.preset)
    if args.ablation:
        cfg = with_ablation(cfg, args.ablation)
    check_method(cfg.method)  # an unknown method fails before the data is read
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    if is_main_process():
        print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_evaluate(args) -> int:
    from .data import load_labelled
    from .engine.evaluate import evaluate
    from .utils import check_output_dir, rank_world

    _init_dist_if_launched()
    if args.data is None:
        if not args.config:
            raise ValueError("give --data PATH, or --config CONFIG.yaml whose data.test names the test set")
        from .presets import load_experiment

        d = load_experiment(args.config).data
        if not d.test:
            raise ValueError(f"{args.config}: data.test is not set; pass --data PATH")
        args.data, args.layout, args.split = d.test, d.test_layout, d.test_split
    if rank_world()[0] == 0:
        check_output_dir(args.out, "--out")
    from .engine.calibration import Calibration
    from .engine.evaluate import parse_harmonize_spec

    if args.harmonize:
        parse_harmonize_spec(args.harmonize)  # a bad spec fails before the model is loaded
    calibration = Calibration.load(args.checkpoint)  # None when the checkpoint has no calibration.json
    _check_mode(args.mode, calibration)
    model = _load_model(args.checkpoint, args.device)
    samples = load_labelled(args.data, args.layout, args.split, args.generators)
    cf = None
    if args.cache_dir:
        from .cache import CachedFeatures

        # The cache holds the same deterministic eval view, stored in float16 (logits within ~2e-5 of online).
        cf = CachedFeatures(args.cache_dir, model, _image_size(model, args.image_size))
    res = evaluate(
        model,
        samples,
        args.out,
        image_size=_image_size(model, args.image_size),
        feature_lookup=cf.lookup if cf is not None else None,
        batch_size=args.batch_size,
        num_workers=args.workers,
        perturb=args.perturb or (),
        progress=not args.no_progress,
        title=Path(args.data).name,
        calibration=calibration,
        harmonize=args.harmonize,
        mode=args.mode,
        extra={
            "checkpoint": str(args.checkpoint),
            "data": str(args.data),
            "layout": args.layout,
            "split": args.split,
            "inversion_steps": model.mcfg.inversion_steps,
            "sd_size": model.mcfg.sd_size,
            "clip_size": model.mcfg.clip_size,
            "inversion_size": model.mcfg.inversion_size or model.mcfg.sd_size,
            "image_size": _image_size(model, args.image_size),
            "dtype": model.mcfg.dtype,
            "compile_unet": model.mcfg.compile_unet,
            "mode": args.mode,
            "feature_cache": None if cf is None else {"dir": str(args.cache_dir), "key": cf.key},
        },
    )
    if cf is not None and rank_world()[0] == 0:
        print(f"feature cache {cf.key}: {cf.hits} batch hit(s), {cf.misses} miss(es) (misses were computed)")
    if rank_world()[0] == 0:
        print(res.get("markdown", ""))
        if res["errors"]:
            print(f"\n{len(res['errors'])} unreadable file(s) skipped:")
            for p, r in res["errors"]:
                print(f"  {p}: {r}")
        print(
            f"\nwrote {args.out}/results.json, results.csv, scores.jsonl, logit_distributions.png, reliability.png"
            + (", scores_harmonized.jsonl" if args.harmonize else "")
        )
    return 0


def cmd_predict(args) -> int:
    from .engine.calibration import Calibration
    from .engine.scoring import expand_inputs, predict_paths, provenance_summary
    from .provenance import load_trust_anchors
    from .utils import atomic_write_json, atomic_write_text, check_output_file

    check_output_file(args.json, "--json")  # before any work: a bad output path must not cost a scoring run
    check_output_file(args.csv, "--csv")
    anchors = load_trust_anchors(args.c2pa_trust_anchors)  # a bad PEM file: one line, before the model loads
    paths, missing = expand_inputs(args.inputs)
    for item, why in missing:
        print(f"warning: {_printable(item)}: {why}", file=sys.stderr)
    if not paths:
        print("error: no input files", file=sys.stderr)
        return 2
    calibration = Calibration.load(args.checkpoint)
    _check_mode(args.mode, calibration)  # before the model loads
    model = _load_model(args.checkpoint, args.device)
    rows, errors = predict_paths(
        model,
        paths,
        image_size=_image_size(model, args.image_size),
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=not args.no_progress,
        calibration=calibration,
        provenance=not args.no_provenance,
        trust_anchors=anchors,
        trust_metadata=args.trust_metadata,
        mode=args.mode,
    )
    flat = [{**r, **provenance_summary(r.get("provenance"))} for r in rows]
    shown = [_printable(r["path"]) for r in flat]
    verdicts = [
        r["verdict"]
        + (" (c2pa)" if r["verdict_source"] == "c2pa" else "")
        + (" (perceptual)" if args.mode == "cascade" and r.get("decided_by") == "perceptual" else "")
        for r in flat
    ]
    width = max([len(s) for s in shown] + [4])
    vw = max([len(v) for v in verdicts] + [9])
    print(f"{'path':<{width}}  label  {'verdict':<{vw}}  prob_fake    logit  provenance")
    for s, v, r in zip(shown, verdicts, flat):
        print(
            f"{s:<{width}}  {r['label']:<5}  {v:<{vw}}  {r['prob_fake']:9.4f}  {r['logit']:+.4f}  "
            f"{_provenance_cell(r) if not args.no_provenance else '-'}"
        )
    if errors:
        print(f"\n{len(errors)} file(s) could not be scored:", file=sys.stderr)
        for p, reason in errors:
            print(f"  {_printable(p)}: {reason}", file=sys.stderr)
    if args.json:
        atomic_write_json(
            args.json,
            {
                "predictions": rows,
                "errors": [{"path": p, "reason": r} for p, r in errors],
                "calibration": calibration.to_dict() if calibration else None,
            },
        )
    if args.csv:
        buf = io.StringIO()
        w = csv.DictWriter(
            buf,
            extrasaction="ignore",
            fieldnames=[
                "path",
                "label",
                "verdict",
                "verdict_source",
                "prob_fake",
                "calibrated",
                "logit",
                "s_real",
                "s_fake",
                "sim_v_real",
                "sim_v_fake",
                "sim_n_real",
                "sim_n_fake",
                "declared_ai",
                "c2pa",
                "provenance_sources",
                "sha256",
            ],
        )
        w.writeheader()
        w.writerows(flat)
        atomic_write_text(args.csv, buf.getvalue())
    if calibration is not None:
        print(
            f"prob_fake calibrated ({calibration.method}); verdict 'uncertain' for logits in {calibration.band}",
            file=sys.stderr,
        )
    print(f"\nscored {len(rows)} of {len(paths)} file(s)", file=sys.stderr)
    return 0 if rows else 1


def _provenance_cell(r: dict) -> str:
    """One table cell: what the file declares (ai / capture), where, and the C2PA state; "-" when nothing."""
    parts = []
    if r.get("declared_ai") is not None:
        parts.append("ai" if r["declared_ai"] else "capture")
    if r.get("provenance_sources"):
        parts.append(f"({r['provenance_sources']})")
    if r.get("c2pa"):
        parts.append(f"c2pa: {r['c2pa']}")
    return _printable(" ".join(parts)) if parts else "-"


def cmd_serve(args) -> int:
    """The HTTP service (FastAPI on uvicorn): parse, build the app from the library, run it. SIGTERM stops accepting
    connections, lets the requests in flight finish, then returns 0 (Ctrl-C: the same, then 130)."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn

    from .engine.scoring import Scorer
    from .serve import ServeSettings, create_app, read_api_keys
    from .serve.limits import check_bind

    check_bind(args.host, api_key_file=args.api_key_file, insecure_no_auth=args.insecure_no_auth)  # before loading
    limits = {"max_pixels": args.max_pixels} if args.max_pixels else {}  # default: the loader's cap
    settings = ServeSettings(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_inflight=args.max_inflight,
        max_files=args.max_files,
        max_file_bytes=int(args.max_file_mb * 1e6),
        max_request_bytes=int(args.max_request_mb * 1e6),
        request_timeout_s=args.timeout,
        api_keys=read_api_keys(args.api_key_file) if args.api_key_file else (),
        cors_origins=tuple(args.cors_origin or ()),
        **limits,
    )
    # The model is built on a short-lived thread, not on the main thread (which then runs the event loop only):
    # on CPU, OpenMP work done on the main thread made the forward passes on the batcher's worker thread about
    # twice as slow (0.48 s vs 0.22 s per batch of 16 on the demo checkpoint, 2 cores, 2026-11-28).
    with ThreadPoolExecutor(1, thread_name_prefix="synerdetect-load") as loader:
        scorer = loader.submit(
            Scorer.from_checkpoint,
            args.checkpoint,
            device=_device(args.device),
            image_size=args.image_size,
            batch_size=args.max_batch,
            provenance=not args.no_provenance,
            trust_anchors=args.c2pa_trust_anchors,
            trust_metadata=args.trust_metadata,
            max_pixels=settings.max_pixels,
            max_bytes=settings.max_file_bytes,
            mode=args.mode,
        ).result()
    config = uvicorn.Config(
        create_app(scorer, settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=int(args.timeout) + 5,  # in-flight requests finish (they time out by then)
    )
    server = uvicorn.Server(config)

    def stop(signum, frame) -> None:
        server.should_exit = True

    # uvicorn handles SIGTERM while serving and re-raises it after a graceful shutdown; this handler (restored by
    # uvicorn after serving) turns that re-raise, and a SIGTERM before serving starts, into a clean exit 0.
    signal.signal(signal.SIGTERM, stop)
    server.run()
    return 0


def _check_mode(mode: str, calibration) -> None:
    """Before the model loads: ``--mode cascade`` needs a fitted band (the library's own check)."""
    from .engine.cascade import cascade_band_of

    cascade_band_of(calibration, mode)


def _add_mode_arg(q) -> None:
    q.add_argument(
        "--mode",
        choices=["full", "perceptual", "cascade"],
        default="full",
        help="full: Eq. 10 (default); perceptual: the CLIP branch only (no inversion); cascade: the "
        "inversion only for images whose perceptual margin is inside the band fitted by "
        "`calibrate --cascade-agreement`",
    )


def cmd_inspect(args) -> int:
    """Provenance only (C2PA, XMP, PNG text, EXIF): no model is loaded."""
    from .engine.scoring import expand_inputs
    from .provenance import format_inspect_table, inspect_paths
    from .utils import atomic_write_json, check_output_file

    check_output_file(args.json, "--json")
    paths, missing = expand_inputs(args.inputs)
    for item, why in missing:
        print(f"warning: {_printable(item)}: {why}", file=sys.stderr)
    if not paths:
        print("error: no input files", file=sys.stderr)
        return 2
    records = inspect_paths(paths, trust_anchors=args.c2pa_trust_anchors)
    if args.json:
        atomic_write_json(args.json, {"provenance": records})
    else:
        print(format_inspect_table(records))
    return 0 if any(not r.get("error") for r in records) else 1


def cmd_data_check(args) -> int:
    from .data import check_dataset, format_check_report
    from .utils import atomic_write_json, check_output_file

    check_output_file(args.json, "--json")
    report = check_dataset(args.path, layout=args.layout, split=args.split)
    print(format_check_report(report))
    if args.json:
        atomic_write_json(args.json, report)
    return 0


def cmd_cache_build(args) -> int:
    from .cache import build_cache
    from .data import load_labelled
    from .model.detector import SynerDetect
    from .presets import load_experiment
    from .utils import check_output_dir, rank_world

    if not (args.checkpoint or args.config or args.preset):
        raise ValueError(
            "cache build: say which detector conditions the inversion: --checkpoint DIR (a trained "
            "detector) or --config CONFIG.yaml / --preset NAME (an untrained one)"
        )
    _init_dist_if_launched()
    cfg = load_experiment(args.config, args.overrides, preset=args.preset)
    root = args.cache_dir or cfg.cache.dir
    if not root:
        print("error: give --cache-dir or set cache.dir in the config", file=sys.stderr)
        return 2
    check_output_dir(root, "--cache-dir")
    model = SynerDetect.from_pretrained(args.checkpoint) if args.checkpoint else SynerDetect.from_config(cfg)
    model = model.to(_device(None)).eval().enable_fast_path()
    samples = load_labelled(args.data, args.layout, args.split)
    # The size the detector reads images at (the checkpoint's own when one is given), or keys never match.
    stats = build_cache(model, samples, root, image_size=model.cfg.data.image_size, batch_size=args.batch_size)
    if rank_world()[0] == 0:
        print(json.dumps(stats, indent=2, default=str))
    return 0


def cmd_bench(args) -> int:
    if args.serve:
        if not args.checkpoint:
            raise ValueError("bench --serve needs --checkpoint DIR (a save_pretrained folder)")
        from .serve.loadtest import run_serve_bench

        lines = run_serve_bench(
            args.checkpoint,
            clients=args.clients,
            requests=args.requests,
            bad_share=args.bad_share,
            device=args.device,
            max_batch=args.batch_size or 16,
            timeout_s=args.serve_timeout,
            out=args.out,
        )
        ok = lines[-1]
        return 0 if ok["all_answered"] and ok["no_5xx"] and ok["logits_match_offline"] else 1
    from .bench import run_bench, run_cascade_bench

    if args.cascade_checkpoint:
        if not (args.cascade_val and args.cascade_test):
            raise ValueError("bench --cascade-checkpoint needs --cascade-val VAL and --cascade-test TEST (labelled)")
        run_cascade_bench(
            args.cascade_checkpoint,
            args.cascade_val,
            args.cascade_test,
            steps=args.cascade_steps,
            device=args.device,
            batch_size=args.batch_size or 32,
            out=args.out,
        )
        return 0
    run_bench(args.preset, args.device, batch_size=args.batch_size, compile=args.compile, out=args.out)
    return 0


def cmd_calibrate(args) -> int:
    from .engine.calibrate import calibrate_checkpoint, check_not_test_set
    from .engine.calibration import CALIBRATION_NAME, format_calibration
    from .utils import rank_world

    _init_dist_if_launched()
    if args.data is None:
        if not args.config:
            raise ValueError(
                "give --data VAL (a labelled validation set), or --config CONFIG.yaml whose data.val names one"
            )
        from .presets import load_experiment

        d = load_experiment(args.config).data
        if not d.val:
            raise ValueError(f"{args.config}: data.val is not set; pass --data VAL")
        args.data, args.layout, args.split = d.val, d.val_layout, d.val_split
    check_not_test_set(args.data, args.split, args.config)  # before the model is loaded
    model = _load_model(args.checkpoint, args.device)
    cal = calibrate_checkpoint(
        args.checkpoint,
        args.data,
        layout=args.layout,
        split=args.split,
        target_accuracy=args.target_accuracy,
        method=args.method,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        protocol_config=args.config,
        min_per_class=args.min_per_class,
        generators=args.generators,
        num_workers=args.workers,
        image_size=_image_size(model, args.image_size),
        model=model,
        cascade_agreement=args.cascade_agreement,
    )
    if rank_world()[0] == 0:
        print(format_calibration(cal))
        if cal.cascade is not None and args.cascade_agreement is not None:
            c = cal.cascade
            print(
                f"cascade band [{c['band'][0]:+.4f}, {c['band'][1]:+.4f}] (perceptual margin): on this data "
                f"{c['share_inverted'] * 100:.1f}% of images need the inversion, agreement with full Eq. 10 "
                f"{c['agreement'] * 100:.1f}% (target {c['target_agreement'] * 100:.0f}%)"
            )
        print(f"\nwrote {Path(args.checkpoint) / CALIBRATION_NAME}")
    return 0


def cmd_demo(args) -> int:
    if args.methods:
        from .demo.compare import run_comparison
        from .methods import parse_methods

        run_comparison(args.out, parse_methods(args.methods), quick=args.quick, progress=not args.no_progress)
        return 0
    from .demo.run import run_demo

    return run_demo(args.out, quick=args.quick, progress=not args.no_progress)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synerdetect", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="offline end-to-end demo: build a small benchmark, train tiny, evaluate")
    d.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    d.add_argument("--quick", action="store_true", help="fewer images and steps (smoke test)")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument(
        "--methods",
        default=None,
        help="compare methods instead (paper Table 5a / Figure 3): train and evaluate each, e.g. "
        "synerdetect,unifd,dire or all; writes comparison.json, comparison.md and comparison_logits.png",
    )
    d.set_defaults(func=cmd_demo)

    sub.add_parser("presets", help="list presets and ablations").set_defaults(func=cmd_presets)

    t = sub.add_parser("train", help="train a detector (run under torchrun/accelerate launch for DDP)")
    t.add_argument("--config", help="experiment YAML (see configs/)")
    t.add_argument("--preset", help="preset if the YAML names none (default: paper)")
    t.add_argument("--ablation", help="a Table 5 ablation: no_cmid, no_ot_dcl, no_pot, fixed_prompts, ...")
    t.add_argument(
        "--method",
        default=None,
        help="detection method (the config's `method`, default synerdetect): synerdetect, or a reference of "
        "Table 5a: unifd, dire, inversion_probe, fusion_a, fusion_b, fusion_c",
    )
    t.add_argument("--resume", default="auto", help="auto | never | CHECKPOINT_DIR (default: auto)")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2 data.train=/data")
    t.set_defaults(func=cmd_train)

    def add_data_args(q, required=True):
        q.add_argument("--data", required=required, help="dataset root or manifest (CSV / JSON lines)")
        q.add_argument("--layout", default="auto", help="auto | cnndetection | genimage | chameleon | manifest")
        q.add_argument("--split", default=None, help="train | val | test (layout-dependent)")

    def add_scoring_args(q, *, batch_size: int, workers: int):
        q.add_argument("--batch-size", type=int, default=batch_size)
        q.add_argument("--workers", type=int, default=workers, help="data-loading processes")
        q.add_argument("--image-size", type=int, default=None, help="loader size (default: the checkpoint's)")
        q.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
        q.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("evaluate", help="per-generator accuracy / AP, figure, optional robustness sweep")
    e.add_argument("--checkpoint", required=True)
    add_data_args(e, required=False)
    e.add_argument("--config", help="take the test set from this experiment YAML (data.test) when --data is absent")
    e.add_argument("--out", required=True, help="output folder for results.json/csv, scores.jsonl, figure")
    e.add_argument("--generators", nargs="*", help="only these generators")
    e.add_argument(
        "--perturb",
        action="append",
        help="blur | jpeg | crop | noise, or e.g. jpeg:30,60,90 (repeatable): the paper's Table 4",
    )
    e.add_argument(
        "--cache-dir",
        help="read inverted latents from this feature cache when the key matches "
        "(build it with `synerdetect cache build --checkpoint ...`)",
    )
    _add_mode_arg(e)
    e.add_argument(
        "--harmonize",
        metavar="jpeg:Q",
        help="also score every image, real and fake, re-encoded to JPEG "
        "quality Q in memory (e.g. jpeg:96) and report both results side by side: a format-fair check",
    )
    add_scoring_args(e, batch_size=32, workers=2)
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser(
        "calibrate",
        help="fit calibrated probabilities and an uncertain band on a labelled "
        "validation set (never the test set); saves calibration.json in the checkpoint",
    )
    c.add_argument("--checkpoint", required=True)
    add_data_args(c, required=False)
    c.add_argument("--config", help="protocol YAML: --data defaults to its data.val, and its data.test is refused")
    c.add_argument(
        "--target-accuracy",
        type=float,
        default=0.95,
        help="accuracy wanted outside the uncertain band on the validation set (default: 0.95)",
    )
    c.add_argument(
        "--method",
        choices=["temperature", "platt"],
        default="temperature",
        help="temperature scaling (one scale; default) or Platt scaling (scale and offset)",
    )
    c.add_argument("--min-per-class", type=int, default=20, help="refuse with fewer images of a class (default: 20)")
    c.add_argument("--generators", nargs="*", help="only these generators")
    c.add_argument(
        "--cascade-agreement",
        type=float,
        default=None,
        metavar="SHARE",
        help="also fit the cascade band (--mode cascade): the narrowest band of perceptual margins for "
        "which the cascade agrees with full Eq. 10 on this share of the images, e.g. 0.99",
    )
    add_scoring_args(c, batch_size=32, workers=2)
    c.set_defaults(func=cmd_calibrate)

    pr = sub.add_parser("predict", help="score files, folders (recursive) and globs")
    pr.add_argument("inputs", nargs="+")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--json", help="write predictions to this JSON file")
    pr.add_argument("--csv", help="write predictions to this CSV file")
    pr.add_argument("--no-provenance", action="store_true", help="do not read C2PA / XMP / EXIF provenance")
    _add_mode_arg(pr)
    pr.add_argument(
        "--trust-metadata",
        action="store_true",
        help="let a valid C2PA manifest from a trusted signer "
        "decide the verdict (the scores stay the model's; the record says verdict_source: c2pa)",
    )
    pr.add_argument(
        "--c2pa-trust-anchors",
        help="PEM file of trusted C2PA root certificates (default: none, so no signer is trusted)",
    )
    add_scoring_args(pr, batch_size=16, workers=0)
    pr.set_defaults(func=cmd_predict)

    sv = sub.add_parser("serve", help="HTTP API + web page: POST /v1/detect, /healthz, /readyz, /v1/model, /metrics")
    sv.add_argument("--checkpoint", required=True)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-batch", type=int, default=16, help="most images per forward pass (default: 16)")
    _add_mode_arg(sv)
    sv.add_argument("--max-wait-ms", type=float, default=20.0, help="how long a batch waits to fill (default: 20)")
    sv.add_argument("--max-queue", type=int, default=64, help="images waiting for the model; beyond: 429")
    sv.add_argument("--max-inflight", type=int, default=64, help="detect requests handled at once; beyond: 429")
    sv.add_argument("--max-files", type=int, default=16, help="files per request (default: 16)")
    sv.add_argument("--max-file-mb", type=float, default=20.0, help="bytes per file, in MB (default: 20)")
    sv.add_argument("--max-request-mb", type=float, default=100.0, help="bytes per request body, in MB")
    sv.add_argument("--max-pixels", type=int, default=None, help="pixels per image (default: the loader's cap)")
    sv.add_argument("--timeout", type=float, default=60.0, help="seconds per detect request (default: 60)")
    sv.add_argument(
        "--api-key-file",
        help="require one of the keys in this file (one per line) as "
        "'Authorization: Bearer KEY' or 'X-API-Key' (health endpoints stay open)",
    )
    sv.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback --host without --api-key-file (e.g. behind a proxy that authenticates)",
    )
    sv.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="allow browser pages from ORIGIN (e.g. https://app.example.org) to call the API; repeatable "
        "(default: no CORS headers, same-origin only)",
    )
    sv.add_argument("--no-provenance", action="store_true", help="do not read C2PA / XMP / EXIF provenance")
    sv.add_argument(
        "--trust-metadata",
        action="store_true",
        help="let a valid C2PA manifest from a trusted signer decide the verdict",
    )
    sv.add_argument("--c2pa-trust-anchors", help="PEM file of trusted C2PA root certificates")
    sv.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    sv.add_argument("--image-size", type=int, default=None, help="loader size (default: the checkpoint's)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.set_defaults(func=cmd_serve)

    ins = sub.add_parser(
        "inspect", help="provenance evidence only (C2PA, IPTC/XMP, generator metadata, EXIF); no model is loaded"
    )
    ins.add_argument("inputs", nargs="+", help="files, folders (recursive) and globs")
    ins.add_argument("--json", help="write the records to this JSON file instead of printing the table")
    ins.add_argument(
        "--c2pa-trust-anchors",
        help="PEM file of trusted C2PA root certificates (default: none, so every signer is reported untrusted)",
    )
    ins.set_defaults(func=cmd_inspect)

    da = sub.add_parser("data", help="dataset tools")
    dsub = da.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="counts per generator x class x format; unreadable files with reasons")
    dc.add_argument("path")
    dc.add_argument("--layout", default="auto")
    dc.add_argument("--split", default=None)
    dc.add_argument("--json", help="also write the report as JSON")
    dc.set_defaults(func=cmd_data_check)

    ca = sub.add_parser("cache", help="feature cache (VAE + inverted latents)")
    csub = ca.add_subparsers(dest="cache_command", required=True)
    cb = csub.add_parser("build", help="precompute features (shard with torchrun / accelerate launch)")
    cb.add_argument("--config")
    cb.add_argument("--preset")
    cb.add_argument("--checkpoint", help="condition the inversion on this trained detector's prompt")
    add_data_args(cb)
    cb.add_argument("--cache-dir")
    cb.add_argument("--batch-size", type=int, default=16)
    cb.add_argument("overrides", nargs="*")
    cb.set_defaults(func=cmd_cache_build)

    b = sub.add_parser("bench", help="component costs, throughput and ratios as JSON lines")
    b.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--batch-size", type=int, default=None)
    b.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    b.add_argument("--out", help="also write the JSON lines to this file")
    b.add_argument(
        "--cascade-checkpoint",
        help="instead: measure the cascade of Eq. 10 on this trained checkpoint "
        "(fit on --cascade-val, time cascade vs full on --cascade-test)",
    )
    b.add_argument("--cascade-val", help="labelled validation set for the cascade band")
    b.add_argument("--cascade-test", help="labelled test set for the cascade measurement")
    b.add_argument("--cascade-steps", type=int, default=100, help="inversion steps for the cascade (default: 100)")
    b.add_argument(
        "--serve",
        action="store_true",
        help="instead: load-test `synerdetect serve` on 127.0.0.1 (latency, images/s vs offline predict, "
        "batching, bad uploads, memory, logits equal to predict)",
    )
    b.add_argument("--checkpoint", help="with --serve: the save_pretrained folder to serve")
    b.add_argument("--clients", type=int, default=32, help="with --serve: concurrent clients (default: 32)")
    b.add_argument("--requests", type=int, default=320, help="with --serve: requests in all (default: 320)")
    b.add_argument("--bad-share", type=float, default=0.1, help="with --serve: share of bad uploads (default: 0.1)")
    b.add_argument(
        "--serve-timeout", type=float, default=600.0, help="with --serve: overall time limit, seconds (default: 600)"
    )
    b.set_defaults(func=cmd_bench)
    return p


def _printable(path: str) -> str:
    """A path on one line: control characters (a newline in a file name) shown escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(path))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, accepting ``key=value`` overrides before or after the options."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:  # OutputError, a full disk, ...: one line, no traceback
        if os.environ.get("SYNERDETECT_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
