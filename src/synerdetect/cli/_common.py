"""What the commands share: building a command's parser, the option groups, loading a model, printing paths.

Nothing here imports torch at module level: ``--help``, ``presets``, ``inspect`` and ``data check`` must start
without it. Heavy imports happen inside the functions that need them.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..engine.modes import MODES


# ----------------------------------------------------------------------------- parsers
def add_command(
    sub: Any, name: str, *, help: str, example: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with one real example (``example``: the words after ``synerdetect``)."""
    return sub.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=f"example:\n  synerdetect {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_checkpoint_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The detector to load and where: predict, serve, evaluate, calibrate."""
    p.add_argument(
        "--checkpoint",
        required=required,
        help="a trained detector: a save_pretrained / final/ folder, or a Hugging Face Hub repo id org/name[@revision]",
    )
    p.add_argument("--device", default=None, help="cuda | cuda:N | cpu (default: cuda when available)")
    p.add_argument("--image-size", type=int, default=None, help="loader size (default: the checkpoint's)")
    p.add_argument(
        "--view",
        choices=("center", "tiles"),
        default=None,
        help="E_v's view: center (one clip_size crop) or tiles (clip_size tiles over the whole image at native "
        "resolution, aggregated; docs/usage.md). Default: the checkpoint's data.eval_view",
    )


def add_mode_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode",
        choices=MODES,
        default="full",
        help="full: Eq. 10 (default); perceptual: the CLIP branch only (no inversion); cascade: the "
        "inversion only for images whose perceptual margin is inside the band fitted by "
        "`calibrate --cascade-agreement`",
    )


def add_scoring_options(p: argparse.ArgumentParser) -> None:
    """The scoring options of predict, serve and evaluate: checkpoint, device, image size, mode."""
    add_checkpoint_options(p)
    add_mode_option(p)


def add_provenance_options(p: argparse.ArgumentParser) -> None:
    """What the file says about itself (predict, serve)."""
    p.add_argument("--no-provenance", action="store_true", help="do not read C2PA / XMP / EXIF provenance")
    p.add_argument(
        "--trust-metadata",
        action="store_true",
        help="let a valid C2PA manifest from a trusted signer decide the verdict (the scores stay the model's; "
        "the record says verdict_source: c2pa)",
    )
    p.add_argument(
        "--c2pa-trust-anchors",
        help="PEM file of trusted C2PA root certificates (default: none, so no signer is trusted)",
    )


def add_loader_options(p: argparse.ArgumentParser, *, batch_size: int, workers: int) -> None:
    """Batching and data loading of an offline run (predict, evaluate, calibrate)."""
    p.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"images per forward pass (default: {batch_size})"
    )
    p.add_argument("--workers", type=int, default=workers, help=f"data-loading processes (default: {workers})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_data_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """A labelled dataset: evaluate, calibrate, cache build."""
    from ..data.layouts import LAYOUTS

    p.add_argument("--data", required=required, help="dataset root or manifest (CSV / JSON lines)")
    p.add_argument("--layout", default="auto", choices=LAYOUTS, help="dataset layout (default: auto)")
    p.add_argument("--split", default=None, help="train | val | test (layout-dependent)")


def add_file_outputs(p: argparse.ArgumentParser, *, json_help: str, csv_help: str | None = None) -> None:
    """``--json FILE`` (and ``--csv FILE``): refused when the file is an input or lies in an input folder."""
    p.add_argument("--json", metavar="FILE", help=json_help)
    if csv_help:
        p.add_argument("--csv", metavar="FILE", help=csv_help)


def add_out_dir(p: argparse.ArgumentParser, *, help: str, required: bool = True, default: str | None = None) -> None:
    p.add_argument("--out", required=required, default=default, metavar="DIR", help=help)


# ----------------------------------------------------------------------------- runtime helpers
def quiet_libraries() -> None:
    """Silence the model libraries' warnings (only for commands that load them)."""
    from ..model.backbones.loaders import quiet_libraries as quiet

    quiet()


def device(requested: str | None) -> Any:
    """The explicit device, else this process's own GPU under torchrun (cuda:LOCAL_RANK), else cuda or cpu."""
    import torch

    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: this machine has no usable CUDA device (use --device cpu)")
        return dev
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        return PartialState(cpu=not torch.cuda.is_available()).device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def view_overrides(view: str | None) -> dict[str, Any]:
    """The config override of ``--view`` (none when not given)."""
    return {"data.eval_view": view} if view else {}


def load_model(checkpoint: str, requested_device: str | None, view: str | None = None) -> Any:
    from ..methods import load_detector

    model = load_detector(checkpoint, **view_overrides(view))
    return model.to(device(requested_device)).eval().enable_fast_path()


def image_size(model: Any, override: int | None) -> int | None:
    """The older single-view loader size: the override, else the checkpoint's data.image_size; None (the default)
    reads two views of each file at the model's own sizes."""
    return override or model.cfg.data.image_size


def init_dist_if_launched() -> None:
    """Under torchrun / accelerate launch, join the process group (gloo on CPU, nccl on GPU)."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # joins torch.distributed from the launcher's env


def check_mode(mode: str, calibration: Any) -> None:
    """Before the model loads: ``--mode cascade`` needs a fitted band (the library's own check)."""
    from ..engine.cascade import cascade_band_of

    cascade_band_of(calibration, mode)


def rank() -> int:
    from ..utils import rank_world

    return rank_world()[0]


def printable(path: str) -> str:
    """A path on one line: control characters (a newline in a file name) shown escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(path))
