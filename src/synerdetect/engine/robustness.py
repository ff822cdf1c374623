"""The chain part of a robustness sweep: per chain (``--perturb resize:0.5+jpeg:85``, ``--perturb instagram``, ...)
the accuracy and AP per generator and the share of ``fake`` verdicts that a chain turns into ``real`` or
``uncertain`` (what a platform loses when images went through it). The per-level mAcc / mAP table of every
perturbation stays :func:`~synerdetect.engine.metrics.robustness_table`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .metrics import ScoreRecord, summarize


def flips(clean: Sequence[ScoreRecord], perturbed: Sequence[ScoreRecord]) -> dict[str, Any]:
    """Among the images whose clean verdict is ``fake``: the shares whose verdict under the chain is ``real`` or
    ``uncertain`` (matched by path; images missing in either pass are left out)."""
    after = {r.path: r.verdict for r in perturbed}
    was_fake = [r for r in clean if r.verdict == "fake" and r.path in after]
    n = len(was_fake)
    to_real = sum(after[r.path] == "real" for r in was_fake)
    to_unc = sum(after[r.path] == "uncertain" for r in was_fake)
    return {
        "n_fake_verdicts": n,
        "to_real": to_real / n if n else None,
        "to_uncertain": to_unc / n if n else None,
        "flipped": (to_real + to_unc) / n if n else None,
    }


def chain_section(
    clean: Sequence[ScoreRecord], chains: Mapping[str, tuple[str, Sequence[ScoreRecord]]]
) -> dict[str, Any]:
    """``{label: {"spec", "generators": {g: {"acc", "ap", "flips"}}, "mean": {"acc", "ap"}, "flips"}}`` for the
    chains' verdict-carrying records (``chains``: label -> (spec, records))."""
    out: dict[str, Any] = {}
    for label, (spec, recs) in chains.items():
        s = summarize(recs)
        gens = {}
        for g, m in s["generators"].items():
            gens[g] = {
                "acc": m.get("acc"),
                "ap": m.get("ap"),
                "flips": flips([r for r in clean if r.generator == g], [r for r in recs if r.generator == g]),
            }
        out[label] = {
            "spec": spec,
            "generators": gens,
            "mean": {"acc": s["mean"].get("acc"), "ap": s["mean"].get("ap")},
            "flips": flips(clean, recs),
        }
    return out


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def chains_markdown(section: Mapping[str, Any], clean: Mapping[str, Any] | None = None) -> str:
    """results.md: one row per chain and generator (acc, AP, fake verdicts flipped to real / uncertain)."""
    lines = [
        "**Chains** (accuracy and AP per generator; of the images whose clean verdict is fake, the share that the "
        "chain turns into real or uncertain)",
        "",
        "| chain | steps | generator | acc | AP | fake verdicts (clean) | fake -> real | fake -> uncertain |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, c in section.items():
        rows = list(c["generators"].items()) + [("**all**", {**c["mean"], "flips": c["flips"]})]
        for g, m in rows:
            f = m["flips"]
            clean_acc = ""
            if clean and g in clean:
                clean_acc = f" ({_pct(clean[g].get('acc'))})"
            lines.append(
                f"| {label} | {c['spec']} | {g} | {_pct(m['acc'])}{clean_acc} | {_pct(m['ap'])} | "
                f"{f['n_fake_verdicts']} | {_pct(f['to_real'])} | {_pct(f['to_uncertain'])} |"
            )
    lines += [
        "",
        "acc in parentheses: the clean pass. Named chains approximate platforms from public documentation "
        "(see `synerdetect.engine.perturb.CHAIN_SOURCES`); they are not the platforms' code.",
    ]
    return "\n".join(lines) + "\n"
