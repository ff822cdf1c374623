"""Scoring images with a detector: per-generator evaluation, robustness sweeps and prediction.

Under DDP (torch.distributed initialised, e.g. by ``torchrun``) every rank scores a disjoint,
padding-free slice and the records are gathered, so each image is scored exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import EvalTransform, ImageDataset, Sample, ShardedEvalSampler, collate, discover
from ..utils import atomic_write_text, check_output_dir, rank_world
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


def iter_scores(model, samples: Sequence[Sample], *, image_size: int, batch_size: int = 32, num_workers: int = 0,
                perturbation: Perturbation | None = None, progress: bool = True, desc: str = "scoring",
                errors: list | None = None, feature_lookup: Callable | None = None) -> Iterable[ScoredBatch]:
    """Yield model outputs for this rank's slice of ``samples``; unreadable files go to ``errors``."""
    rank, world = rank_world()
    transform: Callable = EvalTransform(image_size)
    if perturbation is not None:
        transform = PerturbedTransform(transform, perturbation)
    ds = ImageDataset(samples, transform, seed=0)
    sampler = ShardedEvalSampler(len(ds), num_replicas=world, rank=rank)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)
    device = next(p for p in model.parameters()).device
    bar = tqdm(total=len(sampler), desc=desc, unit="img", disable=not progress or rank != 0, leave=False)
    for batch in loader:
        if errors is not None:
            errors.extend(batch["errors"])
        n = len(batch["label"])
        if n:
            images = batch["image"].to(device)
            # The cache's CachedBatch for this batch (on the model's device), or None: compute online.
            hit = feature_lookup(batch["path"]) if feature_lookup is not None else None
            out = model.predict(images, cached=hit)
            yield ScoredBatch(batch["path"], batch["generator"], batch["label"].tolist(),
                              {k: v.detach().float().cpu() for k, v in out.items()}, batch["format"])
        bar.update(n + len(batch["errors"]))
    bar.close()


def _gather(obj: list) -> list:
    rank, world = rank_world()
    if world == 1:
        return obj
    parts: list = [None] * world
    torch.distributed.all_gather_object(parts, obj)
    return [x for p in parts for x in p]


def score_samples(model, samples: Sequence[Sample], *, image_size: int, batch_size: int = 32,
                  num_workers: int = 0, perturbation: Perturbation | None = None, progress: bool = True,
                  desc: str = "scoring", feature_lookup: Callable | None = None
                  ) -> tuple[list[ScoreRecord], list[tuple[str, str]]]:
    """Score labelled samples; returns (records, unreadable files). Gathered across ranks."""
    errors: list = []
    records: list[ScoreRecord] = []
    for sb in iter_scores(model, samples, image_size=image_size, batch_size=batch_size, num_workers=num_workers,
                          perturbation=perturbation, progress=progress, desc=desc, errors=errors,
                          feature_lookup=feature_lookup):
        for i, path in enumerate(sb.paths):
            records.append(ScoreRecord(path=path, generator=sb.generators[i], label=sb.labels[i],
                                       s_real=float(sb.out["s_real"][i]), s_fake=float(sb.out["s_fake"][i]),
                                       logit=float(sb.out["logit"][i]), prob_fake=float(sb.out["prob_fake"][i]),
                                       format=sb.formats[i]))
    records = _gather(records)
    errors = _gather(errors)
    return records, errors


def load_labelled(data: str, layout: str = "auto", split: str | None = None,
                  generators: list[str] | None = None) -> list[Sample]:
    samples = [s for s in discover(data, layout=layout, split=split) if s.label in (0, 1)]
    if generators:
        wanted = set(generators)
        samples = [s for s in samples if s.generator in wanted]
    if not samples:
        raise ValueError(f"no labelled images found in {data} (layout={layout}, split={split}, "
                         f"generators={generators})")
    return samples


def evaluate(model, samples: Sequence[Sample], out_dir: str | Path | None, *, image_size: int,
             batch_size: int = 32, num_workers: int = 0, perturb: Sequence[str] = (), progress: bool = True,
             extra: dict | None = None, title: str | None = None, feature_lookup: Callable | None = None
             ) -> dict[str, Any]:
    """Per-generator evaluation (+ optional robustness sweep). Writes results on rank 0 when ``out_dir``."""
    from .report import markdown_table, plot_logit_distributions, robustness_markdown, write_results

    # 1. Check the request before the work: bad perturbation specs and unwritable outputs fail first.
    plan = [p for spec in perturb for p in parse_perturb_spec(spec)]
    if out_dir is not None and rank_world()[0] == 0:
        check_output_dir(out_dir, "--out")

    rank, _ = rank_world()
    t0 = time.time()
    records, errors = score_samples(model, samples, image_size=image_size, batch_size=batch_size,
                                    num_workers=num_workers, progress=progress, desc="evaluate",
                                    feature_lookup=feature_lookup)
    if not records:
        raise RuntimeError(f"no image could be scored ({len(errors)} unreadable)")
    summary = summarize(records)
    result: dict[str, Any] = {"summary": summary, "records": records, "errors": errors,
                              "seconds": time.time() - t0}
    robust = None
    if perturb:
        per: dict[str, dict[str, Any]] = {}
        for p in plan:
            recs, _ = score_samples(model, samples, image_size=image_size, batch_size=batch_size,
                                    num_workers=num_workers, perturbation=p, progress=progress,
                                    desc=f"perturb {p.name}")
            per.setdefault(p.kind, {})[p.level_label] = summarize(recs)
        robust = robustness_table(per, clean=summary)
        result["robustness"] = robust
    if out_dir is not None and rank == 0:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ex = dict(extra or {})
        ex["unreadable"] = [{"path": p, "reason": r} for p, r in errors]
        if robust is not None:
            ex["robustness"] = robust
        write_results(out, summary, records, extra=ex)
        plot_logit_distributions(records, out / "logit_distributions.png", title=title)
        md = markdown_table(summary)
        if robust is not None:
            md += "\n\n" + robustness_markdown(robust)
        atomic_write_text(out / "results.md", md + "\n")
        result["markdown"] = md
    return result


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (recursive) and globs -> sorted unique image paths, plus inputs that matched nothing."""
    import glob

    from ..data import is_image_file

    paths: list[str] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and is_image_file(f)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
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


def predict_paths(model, paths: Sequence[str], *, image_size: int, batch_size: int = 16, num_workers: int = 0,
                  progress: bool = True) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Score unlabelled files: one dict per image (path, label, prob_fake, logit, s_real, s_fake)."""
    samples = [Sample(path=p, label=-1, generator="", split=None) for p in paths]
    errors: list = []
    rows = []
    for sb in iter_scores(model, samples, image_size=image_size, batch_size=batch_size, num_workers=num_workers,
                          progress=progress, desc="predict", errors=errors):
        for i, path in enumerate(sb.paths):
            rows.append({"path": path, "label": "fake" if int(sb.out["label"][i]) == 1 else "real",
                         "prob_fake": float(sb.out["prob_fake"][i]), "logit": float(sb.out["logit"][i]),
                         "s_real": float(sb.out["s_real"][i]), "s_fake": float(sb.out["s_fake"][i])})
    return _gather(rows), _gather(errors)
