"""Offline demo: bundled real photos + synthetic generator stand-ins (no downloads)."""

from .synthetic import (
    FAMILIES,
    FAMILY_IMITATES,
    FAMILY_KIND,
    build_demo_benchmark,
    describe,
    real_photo_pool,
    sample_real,
)

__all__ = [
    "FAMILIES",
    "FAMILY_IMITATES",
    "FAMILY_KIND",
    "build_demo_benchmark",
    "describe",
    "real_photo_pool",
    "sample_real",
]
