"""The scoring loop under every labelled pass: evaluation, calibration, the cascade's fit and its measurement.

:func:`iter_scores` batches labelled samples through the detector (full Eq. 10, the perceptual branch, or the
cascade), :func:`score_samples` turns them into :class:`~synerdetect.engine.metrics.ScoreRecord` rows. Under DDP
(torch.distributed initialised, e.g. by ``torchrun``) every rank scores a disjoint, padding-free slice and the
records are gathered, so each image is scored exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import ImageDataset, Sample, ShardedEvalSampler, collate
from ..model.detector import view_transform
from ..utils import rank_world
from .cascade import CascadeError, cascade_predict
from .metrics import ScoreRecord
from .perturb import Chain, Perturbation, apply


class PerturbedTransform:
    """Apply a robustness perturbation to the PIL image (seeded per image), then the eval transform."""

    def __init__(self, base: Callable, perturbation: Perturbation | Chain, seed: int = 0):
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
    perturbation: Perturbation | Chain | None = None,
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


def gather(obj: list) -> list:
    """``obj`` from every rank, concatenated in rank order (``obj`` itself outside torch.distributed)."""
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
    perturbation: Perturbation | Chain | None = None,
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
    records = gather(records)
    errors = gather(errors)
    return records, errors


def timed_scores(
    model, samples, *, image_size: int | None, batch_size: int, mode: str, band=None
) -> tuple[list, float]:
    """The records of one pass of :func:`score_samples` in ``mode`` and its wall time (data loading included)."""
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    records, _ = score_samples(
        model, samples, image_size=image_size, batch_size=batch_size, progress=False, mode=mode, cascade_band=band
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if not records:
        raise CascadeError("no readable image to measure the cascade on")
    return records, time.perf_counter() - t0


def both_branches(
    model, samples, *, image_size: int | None, batch_size: int, full_records: list | None = None
) -> dict[str, np.ndarray]:
    """Perceptual margin and full Eq. 10 logit of every readable sample, with its label (to fit or study a band).
    ``full_records``: the full pass's records when the caller already has them (it is not run again)."""
    if full_records is None:
        full_records, _ = timed_scores(model, samples, image_size=image_size, batch_size=batch_size, mode="full")
    per, _ = timed_scores(model, samples, image_size=image_size, batch_size=batch_size, mode="perceptual")
    margin = {(r.path, r.generator): r.logit for r in per}
    return {
        "margin": np.array([margin[(r.path, r.generator)] for r in full_records], dtype=np.float64),
        "full": np.array([r.logit for r in full_records], dtype=np.float64),
        "label": np.array([r.label for r in full_records], dtype=int),
    }
