"""Scoring images with a detector: per-generator evaluation, robustness sweeps and prediction.

Under DDP (torch.distributed initialised, e.g. by ``torchrun``) every rank scores a disjoint,
padding-free slice and the records are gathered, so each image is scored exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import ImageDataset, Sample, ShardedEvalSampler, collate, discover
from ..utils import atomic_write_text, check_output_dir, rank_world
from .calibration import DEFAULT_TAU, Calibration, apply_calibration, calibration_section
from .metrics import ScoreRecord, robustness_table, summarize
from .perturb import Perturbation, apply, parse_perturb_spec

log = logging.getLogger(__name__)


class PerturbedTransform:
    """Apply a robustness perturbation to the PIL image (seeded per image), then the eval transform."""

    def __init__(self, base: Callable, perturbation: Perturbation, seed: int = 0):
        self.base, self.perturbation, self.seed = base, perturbation, seed

    def __call__(self, img, rng):
        seed = int(rng.integers(0, 2**31 - 1)) ^ self.seed
        return self.base(apply(img, self.perturbation, seed=seed), rng)


@dataclass
class ScoredBatch:
    paths: list[str]
    generators: list[str]
    labels: list[int]
    out: dict[str, torch.Tensor]
    formats: list[str]
    decided_by: list[str] | None = None  # per image under --mode perceptual / cascade


def iter_scores(
    model,
    samples: Sequence[Sample],
    *,
    image_size: int | None,
    batch_size: int = 32,
    num_workers: int = 0,
    perturbation: Perturbation | None = None,
    progress: bool = True,
    desc: str = "scoring",
    errors: list | None = None,
    feature_lookup: Callable | None = None,
    mode: str = "full",
    cascade_band: tuple[float, float] | None = None,
) -> Iterable[ScoredBatch]:
    """Yield model outputs for this rank's slice of ``samples``; unreadable files go to ``errors``. ``mode``: full
    Eq. 10, the perceptual branch only, or the cascade (``cascade_band`` required; in-band images are regrouped
    into full batches across loader batches, so its ScoredBatches hold one image each, out of order)."""
    rank, world = rank_world()
    from ..model.detector import view_transform

    transform: Callable = view_transform(model.cfg, train=False, image_size=image_size)
    if perturbation is not None:
        transform = PerturbedTransform(transform, perturbation)
    ds = ImageDataset(samples, transform, seed=0)
    sampler = ShardedEvalSampler(len(ds), num_replicas=world, rank=rank)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)
    device = next(p for p in model.parameters()).device
    bar = tqdm(total=len(sampler), desc=desc, unit="img", disable=not progress or rank != 0, leave=False)
    if mode == "cascade":
        yield from _iter_cascade(model, loader, cascade_band, batch_size, device, errors, bar)
        bar.close()
        return
    for batch in loader:
        if errors is not None:
            errors.extend(batch["errors"])
        n = len(batch["label"])
        if n:
            images = batch["image"].to(device)
            # The cache's CachedBatch for this batch (on the model's device), or None: compute online.
            hit = feature_lookup(batch["path"]) if feature_lookup is not None else None
            out = model.predict(images, cached=hit) if mode == "full" else model.predict(images, mode=mode)
            yield ScoredBatch(
                batch["path"],
                batch["generator"],
                batch["label"].tolist(),
                {k: v.detach().float().cpu() for k, v in out.items()},
                batch["format"],
                [mode] * n if mode != "full" else None,
            )
        bar.update(n + len(batch["errors"]))
    bar.close()


def _iter_cascade(model, loader, band, batch_size: int, device, errors: list | None, bar) -> Iterable[ScoredBatch]:
    from .cascade import CascadeError, cascade_predict

    if band is None:
        raise CascadeError("mode cascade needs a fitted cascade band (synerdetect calibrate --cascade-agreement 0.99)")

    def batches():
        for batch in loader:
            if errors is not None:
                errors.extend(batch["errors"])
            bar.update(len(batch["label"]) + len(batch["errors"]))
            if len(batch["label"]):
                ids = list(zip(batch["path"], batch["generator"], batch["label"].tolist(), batch["format"]))
                yield batch["image"].to(device), ids

    for (path, gen, label, fmt), out, how in cascade_predict(model, batches(), band, batch_size=batch_size):
        yield ScoredBatch([path], [gen], [label], {k: torch.tensor([v]) for k, v in out.items()}, [fmt], [how])


def _gather(obj: list) -> list:
    rank, world = rank_world()
    if world == 1:
        return obj
    parts: list = [None] * world
    torch.distributed.all_gather_object(parts, obj)
    return [x for p in parts for x in p]


def score_samples(
    model,
    samples: Sequence[Sample],
    *,
    image_size: int | None,
    batch_size: int = 32,
    num_workers: int = 0,
    perturbation: Perturbation | None = None,
    progress: bool = True,
    desc: str = "scoring",
    feature_lookup: Callable | None = None,
    mode: str = "full",
    cascade_band: tuple[float, float] | None = None,
) -> tuple[list[ScoreRecord], list[tuple[str, str]]]:
    """Score labelled samples; returns (records, unreadable files). Gathered across ranks."""
    errors: list = []
    records: list[ScoreRecord] = []
    for sb in iter_scores(
        model,
        samples,
        image_size=image_size,
        batch_size=batch_size,
        num_workers=num_workers,
        perturbation=perturbation,
        progress=progress,
        desc=desc,
        errors=errors,
        feature_lookup=feature_lookup,
        mode=mode,
        cascade_band=cascade_band,
    ):
        for i, path in enumerate(sb.paths):
            records.append(
                ScoreRecord(
                    path=path,
                    generator=sb.generators[i],
                    label=sb.labels[i],
                    s_real=float(sb.out["s_real"][i]),
                    s_fake=float(sb.out["s_fake"][i]),
                    logit=float(sb.out["logit"][i]),
                    prob_fake=float(sb.out["prob_fake"][i]),
                    format=sb.formats[i],
                    decided_by=sb.decided_by[i] if sb.decided_by is not None else None,
                )
            )
    records = _gather(records)
    errors = _gather(errors)
    return records, errors


def load_labelled(
    data: str, layout: str = "auto", split: str | None = None, generators: list[str] | None = None
) -> list[Sample]:
    samples = [s for s in discover(data, layout=layout, split=split) if s.label in (0, 1)]
    if generators:
        wanted = set(generators)
        samples = [s for s in samples if s.generator in wanted]
    if not samples:
        raise ValueError(
            f"no labelled images found in {data} (layout={layout}, split={split}, generators={generators})"
        )
    return samples


#: The harmonization ``--harmonize`` suggests when the format or size warning fires.
DEFAULT_HARMONIZE = "jpeg:96"
HARMONIZE_SUGGESTION = (
    f"suggestion: re-run with `--harmonize {DEFAULT_HARMONIZE}` (evaluate(..., harmonize={DEFAULT_HARMONIZE!r})) to "
    "score every image, real and fake, re-encoded to JPEG quality 96 in memory and see the two results side by side"
)


def parse_harmonize_spec(spec: str) -> Perturbation:
    """``--harmonize jpeg:Q``: one deterministic JPEG re-encoding (quality Q in [30, 100]) applied to every image.

    Only JPEG is accepted: it is deterministic (no per-image seed) and it is what makes real and fake files share
    a format; crop and noise are random per image and blur does not touch the format.
    """
    text = str(spec).strip()
    kind, sep, _ = text.partition(":")
    if kind.strip().lower() != "jpeg" or not sep:
        raise ValueError(
            f"--harmonize {spec!r}: expected jpeg:QUALITY, e.g. {DEFAULT_HARMONIZE} (every image is "
            "re-encoded to JPEG at that quality in memory before scoring)"
        )
    levels = parse_perturb_spec(text)
    if len(levels) != 1:
        raise ValueError(f"--harmonize {spec!r}: give one JPEG quality, e.g. {DEFAULT_HARMONIZE}")
    return levels[0]


def header_size(path: str) -> tuple[int, int] | None:
    """``(width, height)`` from the file header (Pillow reads the header only, no decoding); None if unreadable.

    The data loader does not report sizes, so :func:`evaluate` reads them here, once per scored file, for the
    size-shortcut warning. The size is the stored one (before any EXIF rotation)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
        return int(w), int(h)
    except Exception:  # noqa: BLE001 - a size is optional: unknown disables the size warning
        return None


def finish_records(
    records: Sequence[ScoreRecord],
    *,
    tau: float,
    calibration: Calibration | None = None,
    sizes: dict[str, tuple[int, int] | None] | None = None,
    fmt: str | None = None,
) -> list[ScoreRecord]:
    """Records with what a user reads: ``prob_fake`` / ``verdict`` / ``calibrated`` from
    :func:`~synerdetect.engine.calibration.apply_calibration` (raw ``sigmoid(logit / tau)`` without a
    calibration), plus ``size`` from ``sizes`` (by path) and, when given, the format ``fmt``."""
    import numpy as np

    if not records:
        return []
    cal = apply_calibration(np.array([r.logit for r in records], dtype=np.float64), tau, calibration)
    out = []
    for i, r in enumerate(records):
        changes: dict[str, Any] = {
            "prob_fake": float(cal["prob_fake"][i]),
            "verdict": cal["verdict"][i],
            "calibrated": cal["calibrated"],
        }
        if sizes is not None:
            changes["size"] = sizes.get(r.path)
        if fmt is not None:
            changes["format"] = fmt
        out.append(replace(r, **changes))
    return out


def _model_tau(model) -> float:
    mcfg = getattr(model, "mcfg", None)
    return float(getattr(mcfg, "tau", DEFAULT_TAU))


def evaluate(
    model,
    samples: Sequence[Sample],
    out_dir: str | Path | None,
    *,
    image_size: int | None,
    batch_size: int = 32,
    num_workers: int = 0,
    perturb: Sequence[str] = (),
    progress: bool = True,
    extra: dict | None = None,
    title: str | None = None,
    feature_lookup: Callable | None = None,
    calibration: Calibration | None = None,
    harmonize: str | None = None,
    mode: str = "full",
) -> dict[str, Any]:
    """Per-generator evaluation (+ optional robustness sweep). Writes results on rank 0 when ``out_dir``.

    ``mode``: ``full`` (Eq. 10), ``perceptual`` (the CLIP branch only) or ``cascade`` (the band stored in
    ``calibration.cascade``; each image's logit is the one that decided it). Robustness and harmonized passes use
    the same mode.

    ``calibration``: the checkpoint's :class:`~synerdetect.engine.calibration.Calibration` (``Calibration.load``),
    applied to every record (``prob_fake`` calibrated, ``verdict`` with the uncertain band, ``calibrated``).
    results.json gets a ``calibration`` section either way (ECE, Brier, NLL, coverage and selective accuracy; on
    the raw probabilities with ``"calibrated": false`` without one) and ``reliability.png`` is drawn.

    ``harmonize``: e.g. ``"jpeg:96"`` (:func:`parse_harmonize_spec`): the images are scored a second time, each
    re-encoded in memory first; results.json gets ``harmonized`` (its summary, the spec and its calibration
    section), results.md both tables side by side, and ``scores_harmonized.jsonl`` its records.
    """
    from .report import (
        calibration_markdown,
        harmonized_markdown,
        markdown_table,
        plot_logit_distributions,
        plot_reliability,
        robustness_markdown,
        shortcut_markdown,
        write_results,
        write_scores_jsonl,
    )

    # 1. Check the request before the work: bad perturbation specs and unwritable outputs fail first.
    plan = [p for spec in perturb for p in parse_perturb_spec(spec)]
    harm = parse_harmonize_spec(harmonize) if harmonize else None
    if out_dir is not None and rank_world()[0] == 0:
        check_output_dir(out_dir, "--out")
    from .cascade import cascade_band_of

    band = cascade_band_of(calibration, mode)
    how: dict[str, Any] = {"mode": mode, "cascade_band": band}

    rank, _ = rank_world()
    tau = _model_tau(model)
    t0 = time.time()
    records, errors = score_samples(
        model,
        samples,
        image_size=image_size,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        desc="evaluate",
        feature_lookup=feature_lookup,
        **how,
    )
    if not records:
        raise RuntimeError(f"no image could be scored ({len(errors)} unreadable)")
    sizes = {r.path: header_size(r.path) for r in records}
    records = finish_records(records, tau=tau, calibration=calibration, sizes=sizes)
    summary = summarize(records)
    if mode != "full":  # which share of each generator's images took the inversion path
        for g, m in summary["generators"].items():
            took = [r.decided_by == "full" for r in records if r.generator == g]
            m["inverted_share"] = sum(took) / len(took) if took else None
        summary["inverted_share"] = sum(r.decided_by == "full" for r in records) / len(records)
    cal_section = calibration_section(records, tau=tau, calibration=calibration)
    shortcuts = list(summary["warnings"])  # format / size shortcut warnings, per generator
    suggestion = None
    if shortcuts and harm is None:
        suggestion = HARMONIZE_SUGGESTION
        summary["warnings"] = shortcuts + [suggestion]
        log.warning("%s", "; ".join(summary["warnings"]))
    result: dict[str, Any] = {
        "summary": summary,
        "records": records,
        "errors": errors,
        "calibration": cal_section,
        "seconds": time.time() - t0,
        "mode": mode,
    }
    harmonized = None
    if harm is not None:
        h_recs, h_errors = score_samples(
            model,
            samples,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            perturbation=harm,
            progress=progress,
            desc=f"harmonize {harm.name}",
            **how,
        )
        if not h_recs:
            raise RuntimeError(f"no image could be scored after --harmonize {harmonize} ({len(h_errors)} failed)")
        # Every image was re-encoded: the detector saw JPEG pixels whatever the file's format (sizes unchanged).
        h_recs = finish_records(h_recs, tau=tau, calibration=calibration, sizes=sizes, fmt="JPEG")
        harmonized = dict(summarize(h_recs))
        harmonized["harmonize"] = {
            "spec": str(harmonize),
            "name": harm.name,
            "kind": harm.kind,
            "level": harm.level,
            "applied_to": "every image, real and fake, in memory before the eval transform",
        }
        harmonized["calibration"] = calibration_section(h_recs, tau=tau, calibration=calibration)
        harmonized["unreadable"] = [{"path": p, "reason": r} for p, r in h_errors]
        result["harmonized"] = harmonized
        result["harmonized_records"] = h_recs
    robust = None
    if perturb:
        per: dict[str, dict[str, Any]] = {}
        for p in plan:
            recs, _ = score_samples(
                model,
                samples,
                image_size=image_size,
                batch_size=batch_size,
                num_workers=num_workers,
                perturbation=p,
                progress=progress,
                desc=f"perturb {p.name}",
                **how,
            )
            per.setdefault(p.kind, {})[p.level_label] = summarize(recs)
        robust = robustness_table(per, clean=summary)
        result["robustness"] = robust
    if out_dir is not None and rank == 0:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ex = dict(extra or {})
        ex["unreadable"] = [{"path": p, "reason": r} for p, r in errors]
        ex["calibration"] = cal_section
        if harmonized is not None:
            ex["harmonized"] = harmonized
            write_scores_jsonl(out / "scores_harmonized.jsonl", result["harmonized_records"])
        if robust is not None:
            ex["robustness"] = robust
        write_results(out, summary, records, extra=ex)
        plot_logit_distributions(records, out / "logit_distributions.png", title=title)
        plot_reliability(cal_section, out / "reliability.png", title=title)
        md = markdown_table(summary) + "\n" + calibration_markdown(cal_section)
        if mode != "full":
            shares = ", ".join(
                f"{g} {m['inverted_share'] * 100:.1f}%"
                for g, m in summary["generators"].items()
                if m.get("inverted_share") is not None
            )
            everyone = summary["inverted_share"] * 100
            md += f"\n\n**Mode {mode}**: share of images that took the inversion path: {shares} (all {everyone:.1f}%)\n"
        if harmonized is not None:
            md += "\n" + harmonized_markdown(summary, harmonized, harm.name if harm else str(harmonize))
        if shortcuts:
            md += "\n" + shortcut_markdown(shortcuts, suggestion)
        if robust is not None:
            md += "\n\n" + robustness_markdown(robust)
        atomic_write_text(out / "results.md", md + "\n")
        result["markdown"] = md
    return result


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (recursive) and globs -> sorted unique image paths, plus inputs that matched nothing."""
    import glob

    from ..data import LayoutError

    paths: list[str] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            # the data layer's folder scan: iterative (a 1200-level tree is fine), reports FIFOs and sockets
            try:
                found = sorted(s.path for s in discover(p, layout="folder"))
            except LayoutError:
                found = []
            if not found:
                missing.append((item, "folder holds no image files"))
            paths += found
        elif p.is_file():
            paths.append(str(p))  # an explicit file is tried even with an odd extension
        else:
            hits = sorted(h for h in glob.glob(item, recursive=True) if Path(h).is_file())
            if hits:
                paths += hits
            else:
                missing.append((item, "no such file, folder or glob match"))
    return list(dict.fromkeys(paths)), missing


def predict_paths(
    model,
    paths: Sequence[str],
    *,
    image_size: int | None,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    calibration=None,
    provenance: bool = False,
    trust_anchors=None,
    trust_metadata: bool = False,
    mode: str = "full",
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Score unlabelled files through :class:`~synerdetect.engine.scoring.Scorer`: one dict per scored image (its
    record with ``path`` for ``name``: label, verdict, prob_fake, calibrated, logit, s_real, s_fake, the branch
    similarities, sha256, provenance, timings) and ``(path, reason)`` per file that could not be scored. Under
    torch.distributed each rank scores its own slice and the results are gathered."""
    from .scoring import Scorer

    scorer = Scorer(
        model,
        image_size=image_size,
        batch_size=batch_size,
        calibration=calibration,
        provenance=provenance,
        trust_anchors=trust_anchors,
        trust_metadata=trust_metadata,
        mode=mode,
    )
    rows: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    for rec in scorer.score_paths(paths, num_workers=num_workers, progress=progress, shard=True, desc="predict"):
        if rec["error"] is not None:
            errors.append((rec["name"], rec["error"]))
            continue
        row = {"path": rec["name"]}
        row.update((k, v) for k, v in rec.items() if k not in ("name", "error", "error_kind"))
        rows.append(row)
    return _gather(rows), _gather(errors)
