"""Calibrate a checkpoint: score a labelled validation set, fit a :class:`~synerdetect.engine.calibration.Calibration`
(and, on request, the cascade band) and store it as ``calibration.json`` beside the weights.

The mathematics of the fit is :mod:`synerdetect.engine.calibration`; this module is the workflow around it (the
test-set guard, loading, scoring, saving).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import load_labelled
from ..methods import load_detector
from ..presets import load_experiment
from ..utils import check_output_dir, rank_world
from .calibration import (
    CALIBRATION_METHODS,
    DEFAULT_MIN_PER_CLASS,
    DEFAULT_TARGET_ACCURACY,
    Calibration,
    CalibrationError,
    check_fit_inputs,
    fit_calibration,
)
from .cascade import fit_cascade_band
from .guarantees import attach_guarantee, attach_max_fpr, fpr_threshold, reals_needed
from .inference import both_branches, score_samples

log = logging.getLogger(__name__)


def _same_or_nested(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_not_test_set(data: str | Path, split: str | None, protocol_config: Any) -> None:
    """Refuse to calibrate on the test set of a protocol config (a path to the YAML or an ExperimentConfig).

    Refused when ``data`` and the config's ``data.test`` resolve to the same folder/file, or one contains the
    other, unless both name a split and the splits differ (one root holding ``val/`` and ``test/``).
    """
    if protocol_config is None:
        return
    if isinstance(protocol_config, (str, Path)):
        where = str(protocol_config)
        cfg = load_experiment(protocol_config)
    else:
        where, cfg = "the protocol config", protocol_config
    test = getattr(cfg.data, "test", None)
    if not test:
        return
    d, t = Path(data).resolve(), Path(test).resolve()
    test_split = getattr(cfg.data, "test_split", None)
    if _same_or_nested(d, t) and not (split and test_split and split != test_split):
        same = "is" if d == t else ("contains" if d in t.parents else "is inside")
        raise CalibrationError(
            f"refusing to calibrate on the test set: {data} {same} data.test of {where} ({test}"
            + (f", split {test_split}" if test_split else "")
            + "); fit the calibration on a validation set "
            "(e.g. data.val) so that the test numbers stay honest"
        )


def calibrate_checkpoint(
    checkpoint_dir: str | Path,
    data: str | Path,
    *,
    layout: str = "auto",
    split: str | None = None,
    target_accuracy: float = DEFAULT_TARGET_ACCURACY,
    method: str = "temperature",
    batch_size: int = 32,
    progress: bool = True,
    protocol_config: Any = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    generators: list[str] | None = None,
    num_workers: int = 0,
    image_size: int | None = None,
    device: str | None = None,
    model: Any = None,
    save: bool = True,
    cascade_agreement: float | None = None,
    guarantee: bool = False,
    max_fpr: float | None = None,
    delta: float = 0.05,
) -> Calibration:
    """Score the labelled validation ``data`` with the checkpoint, fit a :class:`Calibration`, save it as
    ``calibration.json`` in ``checkpoint_dir`` (keeping a fitted cascade already stored there) and return it.

    ``model``: an already loaded detector of this checkpoint (skips loading it again); otherwise it is loaded
    with ``load_detector`` onto ``device`` (default: cuda when available). Refuses the test set of
    ``protocol_config`` (:func:`check_not_test_set`) and too little data (:func:`fit_calibration`) before or
    right after scoring, and checks that the checkpoint folder is writable before any work.

    ``cascade_agreement`` (e.g. 0.99) also fits the cascade band on the same data (engine/cascade.py: the
    narrowest band of perceptual margins for which the cascade agrees with full Eq. 10 on that share of images).

    ``guarantee``: the uncertain band is certified by Learn-then-Test instead (accuracy outside it at least
    ``target_accuracy`` with probability ``1 - delta``); ``max_fpr`` (e.g. 0.01): ``verdict: fake`` also needs the
    logit above a threshold certified to flag at most that share of reals, with confidence ``1 - delta``
    (engine/guarantees.py; both refuse with a one-line error when the data cannot certify them).
    """
    if method not in CALIBRATION_METHODS:
        raise CalibrationError(
            f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    check_not_test_set(data, split, protocol_config)
    ckpt = Path(checkpoint_dir)
    if not ckpt.is_dir():
        raise CalibrationError(f"checkpoint {ckpt}: not a folder")
    if save and rank_world()[0] == 0:
        check_output_dir(ckpt, "--checkpoint")
    previous = None
    try:
        previous = Calibration.load(ckpt)
    except CalibrationError as e:
        log.warning("replacing an unreadable calibration: %s", e)
    samples = load_labelled(str(data), layout, split, generators)
    n_real = sum(1 for s in samples if s.label == 0)
    n_fake = len(samples) - n_real
    if min(n_real, n_fake) < min_per_class:  # refuse before scoring; re-checked on what could be read
        check_fit_inputs(np.zeros(len(samples)), [s.label for s in samples], method, target_accuracy, min_per_class)
    if max_fpr is not None and n_real < reals_needed(max_fpr, delta):  # refuse before scoring
        fpr_threshold(np.full(n_real, -1.0), target_fpr=max_fpr, delta=delta)
    if model is None:
        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = load_detector(ckpt).to(dev).eval().enable_fast_path()
    size = image_size or model.cfg.data.image_size
    records, errors = score_samples(
        model,
        samples,
        image_size=size,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        desc="calibrate",
    )
    if not records:
        raise CalibrationError(f"no image of {data} could be scored ({len(errors)} unreadable)")
    logits = np.array([r.logit for r in records], dtype=np.float64)
    labels = np.array([r.label for r in records], dtype=int)
    cal = fit_calibration(
        logits,
        labels,
        method=method,
        target_accuracy=target_accuracy,
        min_per_class=min_per_class,
        tau=float(model.mcfg.tau),
    )
    if guarantee:
        attach_guarantee(cal, logits, labels, target=target_accuracy, delta=delta)
    if max_fpr is not None:
        attach_max_fpr(cal, logits, labels, target_fpr=max_fpr, delta=delta)
    cal.fitted_on = {
        "data": str(Path(data).resolve()),
        "layout": layout,
        "split": split,
        "generators": sorted({r.generator for r in records}),
        "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()),
        "n_unreadable": len(errors),
        "image_size": int(size) if size else None,
        # what the logits were scored with: the certificates hold for this mode and view only (guarantees.py)
        "mode": "full",
        "view": str(model.cfg.data.eval_view),
        "protocol_config": str(protocol_config) if isinstance(protocol_config, (str, Path)) else None,
    }
    if cascade_agreement is not None:
        # the full logits were just computed for the calibration: only the perceptual pass runs again
        branches = both_branches(model, samples, image_size=size, batch_size=batch_size, full_records=records)
        fitted = fit_cascade_band(branches["margin"], branches["full"], target_agreement=cascade_agreement)
        cal.cascade = {**fitted, "fitted_on": cal.fitted_on["data"]}
    elif previous is not None and previous.cascade is not None:
        cal.cascade = previous.cascade
    if save and rank_world()[0] == 0:
        cal.save(ckpt)
    return cal
