"""The one registry of detection methods: SynerDetect and the paper's reference methods (Table 5a, Figure 3).

A method is selected by the experiment config's top-level ``method`` field (``synerdetect train --method NAME`` or
``method=NAME``). :func:`build_detector` and :func:`load_detector` build the registry's class for a config or a
saved folder, so training, evaluation, prediction, the scorer and the service work for every method; every class
is a :class:`~synerdetect.model.base.Detector`, and its own ``from_config`` / ``from_pretrained`` build only that
class. The reference methods live in :mod:`synerdetect.methods.references` (imported lazily: the registry itself
is cheap to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import ExperimentConfig
    from ..model.base import Detector

#: name -> (class name, one line saying what it is). The order is the order of Table 5a (and of ``--methods all``).
METHODS: dict[str, tuple[str, str]] = {
    "synerdetect": ("SynerDetect", "SynerDetect: CMID + discriminative conditional inversion + OT-DCL (the paper)"),
    "unifd": ("UniFD", "vanilla CLIP: frozen CLIP image embedding + linear classifier (UniFD)"),
    "dire": ("DIRE", "diffusion reconstruction error |x - DDIM(inv(x))| + small CNN (DIRE)"),
    "inversion_probe": ("InversionProbe", "diffusion inversion features (frozen z_n path) + linear classifier"),
    "fusion_a": ("FusionA", "Fusion-A: MulT-style cross-modal attention over CLIP and inversion tokens"),
    "fusion_b": ("FusionB", "Fusion-B: Uni-Code-style shared codebook aligning CLIP and inversion features"),
    "fusion_c": ("FusionC", "Fusion-C: concatenation of CLIP and inversion embeddings + linear classifier"),
}


def list_methods() -> list[str]:
    """The known method names, in Table 5a order (synerdetect first)."""
    return list(METHODS)


def check_method(name: str) -> str:
    """``name`` if it is a known method, else a :class:`ConfigError` listing the known ones."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(list_methods())}")
    return name


def get_method(name: str) -> type[Detector]:
    """The model class of method ``name`` (:class:`~synerdetect.model.detector.SynerDetect` or a reference)."""
    check_method(name)
    if name == "synerdetect":
        from ..model.detector import SynerDetect

        return SynerDetect
    from . import references

    cls = getattr(references, METHODS[name][0])
    assert cls.method_name == name, (cls, name)
    return cls


def build_detector(cfg: ExperimentConfig) -> Detector:
    """A fresh detector of ``cfg.method`` (a :class:`ConfigError` listing the known methods for an unknown name)."""
    return get_method(cfg.method).from_config(cfg)


def load_detector(folder: str | Path, **overrides: Any) -> Detector:
    """The detector saved in ``folder`` (``save_pretrained`` / a training checkpoint), of whichever method its
    config names; ``overrides`` (dotted keys) as for ``from_pretrained``. ``folder`` may also be a Hugging Face
    Hub repo id ``org/name[@revision]`` (:func:`synerdetect.hub.resolve_checkpoint`)."""
    from ..hub import resolve_checkpoint
    from ..model.base import read_checkpoint_config

    folder = resolve_checkpoint(folder)
    cfg = read_checkpoint_config(folder, **overrides)
    return get_method(cfg.method).from_pretrained(folder, **overrides)


def parse_methods(spec: str) -> list[str]:
    """``"synerdetect,unifd,dire"`` or ``"all"`` -> the list of method names (each checked, duplicates dropped)."""
    if spec.strip() == "all":
        return list_methods()
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigError(f"no method named in {spec!r}; known methods: {', '.join(list_methods())} (or 'all')")
    return list(dict.fromkeys(check_method(n) for n in names))


__all__ = [
    "METHODS",
    "build_detector",
    "check_method",
    "get_method",
    "list_methods",
    "load_detector",
    "parse_methods",
]
