"""Result files, markdown tables and plots for SynerDetect evaluations.

All files are written atomically (temporary file in the same directory, then
``os.replace``), so an interrupted run never leaves a half-written result.
Metric values in JSON/CSV are fractions in ``[0, 1]``; markdown shows percentages
with two decimals.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_write_bytes, atomic_write_json, atomic_write_text, csv_cell
from ..utils import jsonable as _jsonable  # the one JSON conversion: NaN -> null, numpy -> Python
from .calibration import describe_band
from .metrics import DECISION_RULE, ScoreRecord, as_records, generator_metrics

__all__ = [
    "SCORE_FIELDS",
    "CSV_COLUMNS",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "write_results",
    "read_scores_jsonl",
    "write_scores_jsonl",
    "markdown_table",
    "plot_logit_distributions",
    "plot_reliability",
    "robustness_markdown",
    "calibration_markdown",
    "harmonized_markdown",
    "shortcut_markdown",
]

SCORE_FIELDS = ("path", "generator", "label", "s_real", "s_fake", "logit", "prob_fake", "format")
#: Written after :data:`SCORE_FIELDS` in scores.jsonl when the record has them (not None).
OPTIONAL_SCORE_FIELDS = ("verdict", "calibrated", "size", "decided_by")
CSV_COLUMNS = (
    "generator",
    "acc",
    "real_acc",
    "fake_acc",
    "ap",
    "n_real",
    "n_fake",
    "n_images",
    "ap_note",
    "acc_note",
    "formats_real",
    "formats_fake",
    "format_shortcut_warning",
)


# --------------------------------------------------------------------------- io helpers


def _csv_num(v: Any) -> str:
    return "" if v is None else repr(float(v)) if isinstance(v, float) else str(v)


def _fmt_counts(counts: Mapping[str, int]) -> str:
    return ";".join(f"{k}:{v}" for k, v in counts.items())


def _acc_note(m: Mapping[str, Any]) -> str:
    notes = []
    if m.get("real_acc_undefined"):
        notes.append(f"real_acc: {m['real_acc_undefined']}")
    if m.get("fake_acc_undefined"):
        notes.append(f"fake_acc: {m['fake_acc_undefined']}")
    return "; ".join(notes)


def _mean_ap_note(summary: Mapping[str, Any]) -> str:
    mean, gens = summary["mean"], summary["generators"]
    if mean.get("ap") is None:
        return mean.get("ap_undefined") or "AP undefined for every generator"
    excl = mean.get("ap_excluded") or [g for g, m in gens.items() if m.get("ap") is None]
    if not excl:
        return ""
    why = ", ".join(f"{g} ({gens[g].get('ap_undefined')})" for g in excl)
    return f"mean over {mean.get('ap_n_generators')}/{len(gens)} generators with defined AP; excluded: {why}"


class _SafeWriter(csv.DictWriter):
    """A DictWriter whose text cells cannot run as spreadsheet formulas (generator names come from folder names)."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({k: _safe_csv(k, v) for k, v in rowdict.items()})


#: Columns written as numbers by :func:`_csv_num`: a negative value stays a number.
_NUMERIC_COLUMNS = frozenset({"acc", "real_acc", "fake_acc", "ap", "n_real", "n_fake", "n_images"})


def _safe_csv(column: str, value: Any) -> Any:
    return value if column in _NUMERIC_COLUMNS else csv_cell(value)


def _csv_text(summary: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = _SafeWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    gens = summary["generators"]
    for g, m in gens.items():
        w.writerow(
            {
                "generator": g,
                "acc": _csv_num(m["acc"]),
                "real_acc": _csv_num(m["real_acc"]),
                "fake_acc": _csv_num(m["fake_acc"]),
                "ap": _csv_num(m["ap"]),
                "n_real": m["n_real"],
                "n_fake": m["n_fake"],
                "n_images": m.get("n_images", m["n_real"] + m["n_fake"]),
                "ap_note": m.get("ap_undefined") or "",
                "acc_note": _acc_note(m),
                "formats_real": _fmt_counts(m["formats"]["real"]),
                "formats_fake": _fmt_counts(m["formats"]["fake"]),
                "format_shortcut_warning": m.get("format_shortcut_warning") or "",
            }
        )
    mean = summary["mean"]
    n_real = sum(m["n_real"] for m in gens.values())
    n_fake = sum(m["n_fake"] for m in gens.values())
    w.writerow(
        {
            "generator": "mean",
            "acc": _csv_num(mean.get("acc")),
            "real_acc": _csv_num(mean.get("real_acc")),
            "fake_acc": _csv_num(mean.get("fake_acc")),
            "ap": _csv_num(mean.get("ap")),
            "n_real": n_real,
            "n_fake": n_fake,
            "n_images": n_real + n_fake,
            "ap_note": _mean_ap_note(summary),
            "acc_note": "unweighted mean over generators",
            "formats_real": "",
            "formats_fake": "",
            "format_shortcut_warning": "",
        }
    )
    return buf.getvalue()


def write_results(
    out_dir: str | os.PathLike,
    summary: Mapping[str, Any],
    records: Iterable[ScoreRecord | Mapping[str, Any]],
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``results.json``, ``scores.jsonl`` and ``results.csv`` into ``out_dir``.

    * ``results.json`` -- the :func:`~synerdetect.metrics.summarize` dict with the
      keys of ``extra`` (e.g. ``{"model": ..., "config": ...}``) merged at top level
      (a key clashing with a summary key raises ``ValueError``).
    * ``scores.jsonl`` -- one JSON object per image with :data:`SCORE_FIELDS`, then those of
      :data:`OPTIONAL_SCORE_FIELDS` the record has (``verdict``, ``calibrated``, ``size`` = [w, h]).
    * ``results.csv`` -- :data:`CSV_COLUMNS`, one row per generator then a ``mean``
      row; undefined metrics are empty cells explained in ``ap_note``/``acc_note``.

    Returns ``{"json": path, "jsonl": path, "csv": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs = as_records(records)
    payload = dict(summary)
    if extra:
        clash = sorted(set(extra) & set(payload))
        if clash:
            raise ValueError(f"extra keys clash with summary keys: {clash}")
        payload.update(extra)

    paths = {
        "jsonl": write_scores_jsonl(out / "scores.jsonl", recs),
        "csv": atomic_write_text(out / "results.csv", _csv_text(summary)),
        # results.json last: its presence marks a complete run
        "json": atomic_write_json(out / "results.json", payload),
    }
    return paths


def _scores_jsonl_text(recs: Iterable[ScoreRecord]) -> str:
    lines = []
    for r in recs:
        d = r.to_dict()
        row = {k: d[k] for k in SCORE_FIELDS}
        row.update((k, d[k]) for k in OPTIONAL_SCORE_FIELDS if d.get(k) is not None)
        lines.append(json.dumps(_jsonable(row), allow_nan=False) + "\n")
    return "".join(lines)


def write_scores_jsonl(path: str | os.PathLike, records: Iterable[ScoreRecord | Mapping[str, Any]]) -> Path:
    """One JSON object per record (:data:`SCORE_FIELDS`, then the :data:`OPTIONAL_SCORE_FIELDS` it has)."""
    return atomic_write_text(path, _scores_jsonl_text(as_records(records)))


def read_scores_jsonl(path: str | os.PathLike) -> list[ScoreRecord]:
    """Load ``scores.jsonl`` back into :class:`ScoreRecord` objects."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(ScoreRecord.from_dict(json.loads(line)))
                except (ValueError, TypeError) as e:
                    raise ValueError(f"{path}:{i}: bad score record: {e}") from e
    return out


# --------------------------------------------------------------------------- markdown


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100.0 * v:.2f}"


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


class _Notes:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"


def markdown_table(summary: Mapping[str, Any]) -> str:
    """Per-generator markdown table plus a final mean row and numbered footnotes.

    Columns: generator, acc, real acc, fake acc, AP, #real, #fake, formats
    (percentages with two decimals; undefined metrics are ``n/a[k]`` with footnote
    ``[k]`` giving the reason; format-shortcut warnings are footnoted too).
    """
    gens = summary["generators"]
    notes = _Notes()

    def cell(v: float | None, reason: str | None, gen: str, metric: str) -> str:
        if v is not None:
            return _pct(v)
        return "n/a" + notes.add(f"{gen} {metric}: {reason or 'undefined'}")

    rows = [
        "| generator | acc | real acc | fake acc | AP | #real | #fake | formats |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for g, m in gens.items():
        fr, ff = m["formats"]["real"], m["formats"]["fake"]
        fmt = "; ".join(
            part
            for part in (
                ("real " + ", ".join(f"{k} {v}" for k, v in fr.items())) if fr else "",
                ("fake " + ", ".join(f"{k} {v}" for k, v in ff.items())) if ff else "",
            )
            if part
        )
        if m.get("format_shortcut_warning"):
            fmt += " (!)" + notes.add(f"{g} format shortcut: {m['format_shortcut_warning']}")
        if m.get("size_shortcut_warning"):
            fmt += " (!)" + notes.add(f"{g} size shortcut: {m['size_shortcut_warning']}")
        rows.append(
            "| "
            + " | ".join(
                [
                    _md_escape(g),
                    _pct(m["acc"]),
                    cell(m["real_acc"], m.get("real_acc_undefined"), g, "real acc"),
                    cell(m["fake_acc"], m.get("fake_acc_undefined"), g, "fake acc"),
                    cell(m["ap"], m.get("ap_undefined"), g, "AP"),
                    str(m["n_real"]),
                    str(m["n_fake"]),
                    _md_escape(fmt),
                ]
            )
            + " |"
        )

    mean = summary["mean"]
    ap_cell = _pct(mean.get("ap"))
    ap_note = _mean_ap_note(summary)
    if ap_note:
        ap_cell += notes.add(f"mean AP: {ap_note}")
    rows.append(
        "| "
        + " | ".join(
            [
                "**mean**",
                _pct(mean.get("acc")),
                _pct(mean.get("real_acc")),
                _pct(mean.get("fake_acc")),
                ap_cell,
                str(sum(m["n_real"] for m in gens.values())),
                str(sum(m["n_fake"] for m in gens.values())),
                "",
            ]
        )
        + " |"
    )

    text = "\n".join(rows) + "\n"
    text += (
        f"\nDecision rule: {summary.get('decision_rule', DECISION_RULE)}. "
        "Means are unweighted over generators (real/fake acc and AP over generators where defined).\n"
    )
    if notes.items:
        text += "\n" + "\n".join(f"[{i}] {_md_escape(t)}" for i, t in enumerate(notes.items, 1)) + "\n"
    return text


def robustness_markdown(table: Mapping[str, Any]) -> str:
    """Markdown for :func:`~synerdetect.metrics.robustness_table`.

    A summary table (perturbation, levels, mAcc, mAP; plus a ``clean`` row when
    available) followed by a per-level table (perturbation, level, acc, AP).
    """
    perts = table.get("perturbations", {})
    clean = table.get("clean")
    out = ["| perturbation | levels | mAcc | mAP |", "|---|---|---:|---:|"]
    if clean:
        out.append(f"| clean | - | {_pct(clean.get('acc'))} | {_pct(clean.get('ap'))} |")
    for kind, t in perts.items():
        levels = ", ".join(_md_escape(lvl) for lvl in t["levels"])
        out.append(f"| {_md_escape(kind)} | {levels} | {_pct(t.get('mAcc'))} | {_pct(t.get('mAP'))} |")
    out += ["", "| perturbation | level | acc | AP |", "|---|---|---:|---:|"]
    for kind, t in perts.items():
        for lvl, e in t["levels"].items():
            out.append(f"| {_md_escape(kind)} | {_md_escape(lvl)} | {_pct(e.get('acc'))} | {_pct(e.get('ap'))} |")
    out.append("")
    out.append(
        "acc/AP per level are unweighted means over generators; mAcc/mAP are means over "
        "levels (levels with undefined AP excluded from mAP)."
    )
    return "\n".join(out) + "\n"


def _band_text(band: Any) -> str:
    return describe_band(band)


def calibration_markdown(section: Mapping[str, Any]) -> str:
    """Lines for results.md from a ``calibration`` section (:func:`~synerdetect.engine.calibration.
    calibration_section`): ECE / Brier / NLL (and the uncalibrated values), the band, coverage and selective
    accuracy."""
    ece, brier, nll = section.get("ece"), section.get("brier"), section.get("nll")
    nb = section.get("n_bins", 15)
    cov = (
        f"coverage {_pct(section.get('coverage'))}% ({section.get('n_covered')}/{section.get('n_images')} "
        f"images get a verdict), selective accuracy {_pct(section.get('selective_accuracy'))}% "
        f"(accuracy on all {_pct(section.get('accuracy'))}%)"
    )
    if not section.get("calibrated"):
        return (
            "\n".join(
                [
                    f"**Calibration**: none (prob_fake = sigmoid(logit / tau), tau = {section.get('tau')}; "
                    "fit one on a validation set with `synerdetect calibrate`)",
                    f"- ECE ({nb} bins) {_pct(ece)}%, Brier {brier:.4f}, NLL {nll:.4f}",
                    f"- verdicts: no uncertain band; {cov}",
                ]
            )
            + "\n"
        )
    raw = section.get("raw") or {}
    if section.get("method") == "temperature":
        what = f"temperature scaling, T = {1.0 / section['a']:.6g} on the logit"
    else:
        b = section.get("b") or 0.0
        what = f"Platt scaling, sigmoid({section['a']:.6g} * logit {'-' if b < 0 else '+'} {abs(b):.6g})"
    f = section.get("fitted_on") or {}
    src = ""
    if f.get("data"):
        src = f"; fitted on {_md_escape(f['data'])}" + (f" (split {f['split']})" if f.get("split") else "")
        if f.get("n_real") is not None:
            src += f": {f['n_real']} real + {f['n_fake']} fake"
    tgt = section.get("target_accuracy")
    return (
        "\n".join(
            [
                f"**Calibration** ({what}{src})",
                f"- ECE ({nb} bins) {_pct(ece)}% (uncalibrated {_pct(raw.get('ece'))}%), Brier {brier:.4f} "
                f"({raw.get('brier', float('nan')):.4f}), NLL {nll:.4f} ({raw.get('nll', float('nan')):.4f})",
                f"- uncertain band: {_band_text(section.get('band'))}"
                + (f" (fitted for {_pct(tgt)}% accuracy outside it on the validation set)" if tgt is not None else ""),
                f"- verdicts: {cov}",
            ]
        )
        + "\n"
    )


def harmonized_markdown(raw: Mapping[str, Any], harmonized: Mapping[str, Any], name: str) -> str:
    """Raw and harmonized results side by side, per generator and for the mean (acc and AP, with the change)."""

    def delta(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or b is None else f"{100.0 * (b - a):+.2f}"

    n = _md_escape(name)
    rows = [
        f"**Harmonized** ({n}): every test image, real and fake, re-encoded the same way in memory before "
        "scoring, so the file format no longer tells the classes apart. A large drop from raw means the raw "
        "numbers leaned on the format.",
        "",
        f"| generator | acc raw | acc {n} | Δacc | AP raw | AP {n} | ΔAP |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    hg = harmonized["generators"]
    for g, m in raw["generators"].items():
        h = hg.get(g, {})
        rows.append(
            f"| {_md_escape(g)} | {_pct(m['acc'])} | {_pct(h.get('acc'))} | {delta(m['acc'], h.get('acc'))} "
            f"| {_pct(m['ap'])} | {_pct(h.get('ap'))} | {delta(m['ap'], h.get('ap'))} |"
        )
    rm, hm = raw["mean"], harmonized["mean"]
    rows.append(
        f"| **mean** | {_pct(rm.get('acc'))} | {_pct(hm.get('acc'))} | {delta(rm.get('acc'), hm.get('acc'))} "
        f"| {_pct(rm.get('ap'))} | {_pct(hm.get('ap'))} | {delta(rm.get('ap'), hm.get('ap'))} |"
    )
    return "\n".join(rows) + "\n"


def shortcut_markdown(warnings: list[str], suggestion: str | None = None) -> str:
    """The format / size shortcut warnings as a list, with an optional suggestion line."""
    if not warnings:
        return ""
    lines = ["**Warning**: the classes may be told apart by something other than generation traces:"]
    lines += [f"- {_md_escape(w)}" for w in warnings]
    if suggestion:
        lines.append(f"\n{suggestion}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots

_REAL_COLOR = "tab:blue"
_FAKE_COLOR = "tab:red"


def _kde_curve(values: np.ndarray, xs: np.ndarray) -> np.ndarray | None:
    if values.size < 2 or float(np.ptp(values)) == 0.0:
        return None
    try:
        from scipy.stats import gaussian_kde

        return gaussian_kde(values)(xs)
    except (np.linalg.LinAlgError, ValueError):  # singular covariance etc. -> histogram only
        return None


def plot_logit_distributions(
    records: Iterable[ScoreRecord | Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    ncols: int = 4,
    dpi: int = 100,
) -> Path:
    """Grid of per-generator logit distributions (real vs fake), decision boundary at 0.

    Uses ``matplotlib.figure.Figure`` with an Agg canvas (no pyplot, no global
    backend change).  Generators with a single class or a single image are drawn
    with whatever is present; an empty record list yields a placeholder image.
    Written atomically as PNG; returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    recs = as_records(records)
    groups: dict[str, list[ScoreRecord]] = {}
    for r in recs:
        groups.setdefault(r.generator, []).append(r)
    metrics = generator_metrics(recs) if recs else {}

    n = max(1, len(groups))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows + (0.5 if title else 0.0)), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)

    if not groups:
        ax = axes[0][0]
        ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()

    for idx, (gen, grecs) in enumerate(groups.items()):
        ax = axes[idx // ncols][idx % ncols]
        logits = np.array([r.logit for r in grecs], dtype=float)
        labels = np.array([r.label for r in grecs], dtype=int)
        lo, hi = min(float(logits.min()), 0.0), max(float(logits.max()), 0.0)
        if hi - lo == 0.0:
            lo, hi = -1.0, 1.0
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        nbins = int(np.clip(np.sqrt(len(logits)) * 2, 10, 60))
        bins = np.linspace(lo, hi, nbins + 1)
        xs = np.linspace(lo, hi, 256)
        for lab, name, color in ((0, "real", _REAL_COLOR), (1, "fake", _FAKE_COLOR)):
            v = logits[labels == lab]
            if v.size == 0:
                continue
            ax.hist(v, bins=bins, density=True, alpha=0.35, color=color, label=f"{name} (n={v.size})")
            kde = _kde_curve(v, xs)
            if kde is not None:
                ax.plot(xs, kde, color=color, lw=1.5)
        ax.axvline(0.0, color="black", ls="--", lw=1.0, label="boundary (logit=0)")
        m = metrics[gen]
        sub = f"acc {_pct(m['acc'])}%, AP " + (
            f"{_pct(m['ap'])}%" if m["ap"] is not None else f"n/a ({m['ap_undefined']})"
        )
        ax.set_title(f"{gen}\n{sub}", fontsize=9)
        ax.set_xlabel("logit = s_fake - s_real", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.set_xlim(lo, hi)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")

    for idx in range(len(groups), nrows * ncols):
        if idx == 0 and not groups:
            continue
        axes[idx // ncols][idx % ncols].set_axis_off()

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def plot_reliability(
    section: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Reliability diagram of a ``calibration`` section: per bin, the fraction of fakes (bars over the bin, and
    a line through the bins' mean predicted probability), the diagonal of perfect calibration, the uncalibrated
    curve (dashed) when the section is calibrated, and the images per bin below; ECE in the title.

    Matplotlib ``Figure`` on an Agg canvas (no pyplot); written atomically as PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bins = list(section.get("bins") or [])
    raw = section.get("raw") if section.get("calibrated") else None
    fig = Figure(figsize=(5.0, 6.0), dpi=dpi)
    FigureCanvasAgg(fig)
    ax, axc = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="black", ls=":", lw=1.0, label="perfect calibration")
    if bins:
        lo = np.array([b["lo"] for b in bins])
        hi = np.array([b["hi"] for b in bins])
        ax.bar(
            lo,
            [b["frac_fake"] for b in bins],
            width=hi - lo,
            align="edge",
            color=_FAKE_COLOR,
            alpha=0.3,
            edgecolor=_FAKE_COLOR,
            label="fraction fake per bin",
        )
        ax.plot(
            [b["mean_prob"] for b in bins],
            [b["frac_fake"] for b in bins],
            "o-",
            color=_FAKE_COLOR,
            lw=1.5,
            ms=4,
            label="calibrated" if section.get("calibrated") else "prob_fake",
        )
        axc.bar(lo, [b["count"] for b in bins], width=hi - lo, align="edge", color="tab:gray", alpha=0.6)
    if raw and raw.get("bins"):
        rb = raw["bins"]
        ax.plot(
            [b["mean_prob"] for b in rb],
            [b["frac_fake"] for b in rb],
            "s--",
            color=_REAL_COLOR,
            lw=1.0,
            ms=3,
            label=f"uncalibrated (ECE {_pct(raw.get('ece'))}%)",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of fakes")
    ax.legend(fontsize=7, loc="upper left")
    axc.set_xlabel("predicted prob_fake")
    axc.set_ylabel("images")
    kind = "calibrated" if section.get("calibrated") else "uncalibrated"
    head = f"{title}\n" if title else ""
    ece = section.get("ece")
    ax.set_title(f"{head}reliability ({kind}): ECE {_pct(ece)}% ({section.get('n_bins', 15)} bins)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())
