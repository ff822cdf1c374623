"""Per-generator evaluation of a detector: the summary, calibration section, robustness sweeps, harmonized pass
and the files a user reads (results.json/.csv/.md, scores.jsonl, the figures).

The scoring loop itself is :mod:`synerdetect.engine.inference`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Sample
from ..data.imageio import open_image
from ..utils import atomic_write_text, check_output_dir, rank_world
from .calibration import DEFAULT_TAU, Calibration, apply_calibration, calibration_applies, calibration_section
from .cascade import cascade_band_of
from .guarantees import operating_markdown, operating_section, warn_scope
from .inference import score_samples
from .localisation import find_masks, measure_localisation, write_localisation
from .metrics import ScoreRecord, robustness_table, summarize
from .perturb import Chain, Perturbation, parse_perturb_spec
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
from .robustness import chain_section, chains_markdown

log = logging.getLogger(__name__)


#: The harmonization ``--harmonize`` suggests when the format or size warning fires.
DEFAULT_HARMONIZE = "jpeg:96"
HARMONIZE_SUGGESTION = (
    f"suggestion: re-run with `--harmonize {DEFAULT_HARMONIZE}` (evaluate(..., harmonize={DEFAULT_HARMONIZE!r})) to "
    "score every image, real and fake, re-encoded to JPEG quality 96 in memory and see the two results side by side"
)


def parse_harmonize_spec(spec: str) -> Perturbation:
    """``--harmonize jpeg:Q``: one deterministic JPEG re-encoding (quality Q in [1, 100]) applied to every image.

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
    if len(levels) != 1 or not isinstance(levels[0], Perturbation):
        raise ValueError(f"--harmonize {spec!r}: give one JPEG quality, e.g. {DEFAULT_HARMONIZE}")
    return levels[0]


def header_size(path: str) -> tuple[int, int] | None:
    """``(width, height)`` from the file header (Pillow reads the header only, no decoding); None if unreadable.

    The data loader does not report sizes, so :func:`evaluate` reads them here, once per scored file, for the
    size-shortcut warning. The size is the stored one (before any EXIF rotation)."""
    try:
        with open_image(path) as im:  # the loaders' formats only
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
    calibration, or for an image the perceptual branch decided: the rule of
    :func:`~synerdetect.engine.calibration.calibration_applies`, as in ``predict``), plus ``size`` from ``sizes``
    (by path) and, when given, the format ``fmt``."""
    if not records:
        return []
    x = np.array([r.logit for r in records], dtype=np.float64)
    fitted, raw = apply_calibration(x, tau, calibration), apply_calibration(x, tau, None)
    out = []
    for i, r in enumerate(records):
        cal = fitted if calibration_applies(r.decided_by) else raw
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
    applied to every record the full Eq. 10 decided (``prob_fake`` calibrated, ``verdict`` with the uncertain band,
    ``calibrated``; a perceptual decision keeps its raw probability and label, as in ``predict``). Its certificates
    are checked, and its promise stated, only for the mode and view it was fitted on (engine/guarantees.py).
    results.json gets a ``calibration`` section either way (ECE, Brier, NLL, coverage and selective accuracy; on
    the raw probabilities with ``"calibrated": false`` without one) and ``reliability.png`` is drawn.

    ``harmonize``: e.g. ``"jpeg:96"`` (:func:`parse_harmonize_spec`): the images are scored a second time, each
    re-encoded in memory first; results.json gets ``harmonized`` (its summary, the spec and its calibration
    section), results.md both tables side by side, and ``scores_harmonized.jsonl`` its records.
    """
    # 1. Check the request before the work: bad perturbation specs and unwritable outputs fail first.
    plan = [p for spec in perturb for p in parse_perturb_spec(spec)]
    harm = parse_harmonize_spec(harmonize) if harmonize else None
    if out_dir is not None and rank_world()[0] == 0:
        check_output_dir(out_dir, "--out")
    band = cascade_band_of(calibration, mode)
    view = getattr(getattr(getattr(model, "cfg", None), "data", None), "eval_view", None)
    warn_scope(calibration, mode=mode, view=view)  # once: another view or mode than the calibration's
    scoring: dict[str, Any] = dict(
        image_size=image_size, batch_size=batch_size, num_workers=num_workers, mode=mode, cascade_band=band
    )
    tau = _model_tau(model)
    t0 = time.time()

    # 2. The clean pass: calibrated records, the per-generator summary, the calibration section, shortcut warnings.
    records, errors = score_samples(
        model, samples, progress=progress, desc="evaluate", feature_lookup=feature_lookup, **scoring
    )
    if not records:
        raise RuntimeError(f"no image could be scored ({len(errors)} unreadable)")
    sizes = {r.path: header_size(r.path) for r in records}
    records = finish_records(records, tau=tau, calibration=calibration, sizes=sizes)
    summary = summarize(records)
    if mode != "full":
        _add_inverted_shares(summary, records)
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
        # TPR at FPR; the certificates checked on the test set when they cover this mode and view
        "operating_points": operating_section(records, calibration, mode=mode, view=view),
        "seconds": time.time() - t0,
        "mode": mode,
    }

    # 3. The harmonized pass: every image re-encoded in memory, scored again.
    if harm is not None:
        result["harmonized"], result["harmonized_records"] = _harmonized_pass(
            model,
            samples,
            harm,
            str(harmonize),
            tau=tau,
            calibration=calibration,
            sizes=sizes,
            progress=progress,
            **scoring,
        )

    # 4. The robustness sweep: one pass per perturbation level.
    if perturb:
        per: dict[str, dict[str, Any]] = {}
        chains: dict[str, tuple[str, list[ScoreRecord]]] = {}
        for p in plan:
            recs, _ = score_samples(
                model, samples, perturbation=p, progress=progress, desc=f"perturb {p.name}", **scoring
            )
            per.setdefault(p.kind, {})[p.level_label] = summarize(recs)
            if isinstance(p, Chain):  # verdicts too: how many fake verdicts the chain flips
                chains[p.level_label] = (p.spec, finish_records(recs, tau=tau, calibration=calibration))
        result["robustness"] = robustness_table(per, clean=summary)
        if chains:
            result["robustness"]["chains"] = chain_section(records, chains)

    # 5. The files a user reads, on rank 0.
    if out_dir is not None and rank_world()[0] == 0:
        harm_name = harm.name if harm else str(harmonize)
        result["markdown"] = _write_outputs(
            Path(out_dir), result, extra=extra, title=title, shortcuts=shortcuts, suggestion=suggestion, harm=harm_name
        )
    return result


def _add_inverted_shares(summary: dict[str, Any], records: Sequence[ScoreRecord]) -> None:
    """Which share of each generator's images took the inversion path (modes perceptual and cascade)."""
    for g, m in summary["generators"].items():
        took = [r.decided_by == "full" for r in records if r.generator == g]
        m["inverted_share"] = sum(took) / len(took) if took else None
    summary["inverted_share"] = sum(r.decided_by == "full" for r in records) / len(records)


def _harmonized_pass(
    model,
    samples: Sequence[Sample],
    harm: Perturbation,
    spec: str,
    *,
    tau: float,
    calibration: Calibration | None,
    sizes: dict[str, tuple[int, int] | None],
    progress: bool,
    **scoring: Any,
) -> tuple[dict[str, Any], list[ScoreRecord]]:
    """The ``harmonized`` section of results.json and its records: every image re-encoded by ``harm`` first."""
    h_recs, h_errors = score_samples(
        model, samples, perturbation=harm, progress=progress, desc=f"harmonize {harm.name}", **scoring
    )
    if not h_recs:
        raise RuntimeError(f"no image could be scored after --harmonize {spec} ({len(h_errors)} failed)")
    # Every image was re-encoded: the detector saw JPEG pixels whatever the file's format (sizes unchanged).
    h_recs = finish_records(h_recs, tau=tau, calibration=calibration, sizes=sizes, fmt="JPEG")
    harmonized = dict(summarize(h_recs))
    harmonized["harmonize"] = {
        "spec": spec,
        "name": harm.name,
        "kind": harm.kind,
        "level": harm.level,
        "applied_to": "every image, real and fake, in memory before the eval transform",
    }
    harmonized["calibration"] = calibration_section(h_recs, tau=tau, calibration=calibration)
    harmonized["unreadable"] = [{"path": p, "reason": r} for p, r in h_errors]
    return harmonized, h_recs


def _write_outputs(
    out: Path,
    result: dict[str, Any],
    *,
    extra: dict | None,
    title: str | None,
    shortcuts: list[str],
    suggestion: str | None,
    harm: str,
) -> str:
    """results.json / .csv / .md, scores.jsonl (and scores_harmonized.jsonl) and the two figures; returns the
    markdown of results.md."""
    summary, records, cal_section = result["summary"], result["records"], result["calibration"]
    harmonized, robust = result.get("harmonized"), result.get("robustness")
    out.mkdir(parents=True, exist_ok=True)
    ex = dict(extra or {})
    ex["unreadable"] = [{"path": p, "reason": r} for p, r in result["errors"]]
    ex["calibration"] = cal_section
    ex["operating_points"] = result["operating_points"]
    if harmonized is not None:
        ex["harmonized"] = harmonized
        write_scores_jsonl(out / "scores_harmonized.jsonl", result["harmonized_records"])
    if robust is not None:
        ex["robustness"] = robust
    write_results(out, summary, records, extra=ex)
    plot_logit_distributions(records, out / "logit_distributions.png", title=title)
    plot_reliability(cal_section, out / "reliability.png", title=title)
    md = markdown_table(summary) + "\n" + calibration_markdown(cal_section)
    md += "\n" + operating_markdown(result["operating_points"])
    if result["mode"] != "full":
        shares = ", ".join(
            f"{g} {m['inverted_share'] * 100:.1f}%"
            for g, m in summary["generators"].items()
            if m.get("inverted_share") is not None
        )
        everyone = summary["inverted_share"] * 100
        md += (
            f"\n\n**Mode {result['mode']}**: share of images that took the inversion path: {shares} "
            f"(all {everyone:.1f}%)\n"
        )
    if harmonized is not None:
        md += "\n" + harmonized_markdown(summary, harmonized, harm)
    if shortcuts:
        md += "\n" + shortcut_markdown(shortcuts, suggestion)
    if robust is not None:
        md += "\n\n" + robustness_markdown(robust)
        if robust.get("chains"):
            md += "\n" + chains_markdown(robust["chains"], summary["generators"])
    atomic_write_text(out / "results.md", md + "\n")
    return md


def test_set_from_config(
    data: str | None, layout: str, split: str | None, config: str | None
) -> tuple[str, str, str | None]:
    """``(data, layout, split)``: the given ``data``, else the test set the experiment YAML ``config`` names
    (``data.test`` with its layout and split). One-line ``ValueError`` when neither names a test set."""
    if data is not None:
        return data, layout, split
    if not config:
        raise ValueError("give --data PATH, or --config CONFIG.yaml whose data.test names the test set")
    from ..presets import load_experiment

    d = load_experiment(config).data
    if not d.test:
        raise ValueError(f"{config}: data.test is not set; pass --data PATH")
    return d.test, d.test_layout, d.test_split


def evaluate_from_config(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    config: str | None = None,
    layout: str = "auto",
    split: str | None = None,
    generators: Sequence[str] | None = None,
    device: Any = None,
    mode: str = "full",
    image_size: int | None = None,
    batch_size: int = 32,
    num_workers: int = 2,
    perturb: Sequence[str] = (),
    harmonize: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    model: Any = None,
    view: str | None = None,
    masks: str | Path | None = None,
) -> dict[str, Any]:
    """``synerdetect evaluate`` as a function: the checkpoint (with its ``calibration.json``) on ``data``, or on
    the ``data.test`` of the experiment YAML ``config``, results written into ``out``.

    Everything that can be refused is checked before the model loads: the test set, an ``out`` folder that lies
    inside ``data`` (the figures would land in a class folder and be read as images next time), an unwritable
    ``out``, the ``harmonize`` spec and a ``mode`` the calibration cannot serve. ``device``: a torch device or
    its name (default cuda when available); ``model``: an already loaded detector (then ``checkpoint`` supplies
    only the calibration and the record). Returns :func:`evaluate`'s result plus ``"data"`` and
    ``"feature_cache"`` (``{"dir", "key", "hits", "misses"}`` or None)."""
    import torch

    from ..data import load_labelled
    from ..utils import check_not_an_input

    data, layout, split = test_set_from_config(data, layout, split, config)
    if masks:
        find_masks(masks)  # a bad --masks folder is refused before the model loads
    check_not_an_input(out, [data], "--out")
    if rank_world()[0] == 0:
        check_output_dir(out, "--out")
    if harmonize:
        parse_harmonize_spec(harmonize)
    calibration = Calibration.load(checkpoint)  # None when the checkpoint has no calibration.json
    cascade_band_of(calibration, mode)
    if model is None:
        from ..methods import load_detector

        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = load_detector(checkpoint, **({"data.eval_view": view} if view else {}))
        model = model.to(dev).eval().enable_fast_path()
    size = image_size or model.cfg.data.image_size
    samples = load_labelled(data, layout, split, None if generators is None else list(generators))
    cf = None
    if cache_dir:
        from ..cache import CachedFeatures

        # The cache holds the same deterministic eval view, stored in float16 (logits within ~2e-5 of online).
        cf = CachedFeatures(cache_dir, model, size)
    mcfg = model.mcfg
    res = evaluate(
        model,
        samples,
        out,
        image_size=size,
        feature_lookup=cf.lookup if cf is not None else None,
        batch_size=batch_size,
        num_workers=num_workers,
        perturb=perturb or (),
        progress=progress,
        title=Path(data).name,
        calibration=calibration,
        harmonize=harmonize,
        mode=mode,
        extra={
            "checkpoint": str(checkpoint),
            "data": str(data),
            "layout": layout,
            "split": split,
            "inversion_steps": mcfg.inversion_steps,
            "sd_size": mcfg.sd_size,
            "clip_size": mcfg.clip_size,
            "inversion_size": mcfg.inversion_size or mcfg.sd_size,
            "image_size": size,
            "dtype": mcfg.dtype,
            "compile_unet": mcfg.compile_unet,
            "mode": mode,
            "view": model.cfg.data.eval_view,
            "feature_cache": None if cf is None else {"dir": str(cache_dir), "key": cf.key},
        },
    )
    if masks:  # --masks: the evidence maps against the masks (engine/localisation.py)
        loc = measure_localisation(model, samples, masks, batch_size=batch_size, progress=progress)
        res["localisation"] = write_localisation(out, loc) if rank_world()[0] == 0 else None
    res["data"] = str(data)
    res["feature_cache"] = (
        None if cf is None else {"dir": str(cache_dir), "key": cf.key, "hits": cf.hits, "misses": cf.misses}
    )
    return res
