"""Feature cache: VAE latents, DDIM-inverted latents and E_d inputs, computed once and read back by key.

The DDIM inversion is about 93 % of the cost of one image (DESIGN.md 5). This module stores, per image,

- ``latents``: the VAE latent z0 of the image's deterministic evaluation view at ``model.sd_size``;
- ``inverted``: ẑ_T, the DDIM inversion (``model.inversion_steps``, at ``model.inversion_size``) conditioned
  on the label-agnostic prompt of the model that built the cache (DESIGN.md 2.1),
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import torch

log = logging.getLogger(__name__)

CACHE_FORMAT = "synerdetect-feature-cache/2"  # /2: optional float16 ``noise_pixels`` per entry
# Bump when the way latents / inverted latents are computed changes (invalidates every key).
ALGORITHM_VERSION = 1
POLICIES = ("online", "cached-fixed", "cached-refresh")
INDEX_NAME = "index.json"
INFO_NAME = "info.json"
SHARD_DIR = "shards"
NOISE_PIXELS_DTYPE = torch.float16  # E_d inputs are stored in half precision (294 KB/image at 224 px)


class CacheError(RuntimeError):
    """The cache folder is unusable or a sharded build could not be completed."""


# ============================================================================ hashing
def content_hash(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """sha256 (hex) of the file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
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
    space: every trainable tensor except those of E_d and of the noise adapter (which act after the inversion)."""
    return model.trainable_fingerprint(skip=("E_d.", "adapter."))


def _jsonable_config(cfg: Any) -> dict:
    return {k: v for k, v in dict(cfg).items() if not str(k).startswith("_")}


def stores_noise_pixels(model, store_noise_pixels: bool = True) -> bool:
    """Whether a cache built with ``store_noise_pixels`` holds E_d inputs for ``model``: only without a trainable
    noise adapter (``noise_encoder_input="vae_decode"``); with an adapter E_d's input depends on trained weights."""
    return bool(store_noise_pixels) and getattr(model, "adapter", None) is None


def feature_key(model, *, image_size: int, store_noise_pixels: bool = True) -> tuple[str, dict]:
    """(key, info): a 24-hex-digit key of everything that changes the cached tensors, and the readable dict it
    was computed from (stored in ``info.json`` / ``index.json``).

    ``store_noise_pixels`` (see :func:`stores_noise_pixels`) is part of the key: a cache with and one without
    the E_d inputs live in different folders, so every entry of a key has the same tensors.

    Identity of the frozen models is *what the weights are* (architecture configs + a sampled exact fingerprint of
    the UNet, VAE, CLIP towers and SD's empty-prompt context), not where they were loaded from: moving a model
    folder keeps its cache valid. The source strings are recorded in ``info`` but not hashed."""
    m = model.mcfg
    frozen_clip = [(n, p) for n, p in model.E_v.named_parameters() if not p.requires_grad]
    frozen_clip += list(model.text.named_parameters()) + list(model.text.named_buffers())
    info = {
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
        "image_size": int(image_size),
        "image_view": "EvalTransform(image_size): shorter side to image_size (bicubic), centre crop",
        "dtype": str(m.dtype),
        "class_names": list(m.class_names),
        "conditioning": "label-agnostic prompt (DESIGN.md 2.1) of the building model",
        "conditioning_fingerprint": conditioning_fingerprint(model),
        "stored_dtype": "float32",
        "noise_pixels": _noise_pixels_info(model, store_noise_pixels),
    }
    hashed = {k: v for k, v in info.items() if k not in ("clip_source", "sd_source")}
    key = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return key, info


def _noise_pixels_info(model, store_noise_pixels: bool) -> dict:
    if not stores_noise_pixels(model, store_noise_pixels):
        return {"stored": False}
    return {"stored": True, "dtype": str(NOISE_PIXELS_DTYPE).replace("torch.", ""),
            "shape": [3, int(model.mcfg.clip_size), int(model.mcfg.clip_size)],
            "computation": "model.noise_pixels(inverted): VAE decode (compute dtype), clamp(-1, 1), [0, 1], bilinear "
                           "antialiased resize to clip_size, CLIP mean/std normalisation; stored as float16",
            "clip_mean": [float(v) for v in model.clip_mean.reshape(-1).tolist()],
            "clip_std": [float(v) for v in model.clip_std.reshape(-1).tolist()]}


# ============================================================================ small file helpers
def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_bytes(f, data: bytes) -> None:
    """Write ``data`` to an open binary file (a separate function so tests can simulate a crash mid-write)."""
    f.write(data)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` atomically: hidden temporary file in the same folder, fsync, ``os.replace``, fsync folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            _write_bytes(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _atomic_write_json(path: Path, doc: Any) -> None:
    _atomic_write(path, (json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n").encode())


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
        d = {"shard": self.shard, "checksum": self.checksum, "latents": self.latents,
             "inverted": self.inverted, "dtype": self.dtype, "path": self.path}
        if self.noise_pixels is not None:
            d["noise_pixels"], d["noise_pixels_dtype"] = self.noise_pixels, self.noise_pixels_dtype
        return d


class CachedItem(NamedTuple):
    """One entry as read from the cache (CPU): latents, inverted (float32), noise_pixels (float16 or None)."""

    latents: torch.Tensor
    inverted: torch.Tensor
    noise_pixels: torch.Tensor | None = None


class CachedBatch(NamedTuple):
    """A batch from :meth:`CachedFeatures.lookup`, on the model's device: ``latents`` and ``inverted`` (float32)
    and ``noise_pixels`` (E_d input, float16, B x 3 x clip_size x clip_size; None when the cache does not hold
    it). ``hit[0]``/``hit[1]`` still index latents/inverted."""

    latents: torch.Tensor
    inverted: torch.Tensor
    noise_pixels: torch.Tensor | None = None


class FeatureCache:
    """The entries of one feature key: ``<root>/<key>/``.

    ``get`` reads (checksums are verified on the first read of an entry in this process; a bad entry is reported
    and dropped), ``put_many`` writes one shard atomically and appends its records to this rank's log, ``merge``
    folds every rank's log into ``index.json``. Reading never creates folders.
    """

    def __init__(self, root: str | os.PathLike, key: str, *, rank: int = 0, info: dict | None = None,
                 max_open_shards: int = 32):
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
    def for_model(cls, root: str | os.PathLike, model, *, image_size: int, rank: int = 0,
                  store_noise_pixels: bool = True) -> "FeatureCache":
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
                        entries[h] = Entry(shard=rec["shard"], checksum=rec["checksum"], latents=rec["latents"],
                                           inverted=rec["inverted"], dtype=rec.get("dtype", "float32"),
                                           path=rec.get("path"), noise_pixels=rec.get("noise_pixels"),
                                           noise_pixels_dtype=rec.get("noise_pixels_dtype"))
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

    def reload(self) -> "FeatureCache":
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
            _atomic_write_json(p, {"key": self.key, **self.info})

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
        msg = f"feature cache entry {h[:16]} (shard {e.shard}, image {e.path}) is unusable: {reason}; " \
              "dropped, it will be recomputed"
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
            if npx is not None and (list(npx.shape) != list(e.noise_pixels)
                                    or str(npx.dtype).replace("torch.", "") != e.noise_pixels_dtype):
                raise ValueError(f"noise_pixels {tuple(npx.shape)} {npx.dtype} != indexed {e.noise_pixels} "
                                 f"{e.noise_pixels_dtype}")
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

    def verify(self, hashes: Sequence[str] | None = None, chunk: int = 256) -> list[str]:
        """Check the checksums of ``hashes`` (default: all), shard by shard, without keeping the tensors (one
        entry in memory at a time); returns the dropped ones. ``chunk`` is kept for compatibility."""
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
    def put_many(self, hashes: Sequence[str], latents: torch.Tensor, inverted: torch.Tensor,
                 paths: Sequence[str] | None = None, *, noise_pixels: torch.Tensor | None = None) -> str:
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
            raise ValueError(f"feature key {self.key} {'stores' if want else 'does not store'} noise_pixels, "
                             f"put_many got {'none' if noise_pixels is None else 'some'}")
        from safetensors.torch import save

        lat = latents.detach().float().cpu()
        inv = inverted.detach().float().cpu()
        npx = None if noise_pixels is None else noise_pixels.detach().to("cpu", NOISE_PIXELS_DTYPE)
        np_dtype = str(NOISE_PIXELS_DTYPE).replace("torch.", "")
        tensors: dict[str, torch.Tensor] = {}
        records = []
        name = f"r{self.rank:04d}-{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:6]}.safetensors"
        for i, h in enumerate(hashes):
            li, ii = lat[i].clone().contiguous(), inv[i].clone().contiguous()
            tensors[f"{h}.latents"], tensors[f"{h}.inverted"] = li, ii
            rec = {"op": "put", "hash": h, "shard": name, "latents": list(li.shape), "inverted": list(ii.shape),
                   "dtype": "float32", "path": None if paths is None else str(paths[i])}
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
            entries[r["hash"]] = Entry(shard=name, checksum=r["checksum"], latents=r["latents"],
                                       inverted=r["inverted"], path=r["path"], noise_pixels=r.get("noise_pixels"),
                                       noise_pixels_dtype=r.get("noise_pixels_dtype"))
        return name

    # ------------------------------------------------------------------ merge
    def merge(self, *, remove_logs: bool = True, collect_garbage: bool = True) -> int:
        """Fold ``index.json`` + every rank's log into a new ``index.json`` (atomic). With ``collect_garbage``,
        leftover temporary files and shards no entry refers to are deleted: call it only when no build of this
        key is running (``build_cache`` calls it on rank 0 once every rank is done). Returns the entry count."""
        entries, logs = self._read_index()
        doc = {"format": CACHE_FORMAT, "key": self.key, "info": self.info or self._stored_info(),
               "n_entries": len(entries), "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "entries": {h: e.to_dict() for h, e in sorted(entries.items())}}
        _atomic_write_json(self.dir / INDEX_NAME, doc)
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
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for d in root.iterdir():
        if d.is_dir() and d.name not in keep and ((d / SHARD_DIR).is_dir() or (d / INDEX_NAME).is_file()):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


# ============================================================================ building
def dist_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Explicit values, else torch.distributed if initialised, else RANK / WORLD_SIZE (torchrun, accelerate)."""
    if rank is not None and world_size is not None:
        r, w = int(rank), int(world_size)
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        r = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
        w = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"invalid rank {r} / world size {w}")
    return r, w


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def compute_features(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the cache stores for a batch of [0, 1] images: ``(latents at sd_size, inverted latents)``, the
    inversion conditioned on the model's label-agnostic prompt. Exactly the computation of
    ``SynerDetect.features`` when no cached tensors are given."""
    m = model.mcfg
    x_clip = model.clip_pixels(images)
    z_v = model.encode_visual(x_clip)
    cond = model.agnostic_prompt(model.prompts(z_v, x_clip))
    latents = model.encode_latents(images)
    inv_size = m.inversion_size or m.sd_size
    inv_latents = latents if inv_size == m.sd_size else model.encode_latents(images, inv_size)
    inverted = model.invert(inv_latents, cond)
    return latents, inverted


@torch.no_grad()
def compute_noise_pixels(model, inverted: torch.Tensor, chunk_size: int | None = 16) -> torch.Tensor:
    """What the cache stores as E_d input: ``model.noise_pixels(inverted)`` in float16 (B x 3 x clip x clip).
    Only defined without a noise adapter (see :func:`stores_noise_pixels`). The VAE decode runs on at most
    ``chunk_size`` latents at a time (its activations at ``sd_size`` are the peak memory of a build)."""
    if getattr(model, "adapter", None) is not None:
        raise ValueError("noise_pixels depend on the trainable noise adapter; they are not cached")
    n = inverted.shape[0]
    step = n if not chunk_size or chunk_size >= n else int(chunk_size)
    return torch.cat([model.noise_pixels(inverted[i:i + step]).to(NOISE_PIXELS_DTYPE) for i in range(0, n, step)])


def _set_threads(num_threads: int | None, world: int, device: torch.device) -> int | None:
    if num_threads is None:
        if device.type != "cpu" or world <= 1 or os.environ.get("OMP_NUM_THREADS"):
            return None
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        num_threads = max(1, (os.cpu_count() or 1) // max(local, 1))
    torch.set_num_threads(int(num_threads))
    return int(num_threads)


def _wait_for_ranks(d: Path, world: int, job: str, timeout: float, poll: float) -> list[dict]:
    t0 = time.monotonic()
    while True:
        found, missing = [], []
        for r in range(world):
            p = d / f"done-rank{r}"
            try:
                doc = json.loads(p.read_text())
                if doc.get("job") == job:
                    found.append(doc)
                    continue
            except (OSError, ValueError):
                pass
            missing.append(r)
        if not missing:
            return found
        waited = time.monotonic() - t0
        if waited > timeout:
            raise CacheError(
                f"rank 0 waited {waited:.0f} s for ranks {missing} to finish their slice of the cache build in {d} "
                f"(no matching done-rank<r> marker). Did they crash or run with other data/config? Their finished "
                f"batches are kept: re-run the same build (it resumes), or merge what exists with "
                f"FeatureCache(root, key).merge().")
        time.sleep(poll)


def build_cache(model, samples: Sequence, cache_root: str | os.PathLike, *, image_size: int, batch_size: int = 16,
                rank: int | None = None, world_size: int | None = None, progress: bool = True,
                num_threads: int | None = None, verify: bool = True, wait_timeout: float = 6 * 3600.0,
                poll_interval: float = 0.5, store_noise_pixels: bool = True) -> dict:
    """Compute and store ``(latents, inverted)`` for every readable image of ``samples`` (objects with ``.path``,
    e.g. :class:`synerdetect.data.Sample`, or plain paths) under ``cache_root/<feature_key>/``.

    With ``store_noise_pixels`` (default) and no noise adapter, E_d's input ``model.noise_pixels(inverted)`` is
    stored too (float16, 3 x clip_size^2 x 2 bytes per image: ~294 KB at 224 px), so that a cached step skips
    the VAE decode; the flag is part of the feature key (readers pass the same value to :class:`CachedFeatures`).

    Rank ``r`` of ``world_size`` (see :func:`dist_rank_world`) handles ``sorted(paths)[r::world_size]``; entries
    already present (and, with ``verify``, whose checksum still matches) are skipped, so a killed build resumes.
    Unreadable images are reported (path and reason) and skipped. Each rank writes ``done-rank<r>``; rank 0 waits
    for all of them (up to ``wait_timeout`` s) and merges the index. On CPU with several processes each process
    uses ``num_threads`` threads (default: cores / local processes, unless OMP_NUM_THREADS is set).

    Returns stats of this rank: n_total, n_computed, n_skipped_cached, n_unreadable, unreadable [(path, reason)],
    n_duplicates, seconds, per_image_seconds, key, dir, rank, world_size; rank 0 adds n_indexed and ``all_ranks``.
    """
    from .data.imageio import UnreadableImage, load_image
    from .data.transforms import EvalTransform

    t_start, t0, cpu0 = time.time(), time.perf_counter(), time.process_time()
    rank, world = dist_rank_world(rank, world_size)
    device = _model_device(model)
    threads = _set_threads(num_threads, world, device)
    key, info = feature_key(model, image_size=image_size, store_noise_pixels=store_noise_pixels)
    with_npx = bool(info["noise_pixels"]["stored"])
    cache = FeatureCache(cache_root, key, rank=rank, info=info)
    cache.dir.mkdir(parents=True, exist_ok=True)
    marker = cache.dir / f"done-rank{rank}"
    try:
        marker.unlink()
    except FileNotFoundError:
        pass

    paths = sorted({os.fspath(getattr(s, "path", s)) for s in samples})
    job = hashlib.sha256(json.dumps([key, world, paths]).encode()).hexdigest()[:24]
    mine = paths[rank::world]
    transform = EvalTransform(image_size)
    stats: dict[str, Any] = {"key": key, "dir": str(cache.dir), "rank": rank, "world_size": world,
                             "threads": threads, "n_total": len(mine), "n_total_all_ranks": len(paths),
                             "n_computed": 0, "n_skipped_cached": 0, "n_unreadable": 0, "n_duplicates": 0,
                             "unreadable": [], "n_dropped_corrupt": 0}

    def unreadable(path: str, reason: str) -> None:
        log.warning("cache build: skipping unreadable image %s: %s", path, reason)
        stats["unreadable"].append((path, reason))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc=f"feature cache (rank {rank}/{world})", unit="img", dynamic_ncols=True)

    was_training = model.training
    model.eval()
    try:
        # 1) content hashes; what is cached already (verified) is skipped.
        todo: list[tuple[str, str]] = []
        seen: set[str] = set()
        present: list[str] = []
        for p in mine:
            try:
                h = content_hash(p)
            except OSError as e:
                unreadable(p, f"cannot read file: {type(e).__name__}: {e}")
                if bar is not None:
                    bar.update(1)
                continue
            if h in seen:
                stats["n_duplicates"] += 1
                if bar is not None:
                    bar.update(1)
                continue
            seen.add(h)
            e = cache.entries.get(h)
            if e is not None and (e.noise_pixels is not None) == with_npx:  # else (written by hand): recompute
                present.append(h)
            todo.append((p, h))
        bad: set[str] = set()
        if verify and present:
            before = len(cache.problems)
            bad = set(cache.verify(present))
            stats["n_dropped_corrupt"] = len(cache.problems) - before
        cached = {h for h in present if h not in bad}
        stats["n_skipped_cached"] = len(cached)
        todo = [(p, h) for p, h in todo if h not in cached]
        if bar is not None:
            bar.update(len(cached))

        # 2) compute the rest, one shard per batch.
        t_compute = time.perf_counter()
        batch: list[tuple[str, str, torch.Tensor]] = []

        def flush() -> None:
            if not batch:
                return
            x = torch.stack([b[2] for b in batch]).to(device)
            latents, inverted = compute_features(model, x)
            npx = compute_noise_pixels(model, inverted) if with_npx else None
            cache.put_many([b[1] for b in batch], latents, inverted, paths=[b[0] for b in batch], noise_pixels=npx)
            del x, latents, inverted, npx
            stats["n_computed"] += len(batch)
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

        for p, h in todo:
            try:
                img = load_image(p)
                x = transform(img)
            except UnreadableImage as e:
                unreadable(p, e.reason)
                if bar is not None:
                    bar.update(1)
                continue
            except Exception as e:  # noqa: BLE001 - a transform failure is reported, not fatal
                unreadable(p, f"transform failed: {type(e).__name__}: {e}")
                if bar is not None:
                    bar.update(1)
                continue
            batch.append((p, h, x))
            if len(batch) >= batch_size:
                flush()
        flush()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        compute_s = time.perf_counter() - t_compute
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()

    stats["n_unreadable"] = len(stats["unreadable"])
    stats["seconds"] = time.perf_counter() - t0
    stats["compute_seconds"] = compute_s
    stats["cpu_seconds"] = time.process_time() - cpu0  # this process's CPU time (all its threads)
    stats["per_image_seconds"] = compute_s / stats["n_computed"] if stats["n_computed"] else 0.0
    stats["t_start"], stats["t_end"] = t_start, time.time()
    _atomic_write_json(marker, {"job": job, "rank": rank, "stats": stats})

    if rank == 0:
        docs = _wait_for_ranks(cache.dir, world, job, wait_timeout, poll_interval) if world > 1 else \
            [{"stats": stats}]
        cache.info = info
        stats["n_indexed"] = cache.merge()
        for r in range(world):
            try:
                (cache.dir / f"done-rank{r}").unlink()
            except FileNotFoundError:
                pass
        all_stats = [d["stats"] for d in docs]
        stats["all_ranks"] = {
            k: sum(s[k] for s in all_stats)
            for k in ("n_total", "n_computed", "n_skipped_cached", "n_unreadable", "n_duplicates")
        }
        stats["all_ranks"]["unreadable"] = [u for s in all_stats for u in s["unreadable"]]
        stats["all_ranks"]["t_start"] = min(s["t_start"] for s in all_stats)
        stats["all_ranks"]["t_end"] = max(s["t_end"] for s in all_stats)
        stats["wall_seconds"] = time.perf_counter() - t0
    return stats


# ============================================================================ reading during training / evaluation
class CachePlan(NamedTuple):
    """What a cache policy does at one epoch: ``read`` inverted latents from the cache, ``build`` (or refresh)
    the cache with the current model before the epoch."""

    read: bool
    build: bool


def policy_wants_cache(policy: str, epoch: int, refresh_every: int = 1) -> CachePlan:
    """``(read, build)`` for ``epoch`` (0-based) under a ``cache.policy``.

    - ``online``: never reads or builds; the inversion runs every step with the current prompt (exact, slow).
    - ``cached-fixed``: reads every epoch; builds once, before epoch 0, with the initial (or loaded) model's
      prompt, and keeps that key for the whole run (store it in the checkpoint to resume with the same key).
      The inverted latents then lag the prompt the model learns.
    - ``cached-refresh``: reads every epoch; rebuilds with the current prompt before every epoch with
      ``epoch % refresh_every == 0`` (epoch 0 included) - a new key each time, then ``CachedFeatures.refresh``.
      Costs one inversion pass over the data per refresh.

    Unpack it: ``read, build = policy_wants_cache(...)`` (a tuple is always truthy)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown cache policy {policy!r}; one of {POLICIES}")
    if refresh_every < 1:
        raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
    if policy == "online":
        return CachePlan(False, False)
    if policy == "cached-fixed":
        return CachePlan(True, epoch == 0)
    return CachePlan(True, epoch % refresh_every == 0)


class CachedFeatures:
    """Batch look-up for the trainer / evaluator.

    ``CachedFeatures(cache_root_or_FeatureCache, model, image_size)`` computes the feature key of ``model`` *now*
    (the key stays fixed until :meth:`refresh`; pass ``key=`` to pin one, e.g. the key a resumed ``cached-fixed``
    run started with). ``store_noise_pixels`` must match the build's (both default to True). ``lookup(paths)``
    returns a :class:`CachedBatch` ``(latents, inverted, noise_pixels)`` on the model's device when every item
    of the batch is cached, else ``None`` (then compute online); ``noise_pixels`` (float16) is None when the
    cache does not hold them. Content hashes are memoised per (path, size, mtime)."""

    def __init__(self, cache: "FeatureCache | str | os.PathLike", model, image_size: int, *, key: str | None = None,
                 rank: int | None = None, store_noise_pixels: bool = True):
        self.model = model
        self.image_size = int(image_size)
        self.store_noise_pixels = bool(store_noise_pixels)
        if isinstance(cache, FeatureCache):
            self.root, r = cache.root, cache.rank
        else:
            self.root, r = Path(cache), 0
        self.rank = r if rank is None else int(rank)
        self._hash_memo: dict[str, tuple[int, int, str]] = {}
        self.hits = self.misses = 0
        self.refresh(key=key)

    def refresh(self, model=None, *, key: str | None = None) -> str:
        """Recompute the key from the (current) model, or use ``key``, and re-read the index. Returns the key."""
        if model is not None:
            self.model = model
        if key is None:
            key, info = feature_key(self.model, image_size=self.image_size,
                                    store_noise_pixels=self.store_noise_pixels)
        else:
            info = None
        self.cache = FeatureCache(self.root, key, rank=self.rank, info=info)
        return key

    @property
    def key(self) -> str:
        return self.cache.key

    def _hash(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        memo = self._hash_memo.get(path)
        if memo is not None and memo[0] == st.st_size and memo[1] == st.st_mtime_ns:
            return memo[2]
        try:
            h = content_hash(path)
        except OSError:
            return None
        self._hash_memo[path] = (st.st_size, st.st_mtime_ns, h)
        return h

    def lookup(self, paths: Sequence[str]) -> CachedBatch | None:
        hashes = [self._hash(os.fspath(p)) for p in paths]
        if not paths or any(h is None or h not in self.cache for h in hashes):
            self.misses += 1
            return None
        got = self.cache.get(hashes)  # type: ignore[arg-type]
        if any(g is None for g in got):
            self.misses += 1
            return None
        self.hits += 1
        dev = _model_device(self.model)

        def batch(ts: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(ts).to(dev, non_blocking=True)

        lat = batch([g.latents for g in got])
        inv = batch([g.inverted for g in got])
        npx = None
        if all(g.noise_pixels is not None for g in got):  # kept in float16 (half the transfer); E_d casts it
            npx = batch([g.noise_pixels for g in got])
        got.clear()
        return CachedBatch(lat, inv, npx)
