"""The feature cache for the DDIM inversion: the on-disk store (``store``), the sharded build (``build``) and
the policy that decides when training reads or rebuilds it (``policy``). See docs/cache.md."""

from .build import build_cache, compute_noise_pixels
from .policy import POLICIES, CachedFeatures, CachePlan, CacheSchedule, policy_wants_cache
from .store import (
    CACHE_FORMAT,
    CachedBatch,
    CachedItem,
    CacheError,
    Entry,
    FeatureCache,
    content_hash,
    feature_key,
    remove_stale_keys,
    stores_noise_pixels,
)

__all__ = [
    "CACHE_FORMAT",
    "POLICIES",
    "CacheError",
    "CachePlan",
    "CacheSchedule",
    "CachedBatch",
    "CachedFeatures",
    "CachedItem",
    "Entry",
    "FeatureCache",
    "build_cache",
    "compute_noise_pixels",
    "content_hash",
    "feature_key",
    "policy_wants_cache",
    "remove_stale_keys",
    "stores_noise_pixels",
]
