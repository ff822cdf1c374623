"""Feature cache: VAE latents, DDIM-inverted latents and E_d inputs, computed once and read back by key.

The DDIM inversion is about 93 % of the cost of one image (docs/performance.md). This module stores, per image,

- ``latents``: the VAE latent z0 of the image's deterministic evaluation view at ``model.sd_size``;
- ``inverted``: ẑ_T, the DDIM inversion (``model.inversion_steps``, at ``model.inversion_size``) conditioned
  on the label-agnostic prompt of the model that built the cache (docs/method.md),
- ``noise_pixels`` (optional, default on; only for ``noise_encoder_input="vae_decode"``, i.e. no trainable noise
  adapter): E_d's input ``model.noise_pixels(inverted)`` (frozen VAE decode -> clamp -> resize to ``clip_size``
  -> CLIP normalisation), stored as float16. It is a pure function of ``inverted`` and frozen weights, and the VAE
  decode it saves dominates a cached training step at paper scale,

on disk, and gives them back when the *feature key* matches.

Layout (see ``docs/cache.md``)::

    <root>/<feature_key>/info.json                 what went into the key (human readable)
    <root>/<feature_key>/shards/*.safetensors      one shard per ``put_many`` call (one build batch)
    <root>/<feature_key>/index-rank<r>.jsonl       append-only log written by rank r during a build
    <root>/<feature_key>/index.json                merged index (written by rank 0 at the end of a build)
    <root>/<feature_key>/done-rank<r>              "rank r finished this job" markers (removed after the merge)

An entry is keyed by the sha256 of the image file's bytes. The *effective* index is ``index.json`` with the
``index-rank*.jsonl`` logs applied on top, so entries written by a build that was killed are found by the next
build (which then only computes what is missing) and by readers before any merge happened.

Guarantees:

- **Atomic writes.** A shard is written to a hidden temporary file, fsynced, then ``os.replace``-d into place;
  only then are its index records appended (one ``write`` call, flushed and fsynced). A crash leaves at worst an
  unreferenced shard or temporary file (removed by the next merge), never an index record pointing at a partial
  shard. A torn last log line is ignored.
- **Corruption is detected.** Each entry records the sha256 of its stored tensors; it is checked on the first read
  in a process (and by every build before an entry is skipped). A shard that cannot be opened or an entry whose
  checksum does not match is reported (``logging`` warning + ``FeatureCache.problems``), dropped from the index
  (a ``drop`` record), and recomputed by the next build.
- **Resume.** A build skips every entry already present and valid.
- **Scale-out.** ``build_cache`` runs under torchrun / ``accelerate launch`` (or any launcher that sets
  ``RANK``/``WORLD_SIZE``); rank r takes ``sorted(samples)[r::world_size]``; the shared filesystem is the only
  coordination (per-rank logs, ``done`` markers, one merge by rank 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..config import ConfigError
from ..model.detector import CachedBatch  # noqa: F401  (re-exported: the type lookups return)
from ..utils import atomic_write_bytes as _atomic_write
from ..utils import atomic_write_json

log = logging.getLogger(__name__)

CACHE_FORMAT = "synerdetect-feature-cache/2"  # /2: optional float16 ``noise_pixels`` per entry
# Bump when the way latents / inverted latents are computed changes (invalidates every key).
ALGORITHM_VERSION = 1
INDEX_NAME = "index.json"
INFO_NAME = "info.json"
SHARD_DIR = "shards"
NOISE_PIXELS_DTYPE = torch.float16  # E_d inputs are stored in half precision (294 KB/image at 224 px)


class CacheError(RuntimeError):
    """The cache folder is unusable or a sharded build could not be completed."""


# ============================================================================ hashing
def content_hash(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """sha256 (hex) of the file's bytes, read in chunks. A FIFO, socket or device raises OSError (never waits)."""
    from ..data.imageio import UnreadableImage, open_regular_file

    h = hashlib.sha256()
    try:
        f = open_regular_file(path)
    except UnreadableImage as e:
        raise OSError(e.reason) from None  # the callers report OSError as an unreadable file
    with f:
        while True:
            b = f.read(chunk_size)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes()


def _checksum(latents: torch.Tensor, inverted: torch.Tensor, noise_pixels: torch.Tensor | None = None) -> str:
    h = hashlib.sha256()
    for t in (latents, inverted) if noise_pixels is None else (latents, inverted, noise_pixels):
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _sampled_fingerprint(named: Iterable[tuple[str, torch.Tensor]], samples_per_tensor: int = 64) -> str:
    """Cheap, exact, device-independent fingerprint of (frozen) weights: every tensor's name, shape and dtype,
    plus the exact values of ``samples_per_tensor`` evenly spaced elements of each."""
    h = hashlib.sha256()
    for name, t in named:
        name = name.replace("_orig_mod.", "")  # torch.compile wrappers do not change the weights
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        flat = t.reshape(-1)
        n = flat.numel()
        if n == 0:
            continue
        k = min(n, samples_per_tensor)
        idx = torch.arange(k, dtype=torch.long) * (n - 1) // max(k - 1, 1)
        h.update(_tensor_bytes(flat[idx.to(flat.device)].float()))
    return h.hexdigest()[:32]


def conditioning_fingerprint(model) -> str:
    """sha256 of the exact bytes of the trainable weights the inversion condition depends on.

    The label-agnostic prompt depends on the E_v LoRA, the prompt context and tuner, and the projector into SD's
    space: every trainable tensor except those of E_d and of the noise adapter (which act after the inversion).
    A model whose inversion is unconditional (the reference methods: SD's empty prompt) depends on none of them."""
    if not getattr(model, "conditioned_inversion", True):
        return "unconditional (SD's empty prompt)"
    return model.trainable_fingerprint(skip=("E_d.", "adapter."))


def _jsonable_config(cfg: Any) -> dict:
    return {k: v for k, v in dict(cfg).items() if not str(k).startswith("_")}


def stores_noise_pixels(model, store_noise_pixels: bool = True) -> bool:
    """Whether a cache built with ``store_noise_pixels`` holds E_d inputs for ``model``: only without a trainable
    noise adapter (``noise_encoder_input="vae_decode"``); with an adapter E_d's input depends on trained weights."""
    return bool(store_noise_pixels) and getattr(model, "adapter", None) is None


_DESCRIPTIVE = ("clip_source", "sd_source", "image_view", "conditioning")


def feature_key(model, *, image_size: int | None, store_noise_pixels: bool = True) -> tuple[str, dict]:
    """(key, info): a 24-hex-digit key of everything that changes the cached tensors, and the readable dict it
    was computed from (stored in ``info.json`` / ``index.json``).

    ``store_noise_pixels`` (see :func:`stores_noise_pixels`) is part of the key: a cache with and one without
    the E_d inputs live in different folders, so every entry of a key has the same tensors.

    Identity of the frozen models is *what the weights are* (architecture configs + a sampled exact fingerprint of
    the UNet, VAE, CLIP towers and SD's empty-prompt context), not where they were loaded from: moving a model
    folder keeps its cache valid. The source strings are recorded in ``info`` but not hashed."""
    from ..model.detector import view_transform

    m = model.mcfg
    if not getattr(model, "uses_sd", True):
        raise ConfigError(f"method {model.method_name!r} runs no DDIM inversion: it has no feature cache")
    frozen_clip = model.frozen_clip_tensors()
    info: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "algorithm_version": ALGORITHM_VERSION,
        "clip_source": str(model.clip_source),
        "sd_source": str(model.sd_source),
        "unet_config": _jsonable_config(model.unet.config),
        "vae_config": _jsonable_config(model.vae.config),
        "scheduler_config": _jsonable_config(model.scheduler_config),
        "weights": {
            "unet": _sampled_fingerprint(model.unet.named_parameters()),
            "vae": _sampled_fingerprint(model.vae.named_parameters()),
            "clip_frozen": _sampled_fingerprint(frozen_clip),
            "sd_empty_context": _sampled_fingerprint([("empty_context", model.empty_context)], 4096),
        },
        "inversion_steps": int(m.inversion_steps),
        "sd_size": int(m.sd_size),
        "inversion_size": int(m.inversion_size or m.sd_size),
        "clip_size": int(m.clip_size),
        "image_size": int(image_size) if image_size else None,
        # hashed: the geometry of what the entries were computed from (two views of one decode, or one view)
        "input_transform": repr(view_transform(model.cfg, train=False, image_size=image_size)),
        "image_view": "the evaluation transform above: by default E_v's view is a centre crop of the image's own "
        "pixels at clip_size and the SD view the image resized to sd_size; with image_size one resized view",
        "dtype": str(m.dtype),
        "class_names": list(m.class_names),
        "conditioning": "label-agnostic prompt (docs/method.md) of the building model"
        if getattr(model, "conditioned_inversion", True)
        else "SD's empty prompt (a reference method's unconditional inversion)",
        "conditioning_fingerprint": conditioning_fingerprint(model),
        "stored_dtype": "float32",
        "noise_pixels": _noise_pixels_info(model, store_noise_pixels),
    }
    # The key hashes data only (versions, configs, fingerprints, sizes, dtypes): the prose descriptions kept in
    # ``info`` for humans can be reworded without invalidating any cache. A change of what is computed bumps
    # ALGORITHM_VERSION instead.
    hashed = {k: v for k, v in info.items() if k not in _DESCRIPTIVE}
    hashed["noise_pixels"] = {k: v for k, v in info["noise_pixels"].items() if k != "computation"}
    key = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return key, info


def _noise_pixels_info(model, store_noise_pixels: bool) -> dict:
    if not stores_noise_pixels(model, store_noise_pixels):
        return {"stored": False}
    return {
        "stored": True,
        "dtype": str(NOISE_PIXELS_DTYPE).replace("torch.", ""),
        "shape": [3, int(model.mcfg.clip_size), int(model.mcfg.clip_size)],
        "computation": "model.noise_pixels(inverted): VAE decode (compute dtype), clamp(-1, 1), [0, 1], bilinear "
        "antialiased resize to clip_size, CLIP mean/std normalisation; stored as float16",
        "clip_mean": [float(v) for v in model.clip_mean.reshape(-1).tolist()],
        "clip_std": [float(v) for v in model.clip_std.reshape(-1).tolist()],
    }


# ============================================================================ the cache
@dataclass
class Entry:
    shard: str
    checksum: str
    latents: list[int]
    inverted: list[int]
    dtype: str = "float32"
    path: str | None = None  # the first file seen with this content (for humans)
    noise_pixels: list[int] | None = None  # shape of the stored E_d input (None: not stored)
    noise_pixels_dtype: str | None = None

    def to_dict(self) -> dict:
        d = {
            "shard": self.shard,
            "checksum": self.checksum,
            "latents": self.latents,
            "inverted": self.inverted,
            "dtype": self.dtype,
            "path": self.path,
        }
        if self.noise_pixels is not None:
            d["noise_pixels"], d["noise_pixels_dtype"] = self.noise_pixels, self.noise_pixels_dtype
        return d


class CachedItem(NamedTuple):
    """One entry as read from the cache (CPU): latents, inverted (float32), noise_pixels (float16 or None)."""

    latents: torch.Tensor
    inverted: torch.Tensor
    noise_pixels: torch.Tensor | None = None


class FeatureCache:
    """The entries of one feature key: ``<root>/<key>/``.

    ``get`` reads (checksums are verified on the first read of an entry in this process; a bad entry is reported
    and dropped), ``put_many`` writes one shard atomically and appends its records to this rank's log, ``merge``
    folds every rank's log into ``index.json``. Reading never creates folders.
    """

    def __init__(
        self, root: str | os.PathLike, key: str, *, rank: int = 0, info: dict | None = None, max_open_shards: int = 32
    ):
        self.root = Path(root)
        self.key = str(key)
        self.dir = self.root / self.key
        self.shard_dir = self.dir / SHARD_DIR
        self.rank = int(rank)
        self.info = info
        self.max_open_shards = int(max_open_shards)
        self.problems: list[str] = []  # human-readable reports of corrupt / missing entries
        self._entries: dict[str, Entry] | None = None
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._verified: set[str] = set()
        self._log_checked = False

    @classmethod
    def for_model(
        cls, root: str | os.PathLike, model, *, image_size: int | None, rank: int = 0, store_noise_pixels: bool = True
    ) -> FeatureCache:
        key, info = feature_key(model, image_size=image_size, store_noise_pixels=store_noise_pixels)
        return cls(root, key, rank=rank, info=info)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.dir)!r}, entries={len(self)})"

    # ------------------------------------------------------------------ index
    @property
    def log_path(self) -> Path:
        return self.dir / f"index-rank{self.rank}.jsonl"

    def _log_files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("index-rank*.jsonl"))

    def _read_index(self) -> tuple[dict[str, Entry], list[Path]]:
        entries: dict[str, Entry] = {}
        idx = self.dir / INDEX_NAME
        if idx.is_file():
            try:
                doc = json.loads(idx.read_text())
                for h, e in doc.get("entries", {}).items():
                    entries[h] = Entry(**e)
            except (ValueError, TypeError) as e:
                msg = f"feature cache index {idx} is unreadable ({e}); its entries will be rebuilt"
                log.warning(msg)
                self.problems.append(msg)
        logs = self._log_files()
        for lp in logs:
            try:
                lines = lp.read_bytes().split(b"\n")
            except OSError as e:  # pragma: no cover - vanished between glob and read
                log.warning("cannot read %s: %s", lp, e)
                continue
            for line in lines:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    op = rec.get("op", "put")
                    h = rec["hash"]
                    if op == "put":
                        entries[h] = Entry(
                            shard=rec["shard"],
                            checksum=rec["checksum"],
                            latents=rec["latents"],
                            inverted=rec["inverted"],
                            dtype=rec.get("dtype", "float32"),
                            path=rec.get("path"),
                            noise_pixels=rec.get("noise_pixels"),
                            noise_pixels_dtype=rec.get("noise_pixels_dtype"),
                        )
                    elif op == "drop":
                        # Drop only the entry the reader saw fail: a rebuilt entry lives in another shard.
                        if h in entries and entries[h].shard == rec.get("shard"):
                            del entries[h]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line of a killed writer
        return entries, logs

    @property
    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries, _ = self._read_index()
        return self._entries

    def reload(self) -> FeatureCache:
        """Re-read the index from disk (e.g. after another process built or merged)."""
        self._entries = None
        self._verified.clear()
        self.close()
        return self

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, h: str) -> bool:
        return h in self.entries

    def hashes(self) -> list[str]:
        return list(self.entries)

    def _append_log(self, records: list[dict]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        lp = self.log_path
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        if not self._log_checked:
            # A killed writer may have left a torn last line: start ours on a fresh line.
            if lp.is_file() and lp.stat().st_size > 0:
                with open(lp, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        data = b"\n" + data
            self._log_checked = True
        with open(lp, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _ensure_info(self) -> None:
        p = self.dir / INFO_NAME
        if self.info is not None and not p.is_file():
            atomic_write_json(p, {"key": self.key, **self.info}, indent=1, sort_keys=True)

    # ------------------------------------------------------------------ read
    def _handle(self, shard: str):
        from safetensors import safe_open

        f = self._handles.get(shard)
        if f is not None:
            self._handles.move_to_end(shard)
            return f
        f = safe_open(str(self.shard_dir / shard), framework="pt", device="cpu")
        self._handles[shard] = f
        while len(self._handles) > self.max_open_shards:
            self._handles.popitem(last=False)
        return f

    def close(self) -> None:
        self._handles.clear()

    def drop(self, h: str, reason: str) -> None:
        """Report a bad entry, remove it from the index (a ``drop`` record) so the next build recomputes it."""
        e = self.entries.pop(h, None)
        if e is None:
            return
        msg = (
            f"feature cache entry {h[:16]} (shard {e.shard}, image {e.path}) is unusable: {reason}; "
            "dropped, it will be recomputed"
        )
        log.warning(msg)
        self.problems.append(msg)
        self._verified.discard(h)
        self._handles.pop(e.shard, None)
        try:
            self._append_log([{"op": "drop", "hash": h, "shard": e.shard, "reason": reason}])
        except OSError as err:  # a read-only cache still works; the build will find it again
            log.warning("could not record the drop in %s: %s", self.log_path, err)

    def _read_entry(self, h: str, e: Entry) -> CachedItem:
        f = self._handle(e.shard)
        lat = f.get_tensor(f"{h}.latents")
        inv = f.get_tensor(f"{h}.inverted")
        npx = f.get_tensor(f"{h}.noise_pixels") if e.noise_pixels is not None else None
        if h not in self._verified:
            if list(lat.shape) != list(e.latents) or list(inv.shape) != list(e.inverted):
                raise ValueError(f"shape {tuple(lat.shape)}/{tuple(inv.shape)} != indexed {e.latents}/{e.inverted}")
            if npx is not None and (
                list(npx.shape) != list(e.noise_pixels or [])
                or str(npx.dtype).replace("torch.", "") != e.noise_pixels_dtype
            ):
                raise ValueError(
                    f"noise_pixels {tuple(npx.shape)} {npx.dtype} != indexed {e.noise_pixels} {e.noise_pixels_dtype}"
                )
            got = _checksum(lat, inv, npx)
            if got != e.checksum:
                raise ValueError(f"checksum mismatch (stored {e.checksum[:12]}, read {got[:12]})")
            self._verified.add(h)
        return CachedItem(lat, inv, npx)

    def get(self, hashes: Sequence[str]) -> list[CachedItem | None]:
        """``CachedItem(latents, inverted, noise_pixels)`` (CPU; float32, float32, float16 or None) or ``None``
        per hash. A corrupt or missing entry is reported, dropped and returned as ``None``."""
        out: list[CachedItem | None] = []
        entries = self.entries
        for h in hashes:
            e = entries.get(h)
            if e is None:
                out.append(None)
                continue
            try:
                out.append(self._read_entry(h, e))
            except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ValueError...
                self.drop(h, f"{type(err).__name__}: {err}")
                out.append(None)
        return out

    def verify(self, hashes: Sequence[str] | None = None) -> list[str]:
        """Check the checksums of ``hashes`` (default: all), shard by shard, without keeping the tensors (one
        entry in memory at a time); returns the dropped ones."""
        entries = self.entries
        hs = list(entries) if hashes is None else [h for h in hashes if h in entries]
        hs.sort(key=lambda h: entries[h].shard)
        bad = []
        for h in hs:
            self._verified.discard(h)
            if self.get([h])[0] is None:
                bad.append(h)
        return bad

    def __getstate__(self) -> dict:  # picklable (e.g. into DataLoader workers): open shard handles stay behind
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state

    # ------------------------------------------------------------------ write
    def put_many(
        self,
        hashes: Sequence[str],
        latents: torch.Tensor,
        inverted: torch.Tensor,
        paths: Sequence[str] | None = None,
        *,
        noise_pixels: torch.Tensor | None = None,
    ) -> str:
        """Store one batch as one new shard (atomically), then append its index records. Returns the shard name.

        ``noise_pixels`` (B x 3 x clip_size x clip_size, E_d's input) is stored as float16; when this cache knows
        its ``info`` it must be given exactly when the key says the E_d inputs are stored."""
        if len(hashes) != latents.shape[0] or len(hashes) != inverted.shape[0]:
            raise ValueError(f"{len(hashes)} hashes for {latents.shape[0]} latents / {inverted.shape[0]} inverted")
        if noise_pixels is not None and noise_pixels.shape[0] != len(hashes):
            raise ValueError(f"{len(hashes)} hashes for {noise_pixels.shape[0]} noise_pixels")
        if len(set(hashes)) != len(hashes):
            raise ValueError("put_many got the same content hash twice in one batch")
        want = self.info.get("noise_pixels", {}).get("stored") if self.info else None
        if want is not None and bool(want) != (noise_pixels is not None):
            raise ValueError(
                f"feature key {self.key} {'stores' if want else 'does not store'} noise_pixels, "
                f"put_many got {'none' if noise_pixels is None else 'some'}"
            )
        from safetensors.torch import save

        lat = latents.detach().float().cpu()
        inv = inverted.detach().float().cpu()
        npx = None if noise_pixels is None else noise_pixels.detach().to("cpu", NOISE_PIXELS_DTYPE)
        np_dtype = str(NOISE_PIXELS_DTYPE).replace("torch.", "")
        tensors: dict[str, torch.Tensor] = {}
        records: list[dict[str, Any]] = []
        name = f"r{self.rank:04d}-{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:6]}.safetensors"
        for i, h in enumerate(hashes):
            li, ii = lat[i].clone().contiguous(), inv[i].clone().contiguous()
            tensors[f"{h}.latents"], tensors[f"{h}.inverted"] = li, ii
            rec = {
                "op": "put",
                "hash": h,
                "shard": name,
                "latents": list(li.shape),
                "inverted": list(ii.shape),
                "dtype": "float32",
                "path": None if paths is None else str(paths[i]),
            }
            ni = None
            if npx is not None:
                ni = npx[i].clone().contiguous()
                tensors[f"{h}.noise_pixels"] = ni
                rec["noise_pixels"], rec["noise_pixels_dtype"] = list(ni.shape), np_dtype
            rec["checksum"] = _checksum(li, ii, ni)
            records.append(rec)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_info()
        data = save(tensors, metadata={"key": self.key, "format": CACHE_FORMAT})
        tensors.clear()
        _atomic_write(self.shard_dir / name, data)
        del data
        self._append_log(records)  # only after the shard is durable
        entries = self.entries
        for r in records:
            entries[r["hash"]] = Entry(
                shard=name,
                checksum=r["checksum"],
                latents=r["latents"],
                inverted=r["inverted"],
                path=r["path"],
                noise_pixels=r.get("noise_pixels"),
                noise_pixels_dtype=r.get("noise_pixels_dtype"),
            )
        return name

    # ------------------------------------------------------------------ merge
    def merge(self, *, remove_logs: bool = True, collect_garbage: bool = True) -> int:
        """Fold ``index.json`` + every rank's log into a new ``index.json`` (atomic). With ``collect_garbage``,
        leftover temporary files and shards no entry refers to are deleted: call it only when no build of this
        key is running (``build_cache`` calls it on rank 0 once every rank is done). Returns the entry count."""
        entries, logs = self._read_index()
        doc = {
            "format": CACHE_FORMAT,
            "key": self.key,
            "info": self.info or self._stored_info(),
            "n_entries": len(entries),
            "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "entries": {h: e.to_dict() for h, e in sorted(entries.items())},
        }
        atomic_write_json(self.dir / INDEX_NAME, doc, indent=1, sort_keys=True)
        if remove_logs:
            for lp in logs:
                try:
                    lp.unlink()
                except OSError:
                    pass
        if collect_garbage:
            for p in self.dir.glob(".*.tmp"):  # a merge or marker write that was killed
                try:
                    p.unlink()
                except OSError:
                    pass
        if collect_garbage and self.shard_dir.is_dir():
            used = {e.shard for e in entries.values()}
            for p in self.shard_dir.iterdir():
                if p.name.endswith(".tmp") or (p.suffix == ".safetensors" and p.name not in used):
                    try:
                        p.unlink()
                    except OSError:
                        pass
        self._entries = entries
        self._log_checked = False
        return len(entries)

    def _stored_info(self) -> dict | None:
        p = self.dir / INFO_NAME
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None


def remove_stale_keys(root: str | os.PathLike, keep: Iterable[str]) -> list[str]:
    """Delete every key folder under ``root`` except ``keep`` (e.g. after a ``cached-refresh`` rebuild).
    Only folders that look like cache keys (they hold ``shards/`` or an index) are touched."""
    import shutil

    keep = set(keep)
    removed: list[str] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for d in root.iterdir():
        if d.is_dir() and d.name not in keep and ((d / SHARD_DIR).is_dir() or (d / INDEX_NAME).is_file()):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


# ============================================================================ building
