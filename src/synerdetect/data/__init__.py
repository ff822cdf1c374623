"""Data loading for SynerDetect: robust image I/O, dataset layouts, transforms,
datasets, samplers and a dataset checker.

Typical use::

    from synerdetect.data import (discover, ImageDataset, TrainTransform, collate,
                                  BalancedBatchSampler)
    samples = discover("/data/CNNDetection", split="train")
    ds = ImageDataset(samples, TrainTransform(224), seed=0)
    sampler = BalancedBatchSampler([s.label for s in samples], 64, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=8)
    for epoch in range(n_epochs):
        ds.set_epoch(epoch); sampler.set_epoch(epoch)
        for batch in loader: ...
"""

from typing import TYPE_CHECKING, Any

from .check import check_dataset, format_check_report
from .imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    UnreadableImage,
    image_format,
    is_image_file,
    load_image,
    load_image_with_format,
    open_regular_file,
)
from .layouts import (
    LAYOUTS,
    AmbiguousLayoutError,
    LayoutError,
    ManifestError,
    Sample,
    count_by_generator,
    detect_layout,
    discover,
    generators,
    load_labelled,
    parse_label,
)

if TYPE_CHECKING:
    from .datasets import ImageDataset, collate
    from .sampling import BalancedBatchSampler, ShardedEvalSampler
    from .transforms import (
        MAX_RESIZE_ASPECT,
        EvalTransform,
        TrainTransform,
        Views,
        ViewTransform,
        pil_to_tensor,
        stack_images,
    )

#: The torch-based parts, imported on first use so that `synerdetect data check` and `inspect` never load torch.
_LAZY = {
    "ImageDataset": "datasets",
    "collate": "datasets",
    "BalancedBatchSampler": "sampling",
    "ShardedEvalSampler": "sampling",
    "MAX_RESIZE_ASPECT": "transforms",
    "EvalTransform": "transforms",
    "TrainTransform": "transforms",
    "Views": "transforms",
    "ViewTransform": "transforms",
    "pil_to_tensor": "transforms",
    "stack_images": "transforms",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Views",
    "ViewTransform",
    "stack_images",
    "AmbiguousLayoutError",
    "BalancedBatchSampler",
    "DEFAULT_MAX_PIXELS",
    "EvalTransform",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "LAYOUTS",
    "LayoutError",
    "MAX_RESIZE_ASPECT",
    "ManifestError",
    "Sample",
    "ShardedEvalSampler",
    "TrainTransform",
    "UnreadableImage",
    "check_dataset",
    "collate",
    "count_by_generator",
    "detect_layout",
    "discover",
    "format_check_report",
    "generators",
    "image_format",
    "is_image_file",
    "load_image",
    "load_image_with_format",
    "load_labelled",
    "open_regular_file",
    "parse_label",
    "pil_to_tensor",
]
