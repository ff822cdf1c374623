"""``synerdetect adapt``: teach a trained detector a new generator from a few dozen images, without retraining.

The update trains what the preset trains (the LoRA on E_v / E_d, the prompts and the tuner; every other weight is
the parent's, byte for byte) with :func:`synerdetect.engine.train.train`'s loop, so it is resumable like training.
A replay memory of earlier training images is mixed into every batch at a stated ratio (engine/replay.py), early
stopping watches a validation split drawn from the new data, and the calibration (with its band) is refitted on a
validation set holding both the old families and the new one. The output is a normal checkpoint folder with
``lineage.json`` (parent hash, data hashes and counts, steps, before/after table); ``adapt.md`` / ``adapt.json``
report accuracy and AP before and after per family, the forgetting on old families and the cost.

:func:`adapt` reads top to bottom: the request and its data, the run (the training loop), the checkpoint, the
calibration, the report.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import merge
from ..data import Sample, load_labelled
from ..hub import hub_ref, resolve_checkpoint
from ..utils import atomic_write_json, atomic_write_text, check_not_an_input, check_output_dir
from .calibrate import calibrate_checkpoint
from .calibration import Calibration, CalibrationError
from .evaluate import evaluate
from .guarantees import DEFAULT_DELTA, GuaranteeError, fpr_threshold
from .lineage import LINEAGE_NAME, WEIGHTS_NAME, build_lineage, family_rows
from .replay import ReplayBatchSampler, ReplayError, pick_balanced, read_replay_memory, replay_split
from .train import train

log = logging.getLogger(__name__)

#: Defaults measured on the demo (docs/method.md, "Adapting to a new generator").
DEFAULT_STEPS = 20
DEFAULT_LR = 3e-3
DEFAULT_REPLAY_RATIO = 0.5
DEFAULT_REPLAY_SIZE = 128  # images taken from --replay OLD_DATA (half real, half fake)
VAL_FRACTION = 0.25  # of NEW per class, for early stopping
MIN_VAL_PER_CLASS = 4
MIN_TRAIN_PER_CLASS = 4
PATIENCE = 3  # validations without improvement before stopping

STAMP = ".synerdetect-adapt"


class AdaptError(ValueError):
    """An adaptation request that cannot run (too few images, no replay memory, a foreign output folder)."""


@dataclass
class AdaptOptions:
    shots: int | None = None  # fakes (and as many reals) taken from NEW; None: all
    steps: int = DEFAULT_STEPS
    lr: float = DEFAULT_LR
    replay_ratio: float = DEFAULT_REPLAY_RATIO
    replay_size: int = DEFAULT_REPLAY_SIZE
    val_every: int = 5
    patience: int = PATIENCE
    seed: int = 0
    eval_sets: list[str] = field(default_factory=list)
    refit_calibration: bool = True
    batch_size: int = 32  # scoring batch


# ---------------------------------------------------------------------------------------------- the procedure
def adapt(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    replay: str | Path | None = None,
    replay_from_checkpoint: bool = False,
    options: AdaptOptions | None = None,
    progress: bool = True,
    before: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Adapt ``checkpoint`` to the generator(s) in ``data``; write ``out/checkpoint`` (a normal checkpoint with
    ``lineage.json``), ``out/adapt.json`` and ``out/adapt.md``; return the report. A killed run resumes from
    ``out/run``'s last checkpoint when called again with the same arguments. ``before``: the parent's evaluation
    from an earlier call on the same eval sets (``report["before"]``), to skip scoring it again."""
    from ..methods import load_detector

    o = options or AdaptOptions()
    t0 = time.time()
    parent, out = resolve_checkpoint(checkpoint), Path(out)  # a folder, or a Hub repo id like every entry point

    # 1. The request: the replay memory, the new data split into train / validation, the output folder.
    memory = _replay_samples(parent, replay, replay_from_checkpoint, o)
    new_train, new_val = split_new_data(load_labelled(str(data)), o.shots, o.seed)
    _check_out(out, [parent, data, *([replay] if replay else []), *o.eval_sets])
    ratio = o.replay_ratio if memory else 0.0
    model = load_detector(parent)
    parent_cfg = model.cfg

    # 2. The run folder: manifests of what it trains and validates on, and the config (the parent's, with the
    #    adaptation's data, steps and learning rate).
    run = out / "run"
    run.mkdir(parents=True, exist_ok=True)
    train_csv = _write_manifest(out / "data" / "train.csv", new_train + memory)
    val_csv = _write_manifest(out / "data" / "val.csv", new_val)
    cfg = _adapt_config(parent_cfg, train_csv, val_csv, run, o)
    n_new, n_rep = replay_split(cfg.train.batch_size, ratio)

    # 3. Before: the parent on the eval sets (the new family and every old one found).
    eval_samples, eval_note = _eval_samples(parent, parent_cfg, new_val, o.eval_sets, new_train + memory)
    if before is None:
        before = _evaluate(model, eval_samples, o, progress)

    # 4. Train (engine/train.py's loop: resumable), early-stopped on the new validation split; keep the best.
    stopper = _EarlyStopper(out, model, o.patience)
    stopper.start(lambda: _validate_parent(cfg, model, progress))
    memory_paths = {s.path for s in memory}
    t_train = time.time()
    if not stopper.finished:
        summary = train(
            cfg,
            resume="auto",
            progress=progress,
            model=model,
            batch_sampler=lambda samples, per_rank, world, rank: ReplayBatchSampler(
                [s.label for s in samples],
                [s.path in memory_paths for s in samples],
                per_rank,
                ratio,
                seed=cfg.train.seed,
                num_replicas=world,
                rank=rank,
            ),
            on_validate=stopper.update,
        )
        stopper.finish(summary["global_step"])
    train_seconds = time.time() - t_train
    stopper.restore(model, parent)

    # 5. The checkpoint: the parent's folder with the adapted weights (every frozen part is the parent's).
    model.save_pretrained(run / "adapted")
    ckpt = _write_checkpoint(parent, out / "checkpoint", run)
    cal_info = _refit_calibration(ckpt, parent, parent_cfg, model, new_val, out, o, progress)

    # 6. After, the report and the lineage.
    after = _evaluate(model, eval_samples, o, progress)
    new_families = sorted({s.generator for s in new_train if s.label == 1})
    rows = family_rows(before, after, new_families)
    st = stopper.state
    cost = {
        "wall_seconds": round(time.time() - t0, 1),
        "train_seconds": round(train_seconds, 1),
        "steps": st["steps_done"],
        "images_seen": st["steps_done"] * cfg.train.batch_size,
        "new_images_seen": st["steps_done"] * n_new,
        "replay_images_seen": st["steps_done"] * n_rep,
    }
    lineage = build_lineage(
        parent=parent,
        data=data,
        new_train=new_train,
        new_val=new_val,
        memory=memory,
        replay_source=_replay_source(replay, replay_from_checkpoint),
        steps=stopper.state,
        requested_steps=o.steps,
        val_every=o.val_every,
        patience=o.patience,
        lr=o.lr,
        seed=o.seed,
        ratio=ratio,
        batch=(n_new, n_rep),
        calibration=cal_info,
        cost=cost,
        table=rows,
    )
    atomic_write_json(ckpt / LINEAGE_NAME, lineage)
    report = {
        "checkpoint": str(ckpt),
        "lineage": lineage,
        "families": rows,
        "eval": eval_note,
        "validation": st["history"],
        "before": before,
    }
    atomic_write_json(out / "adapt.json", {k: v for k, v in report.items() if k != "before"})
    atomic_write_text(out / "adapt.md", format_report(report))
    return report


# ---------------------------------------------------------------------------------------------- step helpers
def _check_out(out: Path, inputs: list) -> None:
    """The output folder: writable, not inside an input, and either new, empty or an earlier adapt's (resume)."""
    check_not_an_input(out, [str(p) for p in inputs], "--out")
    if out.exists() and any(out.iterdir()) and not (out / STAMP).is_file():
        raise AdaptError(f"--out {out}: exists and was not written by synerdetect adapt; choose another folder")
    check_output_dir(out, "--out")
    (out / STAMP).write_text("written by `synerdetect adapt`; rerun the same command to resume\n")


def split_new_data(samples: list[Sample], shots: int | None, seed: int) -> tuple[list[Sample], list[Sample]]:
    """``shots`` fakes and as many reals from NEW (seeded), split per class into training and validation (early
    stopping). Too few images is a one-line :class:`AdaptError` that says how many are needed."""
    need = MIN_TRAIN_PER_CLASS + MIN_VAL_PER_CLASS
    rng = np.random.default_rng([seed, 104729])
    by_class = {c: [s for s in samples if s.label == c] for c in (0, 1)}
    n_real, n_fake = len(by_class[0]), len(by_class[1])
    if shots is not None and shots < need:
        raise AdaptError(f"--shots {shots}: adapt needs at least {need} images of each class")
    if min(n_real, n_fake) < need:
        raise AdaptError(
            f"the new data holds {n_real} real and {n_fake} fake image(s); adapt needs at least {need} of each "
            f"({MIN_TRAIN_PER_CLASS} to train on and {MIN_VAL_PER_CLASS} for the validation split of early stopping)"
        )
    train, val = [], []
    for c in (0, 1):
        group = [by_class[c][i] for i in rng.permutation(len(by_class[c]))]
        if shots is not None:
            group = group[:shots]
        k = max(MIN_VAL_PER_CLASS, round(len(group) * VAL_FRACTION))
        val += group[:k]
        train += group[k:]
    return train, val


def _replay_samples(parent: Path, replay: str | Path | None, from_checkpoint: bool, o: AdaptOptions) -> list[Sample]:
    if replay is not None and from_checkpoint:
        raise AdaptError("pass --replay OLD_DATA or --replay-from-checkpoint, not both")
    if from_checkpoint:
        try:
            return read_replay_memory(parent)
        except ReplayError as e:
            ref = hub_ref(parent)
            if ref is None:
                raise AdaptError(str(e)) from None
            raise AdaptError(  # hub.py's CHECKPOINT_PATTERNS: replay/ holds training images, never published
                f"{ref} carries no replay memory: a published (pushed) checkpoint never does, since its training "
                "images are kept out of public uploads on purpose; pass --replay OLD_DATA (earlier training data)"
            ) from None
    if replay is None:
        return []
    memory = pick_balanced(load_labelled(str(replay)), o.replay_size, o.seed)
    if len({s.label for s in memory}) < 2:
        raise AdaptError(f"--replay {replay}: needs real and fake images (found one class only)")
    return memory


def _replay_source(replay, from_checkpoint: bool) -> str | None:
    if from_checkpoint:
        return "checkpoint"
    return str(Path(replay).resolve()) if replay is not None else None


def _write_manifest(path: Path, samples: list[Sample]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"path": str(Path(s.path).resolve()), "label": s.label, "generator": s.generator} for s in samples]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "generator"])
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
    return str(path)


def _adapt_config(parent_cfg, train_csv: str, val_csv: str, run: Path, o: AdaptOptions):
    return merge(
        parent_cfg,
        {
            "data": {
                "train": train_csv,
                "train_layout": "manifest",
                "train_split": None,
                "train_generators": None,
                "val": val_csv,
                "val_layout": "manifest",
                "val_split": None,
                "test": None,
            },
            "optim": {"lr": o.lr, "schedule": "constant", "warmup_steps": 0},
            "train": {
                "max_steps": o.steps,
                "val_every": o.val_every,
                "checkpoint_every": o.val_every,
                "keep_checkpoints": 2,
                "log_every": o.val_every,
                "output_dir": str(run),
                "num_workers": 0,
                "seed": o.seed,
                "replay_memory": 0,
            },
            "cache": {"policy": "online", "dir": None},
        },
    )


def _eval_samples(
    parent: Path, parent_cfg, new_val: list[Sample], eval_sets: list[str], trained_on: list[Sample]
) -> tuple[list[Sample], dict[str, Any]]:
    """The images the report scores: the user's eval sets; else the parent's validation sets (its calibration
    data and data.val) plus the new validation split. Images adapt trains on are dropped."""
    sets: list[tuple[str, list[Sample]]] = []
    if eval_sets:
        sets = [(str(p), load_labelled(str(p))) for p in eval_sets]
    else:
        for where, layout, split, gens in _old_validation_sets(parent, parent_cfg):
            try:
                sets.append((where, load_labelled(where, layout, split, gens)))
            except (OSError, ValueError) as e:
                log.warning("old validation set %s not readable (%s); not evaluated", where, e)
        sets.append(("new validation split (also used for early stopping)", new_val))
    seen = {str(Path(s.path).resolve()) for s in trained_on}
    samples, dropped = [], 0
    for _, group in sets:
        for s in group:
            if str(Path(s.path).resolve()) in seen:
                dropped += 1
            else:
                samples.append(s)
    return samples, {"sets": [w for w, _ in sets], "n_images": len(samples), "dropped_trained_on": dropped}


def _old_validation_sets(parent: Path, parent_cfg) -> list[tuple[str, str, str | None, list[str] | None]]:
    """Where the parent's old families can be validated: its calibration data, then its protocol's data.val."""
    found = []
    try:
        cal = Calibration.load(parent)
    except CalibrationError:
        cal = None
    if cal is not None and cal.fitted_on.get("data"):
        f = cal.fitted_on
        found.append((str(f["data"]), f.get("layout", "auto"), f.get("split"), f.get("generators") or None))
    if parent_cfg.data.val and all(Path(parent_cfg.data.val) != Path(x[0]) for x in found):
        d = parent_cfg.data
        found.append((d.val, d.val_layout, d.val_split, None))
    return found


def _evaluate(model, samples: list[Sample], o: AdaptOptions, progress: bool):
    """Per-family accuracy and AP (engine/evaluate: the one metrics implementation)."""
    if not samples:
        return {"generators": {}, "seconds": 0.0}
    was_training = model.training
    model.eval()
    res = evaluate(
        model, samples, None, image_size=model.cfg.data.image_size, batch_size=o.batch_size, progress=progress
    )
    model.train(was_training)
    gens = res["summary"]["generators"]
    keep = ("acc", "real_acc", "fake_acc", "ap", "n_real", "n_fake")
    return {"generators": {g: {k: m[k] for k in keep} for g, m in gens.items()}, "seconds": round(res["seconds"], 2)}


def _validate_parent(cfg, model, progress: bool) -> dict[str, Any]:
    """The parent on the new validation split: step 0 of early stopping (adapting must beat it)."""
    samples = load_labelled(cfg.data.val, "manifest")
    model.eval()
    res = evaluate(model, samples, None, image_size=cfg.data.image_size, batch_size=32, progress=progress)
    mean = res["summary"]["mean"]
    return {"step": 0, "val_acc": mean["acc"], "val_ap": mean["ap"]}


class _EarlyStopper:
    """Early stopping on the new validation split, resumable: its history lives in ``out/early_stopping.json``,
    the best weights in ``out/best/`` (records past the step a resumed run restarts from are replayed
    identically, so they are kept)."""

    def __init__(self, out: Path, model, patience: int):
        self.path, self.best_dir, self.model, self.patience = out / "early_stopping.json", out / "best", model, patience
        self.state: dict[str, Any] = {"history": [], "best_step": 0, "stopped_early": False, "steps_done": 0}
        if self.path.is_file():
            self.state = json.loads(self.path.read_text())

    @property
    def finished(self) -> bool:
        return bool(self.state.get("finished"))

    @staticmethod
    def _score(rec: dict[str, Any]) -> tuple[float, float]:
        return (rec["val_acc"], rec["val_ap"] if rec["val_ap"] is not None else 0.0)

    def start(self, parent_record: Callable[[], dict[str, Any]]) -> None:
        if not self.state["history"]:
            self.state["history"] = [parent_record()]
            self._save()

    def update(self, step: int, rec: dict[str, Any]) -> bool:
        hist = [h for h in self.state["history"] if h["step"] < step] + [{**rec, "step": step}]
        best = max(hist, key=lambda h: (self._score(h), -h["step"]))
        if best["step"] == step:
            self.model.save_pretrained(self.best_dir)  # only the trainable weights matter here
        self.state.update(history=hist, best_step=best["step"])
        stale = sum(1 for h in hist if h["step"] > best["step"])
        stop = stale >= self.patience
        self.state["stopped_early"] = stop
        self._save()
        return stop

    def finish(self, steps_done: int) -> None:
        self.state.update(finished=True, steps_done=steps_done)
        self._save()

    def restore(self, model, parent: Path) -> None:
        """The best weights into ``model``: the parent's when no step beat it on the validation split."""
        model.load_trainable(self.best_dir if self.state["best_step"] else parent)
        model.eval()

    def _save(self) -> None:
        atomic_write_json(self.path, self.state)


def _write_checkpoint(parent: Path, ckpt: Path, run: Path) -> Path:
    """A copy of the parent's folder (config, base models, replay memory) whose trainable weights are the adapted
    ones; what describes the parent is not carried over: its calibration, lineage and optimiser state, its model
    card (README.md: ``push`` would publish the parent's numbers under the adapted weights) and the
    ``.synerdetect-*`` marker files other commands left in it (demo, adapt)."""
    tmp = ckpt.parent / f".tmp-{ckpt.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(parent, tmp, ignore=lambda d, names: [n for n in names if Path(d) == parent and _not_copied(n)])
    shutil.copyfile(run / "adapted" / WEIGHTS_NAME, tmp / WEIGHTS_NAME)
    if ckpt.exists():
        shutil.rmtree(ckpt)
    tmp.replace(ckpt)
    return ckpt


#: Files of the parent's folder that describe the parent, not the adapted weights (see :func:`_write_checkpoint`).
NOT_COPIED = frozenset(
    {"calibration.json", LINEAGE_NAME, "optimizer.json", "optimizer.safetensors", "trainer_state.json", "README.md"}
)


def _not_copied(name: str) -> bool:
    return name in NOT_COPIED or name.startswith(".synerdetect-")


def _refit_calibration(ckpt, parent, parent_cfg, model, new_val, out, o, progress) -> dict[str, Any]:
    """The calibration (and its band, and the cascade band when the parent had one) refitted on the old
    validation sets plus the new validation split; when that is too little data, the adapted checkpoint has
    none (the parent's describes other logits) and the reason is returned. The parent's certificates (calibrate
    ``--guarantee`` / ``--max-fpr``) are never carried over; each is refitted with the parent's target and delta, and
    what became of it (its outcome or the refusal's message) is returned under ``certificates``."""
    try:
        old = Calibration.load(parent)
    except CalibrationError:
        old = None
    wanted = _parent_certificates(old)
    certs: dict[str, Any] = {k: {**v, "carried_over": False, "why": CERTS_NOT_CARRIED} for k, v in wanted.items()}
    if not o.refit_calibration:
        for c in certs.values():
            c.update(refitted=False, reason="the calibration was not refitted (--no-calibration)")
        return {"refitted": False, "reason": "not asked for", "certificates": certs}
    samples = list(new_val)
    for where, layout, split, gens in _old_validation_sets(parent, parent_cfg):
        try:
            samples += load_labelled(where, layout, split, gens)
        except (OSError, ValueError):
            continue
    csv_path = _write_manifest(out / "data" / "calibration.csv", samples)
    pending = _certificates_to_refit(wanted, certs, sum(1 for s in samples if s.label == 0))
    while True:
        try:
            cal = calibrate_checkpoint(
                ckpt,
                csv_path,
                layout="manifest",
                method=old.method if old else "temperature",
                target_accuracy=(old.target_accuracy or 0.95) if old else 0.95,
                model=model,
                batch_size=o.batch_size,
                progress=progress,
                protocol_config=parent_cfg,
                cascade_agreement=(old.cascade or {}).get("target_agreement", 0.99) if old and old.cascade else None,
                guarantee="guarantee" in pending,
                max_fpr=pending["max_fpr"]["target"] if "max_fpr" in pending else None,
                delta=next(iter(pending.values()))["delta"] if pending else DEFAULT_DELTA,
            )
            break
        except GuaranteeError as e:  # adapt goes on without that certificate, and says why
            # calibrate_checkpoint certifies the band before the FPR threshold, whose usual refusal (too few reals)
            # _certificates_to_refit already took before any scoring: so with both asked, it is the band's
            refused = "guarantee" if "guarantee" in pending else "max_fpr"
            certs[refused].update(refitted=False, reason=str(e))
            del pending[refused]
            log.warning("adapt: the parent's %s not refitted: %s", refused, e)
        except CalibrationError as e:
            log.warning("calibration not refitted: %s", e)
            for c in certs.values():
                c.setdefault("refitted", False)
                c.setdefault("reason", f"the calibration was not refitted ({e})")
            return {"refitted": False, "reason": str(e), "certificates": certs}
    for name in pending:
        got = getattr(cal, name) or {}
        keep = ("band", "certified_accuracy", "coverage") if name == "guarantee" else ("threshold", "certified_fpr")
        certs[name].update(refitted=True, on=CERTS_DATA, **{k: got.get(k) for k in keep})
    return {"refitted": True, "band": cal.band, "fitted_on": cal.fitted_on, "certificates": certs}


#: Why the parent's certificates are not carried over to the adapted checkpoint (lineage.json, adapt.md).
CERTS_NOT_CARRIED = (
    "not carried over: it was certified on the parent's logits, and adaptation changed the weights that produce them"
)
#: What a refitted certificate stands on, said beside it: the new validation split also chose the best step.
CERTS_DATA = (
    "the refit calibration set (the parent's validation sets plus the new validation split, which early stopping "
    "also used to pick the best step: a mild selection the certificate does not account for; for a strict one, "
    "rerun calibrate --guarantee / --max-fpr on images adapt never saw)"
)


def _parent_certificates(cal: Calibration | None) -> dict[str, dict[str, Any]]:
    """The certificates the parent's calibration carried, with their settings (target, delta)."""
    found = {}
    for name in ("guarantee", "max_fpr"):
        c = getattr(cal, name, None) if cal is not None else None
        if isinstance(c, dict) and c.get("target") is not None:
            found[name] = {"target": float(c["target"]), "delta": float(c.get("delta", DEFAULT_DELTA))}
    return found


def _certificates_to_refit(
    wanted: dict[str, dict[str, Any]], certs: dict[str, dict[str, Any]], n_real: int
) -> dict[str, dict[str, Any]]:
    """The certificates calibrate_checkpoint can refit here; the others get their refusal in ``certs``: too few
    reals for the FPR bound (engine/guarantees.py's own message, without scoring anything), or two deltas (the
    calibration takes one for both)."""
    pending = dict(wanted)
    if len(pending) == 2 and pending["guarantee"]["delta"] != pending["max_fpr"]["delta"]:
        certs["max_fpr"].update(
            refitted=False,
            reason=f"the parent's two certificates have different deltas ({pending['guarantee']['delta']:g} and "
            f"{pending['max_fpr']['delta']:g}) and calibrate takes one for both; the band's was refitted",
        )
        del pending["max_fpr"]
    if "max_fpr" in pending:
        f = pending["max_fpr"]
        try:
            fpr_threshold(np.full(n_real, -1.0), target_fpr=f["target"], delta=f["delta"])  # only counts matter
        except GuaranteeError as e:
            certs["max_fpr"].update(refitted=False, reason=str(e))
            del pending["max_fpr"]
    return pending


# ---------------------------------------------------------------------------------------------- report
def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}"


def format_report(report: dict[str, Any]) -> str:
    lin = report["lineage"]
    cost, steps = lin["cost"], lin["steps"]
    parent = lin["parent"].get("repo") or lin["parent"]["path"]
    lines = [
        "# Adaptation report",
        "",
        f"Parent `{parent}` (weights sha256 `{lin['parent']['sha256'][:16]}...`) adapted on "
        f"{lin['adapted_on']['train']['n_fake']} fake + {lin['adapted_on']['train']['n_real']} real images "
        f"({lin['adapted_on']['validation']['n_fake']} + {lin['adapted_on']['validation']['n_real']} held out for "
        f"early stopping), replay ratio {lin['optim']['replay_ratio']}, lr {lin['optim']['lr']}.",
        "",
        "| family | role | images | acc before | acc after | AP before | AP after | forgetting |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["families"]:
        forget = "" if r["role"] == "new" else _pct(r["forgetting"])
        lines.append(
            f"| {r['family']} | {r['role']} | {r['n_images']} | {_pct(r['acc_before'])} | {_pct(r['acc_after'])} | "
            f"{_pct(r['ap_before'])} | {_pct(r['ap_after'])} | {forget} |"
        )
    lines += [
        "",
        "Accuracy and AP in %; forgetting = accuracy before - after on an old family.",
        f"Evaluated on: {', '.join(report['eval']['sets'])} ({report['eval']['n_images']} images; "
        f"{report['eval']['dropped_trained_on']} dropped because adapt trained on them).",
        "",
        f"Cost: {cost['wall_seconds']} s wall ({cost['train_seconds']} s training), {steps['done']} of "
        f"{steps['requested']} steps (best at step {steps['best_step']}"
        + (", stopped early" if steps["stopped_early"] else "")
        + f"), {cost['images_seen']} images seen ({cost['new_images_seen']} new, {cost['replay_images_seen']} replay).",
        "",
        "Calibration: "
        + (
            f"refitted on old and new validation images, band {lin['calibration'].get('band')}"
            if lin["calibration"].get("refitted")
            else f"not refitted ({lin['calibration'].get('reason')}); the checkpoint carries none"
        ),
        "",
        _certificates_line(lin["calibration"].get("certificates") or {}),
    ]
    return "\n".join(lines) + "\n"


def _certificates_line(certs: dict[str, Any]) -> str:
    if not certs:
        return "Certificates: the parent's calibration carried none (calibrate --guarantee / --max-fpr)."
    parts = []
    for name, c in certs.items():
        head = f"`{name}` (target {c['target']:g}, delta {c['delta']:g})"
        if c.get("refitted"):
            got = ", ".join(f"{k} {v}" for k, v in c.items() if k in ("band", "threshold", "certified_fpr"))
            parts.append(f"{head} refitted with the parent's settings ({got}) on {c['on']}")
        else:
            parts.append(f"{head} not refitted: {c.get('reason')}")
    return f"Certificates of the parent: {CERTS_NOT_CARRIED}. " + "; ".join(parts) + "."
