"""``synerdetect predict``: score files, folders (recursive) and globs; a table on stdout, optionally JSON / CSV
(written by :mod:`synerdetect.engine.outputs`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import (
    add_command,
    add_file_outputs,
    add_loader_options,
    add_provenance_options,
    add_scoring_options,
    check_mode,
    image_size,
    load_model,
    printable,
)


def add_parser(sub: Any) -> None:
    pr = add_command(
        sub,
        "predict",
        help="score files, folders (recursive) and globs",
        example="predict photos/ 'more/*.jpg' --checkpoint runs/x/final --csv predictions.csv",
    )
    pr.add_argument("inputs", nargs="+", help="files, folders (recursive) and globs")
    add_scoring_options(pr)
    add_provenance_options(pr)
    add_file_outputs(pr, json_help="write predictions to this JSON file", csv_help="write predictions to this CSV file")
    pr.add_argument(
        "--maps",
        metavar="DIR",
        help="write an evidence map per image into DIR: NAME.map.png (overlay with a colour bar) and NAME.map.npz "
        "(float32 perceptual, generative, combined at native size); the record gets a 'map' field",
    )
    add_loader_options(pr, batch_size=16, workers=0)
    pr.set_defaults(func=cmd_predict)


def expand_and_check(inputs: list[str], outputs: dict[str, str | None]) -> list[str]:
    """The image paths of ``inputs`` (warnings for those that match nothing), after refusing any output file
    that is one of them or lies in an input folder: before any work, so nothing is written or read twice."""
    from ..engine.inputs import expand_inputs
    from ..utils import check_not_an_input, check_output_file

    for flag, path in outputs.items():
        check_output_file(path, flag)  # a bad output path must not cost a scoring run
    paths, missing = expand_inputs(inputs)
    for flag, path in outputs.items():
        check_not_an_input(path, [*inputs, *paths], flag)
    for item, why in missing:
        print(f"warning: {printable(item)}: {why}", file=sys.stderr)
    return paths


def cmd_predict(args: argparse.Namespace) -> int:
    from ..engine.calibration import Calibration
    from ..engine.outputs import write_predictions_csv, write_predictions_json
    from ..engine.scoring import predict_paths, provenance_summary
    from ..provenance import load_trust_anchors

    paths = expand_and_check(args.inputs, {"--json": args.json, "--csv": args.csv})
    if args.maps:
        from ..utils import check_not_an_input

        check_not_an_input(args.maps, [*args.inputs, *paths], "--maps")  # maps inside an input folder: refused
    anchors = load_trust_anchors(args.c2pa_trust_anchors)  # a bad PEM file: one line, before the model loads
    if not paths:
        print("error: no input files", file=sys.stderr)
        return 2
    calibration = Calibration.load(args.checkpoint)
    check_mode(args.mode, calibration)  # before the model loads
    model = load_model(args.checkpoint, args.device, args.view)
    rows, errors = predict_paths(
        model,
        paths,
        image_size=image_size(model, args.image_size),
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=not args.no_progress,
        calibration=calibration,
        provenance=not args.no_provenance,
        trust_anchors=anchors,
        trust_metadata=args.trust_metadata,
        mode=args.mode,
        maps=args.maps,
    )
    flat = [{**r, **provenance_summary(r.get("provenance"))} for r in rows]
    print_table(flat, mode=args.mode, provenance=not args.no_provenance)
    if errors:
        print(f"\n{len(errors)} file(s) could not be scored:", file=sys.stderr)
        for p, reason in errors:
            print(f"  {printable(p)}: {reason}", file=sys.stderr)
    if args.json:
        write_predictions_json(args.json, rows, errors, calibration.to_dict() if calibration else None)
    if args.csv:
        write_predictions_csv(args.csv, flat)
    if calibration is not None:
        print(
            f"prob_fake calibrated ({calibration.method}); verdict 'uncertain' for logits in {calibration.band}"
            + (f" and in (0, {calibration.fake_threshold():.6g}]" if calibration.max_fpr else "")
            + (" (images the full Eq. 10 decided; the others keep their label)" if args.mode != "full" else ""),
            file=sys.stderr,
        )
        from ..engine.guarantees import promise_for

        promise = promise_for(calibration, mode=args.mode, view=model.cfg.data.eval_view)
        print(f"promise: {promise}", file=sys.stderr)
    if args.maps:
        print(f"wrote {len(rows)} evidence map(s) (.map.png, .map.npz) to {printable(args.maps)}", file=sys.stderr)
    print(f"\nscored {len(rows)} of {len(paths)} file(s)", file=sys.stderr)
    return 0 if rows else 1


def print_table(flat: list[dict[str, Any]], *, mode: str, provenance: bool) -> None:
    """One line per scored file: path, label, verdict (and who decided), prob_fake, logit, provenance."""
    shown = [printable(r["path"]) for r in flat]
    verdicts = [
        r["verdict"]
        + (" (c2pa)" if r["verdict_source"] == "c2pa" else "")
        + (" (perceptual)" if mode == "cascade" and r.get("decided_by") == "perceptual" else "")
        for r in flat
    ]
    width = max([len(s) for s in shown] + [4])
    vw = max([len(v) for v in verdicts] + [9])
    print(f"{'path':<{width}}  label  {'verdict':<{vw}}  prob_fake    logit  provenance")
    for s, v, r in zip(shown, verdicts, flat):
        print(
            f"{s:<{width}}  {r['label']:<5}  {v:<{vw}}  {r['prob_fake']:9.4f}  {r['logit']:+.4f}  "
            f"{provenance_cell(r) if provenance else '-'}"
        )


def provenance_cell(r: dict[str, Any]) -> str:
    """One table cell: what the file declares (ai / capture), where, and the C2PA state; "-" when nothing."""
    parts = []
    if r.get("declared_ai") is not None:
        parts.append("ai" if r["declared_ai"] else "capture")
    if r.get("provenance_sources"):
        parts.append(f"({r['provenance_sources']})")
    if r.get("c2pa"):
        parts.append(f"c2pa: {r['c2pa']}")
    return printable(" ".join(parts)) if parts else "-"
