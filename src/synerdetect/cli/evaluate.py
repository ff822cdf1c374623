"""``synerdetect evaluate``: per-generator accuracy / AP, the figures and an optional robustness sweep; the work is
:func:`synerdetect.engine.evaluate.evaluate_from_config`."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    add_command,
    add_data_options,
    add_loader_options,
    add_out_dir,
    add_scoring_options,
    device,
    init_dist_if_launched,
    printable,
    rank,
)


def add_parser(sub: Any) -> None:
    e = add_command(
        sub,
        "evaluate",
        help="per-generator accuracy / AP, figure, optional robustness sweep",
        example="evaluate --checkpoint runs/x/final --data /data/GenImage --split val --out eval/genimage",
    )
    add_scoring_options(e)
    add_data_options(e, required=False)
    e.add_argument("--config", help="take the test set from this experiment YAML (data.test) when --data is absent")
    add_out_dir(e, help="output folder for results.json/csv, scores.jsonl, figures (not inside --data)")
    e.add_argument("--generators", nargs="*", help="only these generators")
    e.add_argument(
        "--perturb",
        action="append",
        help="blur | jpeg | crop | noise (Table 4 protocol ladders) | resize | fit | webp, or levels e.g. "
        "jpeg:30,60,90, or kind:legacy (the earlier ladders), a chain e.g. resize:0.5+jpeg:85, a named chain ("
        "instagram, facebook, x, whatsapp, phone-share: approximations), or a set: table4, legacy, platforms "
        "(repeatable)",
    )
    e.add_argument(
        "--cache-dir",
        help="read inverted latents from this feature cache when the key matches "
        "(build it with `synerdetect cache build --checkpoint ...`)",
    )
    e.add_argument(
        "--harmonize",
        metavar="jpeg:Q",
        help="also score every image, real and fake, re-encoded to JPEG "
        "quality Q in memory (e.g. jpeg:96) and report both results side by side: a format-fair check",
    )
    e.add_argument(
        "--masks",
        metavar="DIR",
        help="masks of partly generated images (one per image, matched by file stem; non-zero = generated): "
        "report the evidence maps' pixel-AUC and IoU per generator (results.md, localisation_examples.png)",
    )
    add_loader_options(e, batch_size=32, workers=2)
    e.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate_from_config

    init_dist_if_launched()
    res = evaluate_from_config(
        args.checkpoint,
        args.out,
        data=args.data,
        config=args.config,
        layout=args.layout,
        split=args.split,
        generators=args.generators,
        device=device(args.device),  # under torchrun: this rank's own GPU
        mode=args.mode,
        view=args.view,
        masks=args.masks,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        perturb=args.perturb or (),
        harmonize=args.harmonize,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    if rank() != 0:
        return 0
    cf = res.get("feature_cache")
    if cf is not None:
        print(f"feature cache {cf['key']}: {cf['hits']} batch hit(s), {cf['misses']} miss(es) (misses were computed)")
    print(res.get("markdown", ""))
    if res.get("localisation"):
        from ..engine.localisation import localisation_markdown

        print("\n" + localisation_markdown(res["localisation"], None))
    if res["errors"]:
        print(f"\n{len(res['errors'])} unreadable file(s) skipped:")
        for p, r in res["errors"]:
            print(f"  {printable(p)}: {r}")
    print(
        f"\nwrote {args.out}/results.json, results.csv, scores.jsonl, logit_distributions.png, reliability.png"
        + (", scores_harmonized.jsonl" if args.harmonize else "")
        + (", localisation_examples.png" if res.get("localisation") else "")
    )
    return 0
