"""One scoring call: image files, bytes or PIL images in, one record per image out.

Every user-facing scoring path (``synerdetect predict``, :func:`predict_paths`, the HTTP
service in :mod:`synerdetect.serve`) goes through :class:`Scorer`, so an image gets the same record wherever it is
scored::

    from synerdetect.engine.scoring import Scorer
    scorer = Scorer.from_checkpoint("runs/x/final", device="cpu", provenance=True)
    records = scorer.score(["a.jpg", open("b.png", "rb").read(), ("c.webp", data), pil_image])
    records = scorer.score_paths(paths, num_workers=4)  # a DataLoader, the same record builder

The pipeline is split in two so that a server can decode in many threads while one thread owns the model:

1. :meth:`Scorer.prepare` (a picklable :class:`Decoder`): read the bytes (byte cap), decode them with the project's
   robust loader rules (pixel cap checked from the header, EXIF orientation, alpha on white, 16-bit scaling; corrupt,
   truncated and non-image data become a per-image error), the evaluation transform, the sha256 of the bytes and,
   when enabled, the provenance evidence (:func:`synerdetect.provenance.read_provenance`);
2. :meth:`Scorer.forward`: one batched ``model.predict`` over the decodable images, the calibration
   (:func:`~synerdetect.engine.calibration.apply_calibration`) and the records, in input order.

A record (all keys always present; the score keys are None for an image with an error)::

    {"name", "sha256", "width", "height", "format",
     "label": "real" | "fake",                 # the Eq. 10 decision (logit > 0), never changed by anything
     "verdict": "real" | "fake" | "uncertain", # what a user reads (calibration band; see below for metadata)
     "verdict_source": "model" | "c2pa",
     "model_verdict",                          # the model's verdict, also when metadata decided "verdict"
     "prob_fake", "calibrated", "logit", "s_real", "s_fake",
     "decided_by": "full" | "perceptual",      # which path of Eq. 10 decided (mode full / perceptual / cascade)
     "perceptual_logit": float | None,         # the CLIP-branch margin that routed the image (cascade only)
     "sim_v_real", "sim_v_fake", "sim_n_real", "sim_n_fake",   # the two branch similarities of Eq. 10
     "map": dict | None,                       # with maps: peak [x, y, w, h], area_over_threshold, agreement
     "provenance": dict | None,                # read_provenance(...) when provenance is enabled, else None
     "timings": {"decode_ms", "provenance_ms", "score_ms", "batch_size"},
     "error": None | "one-line reason", "error_kind": None | one of ERROR_KINDS}

``trust_metadata`` (off by default): a *valid* C2PA manifest from a *trusted* signer
(:func:`~synerdetect.provenance.trusted_ai_decision`) decides ``verdict`` and the record says
``verdict_source: "c2pa"``; the scores, ``label`` and ``prob_fake`` stay the model's. Unsigned or untrusted metadata
never changes anything; it is only reported under ``provenance``.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import ShardedEvalSampler
from ..data.imageio import (
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    UnreadableImage,
    decode_open_file,
    open_regular_file,
    pil_to_rgb8,
)
from ..data.transforms import stack_images
from ..model.detector import view_transform
from ..provenance import load_trust_anchors
from ..utils import one_line, rank_world
from ..version import __version__
from .calibration import Calibration, apply_calibration, calibration_applies
from .cascade import cascade_band_of, cascade_predict
from .guarantees import promise_for, warn_scope
from .inference import gather
from .inputs import expand_inputs  # re-exported: predict's input expansion lives in a torch-free module
from .maps import batch_maps, map_field, thumbnail

__all__ = [
    "ERROR_KINDS",
    "SCORE_KEYS",
    "Decoder",
    "Prepared",
    "Scorer",
    "decode_image_bytes",
    "expand_inputs",
    "predict_paths",
    "error_kind",
    "provenance_summary",
]

#: Per-image error kinds (``record["error_kind"]``).
ERROR_KINDS = ("too_large", "too_many_pixels", "not_an_image", "empty", "corrupt", "unreadable")

#: The per-image numbers copied from ``model.predict``.
SCORE_KEYS = ("logit", "s_real", "s_fake", "sim_v_real", "sim_v_fake", "sim_n_real", "sim_n_fake")


class TooLarge(UnreadableImage):
    """An input over the byte cap (refused before it is read whole)."""


def error_kind(reason: str) -> str:
    """The kind of a per-image error, from the loader's one-line reason."""
    r = reason.lower()
    if r.startswith("file too large") or "byte limit" in r:
        return "too_large"
    if "decompression bomb" in r or "max_pixels" in r or "too many pixels" in r:
        return "too_many_pixels"
    if "not an image" in r or "cannot identify" in r or "unsupported format" in r:
        return "not_an_image"
    if r.startswith("empty"):
        return "empty"
    if "corrupt" in r or "truncated" in r or "cannot open" in r or "transform failed" in r or "decod" in r:
        return "corrupt"
    return "unreadable"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def decode_image_bytes(
    data: bytes,
    name: str = "<bytes>",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES,
) -> tuple[Image.Image, str]:
    """Bytes -> (8-bit RGB PIL image, container format) with exactly the rules of
    :func:`synerdetect.data.load_image_with_format` (which only takes paths); raises :class:`UnreadableImage`."""
    if not data:
        raise UnreadableImage(name, "empty file (0 bytes)")
    return decode_open_file(io.BytesIO(data), name, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)


def _pil_to_rgb(
    img: Image.Image, name: str, max_pixels: int | None, max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES
) -> Image.Image:
    """An in-memory PIL image -> a new 8-bit RGB image with the loader's rules (pixel and decode-bytes caps, EXIF
    orientation, modes)."""
    return pil_to_rgb8(img, name, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)


# ----------------------------------------------------------------------------- decoding
@dataclass
class Prepared:
    """One decoded input, ready for a forward pass (``image``), or the reason it cannot be scored (``error``)."""

    name: str
    index: int = 0
    image: torch.Tensor | None = None  # 3 x S x S in [0, 1]
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    provenance: dict[str, Any] | None = None
    error: str | None = None
    error_kind: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    thumbnail: np.ndarray | None = None  # <= 512 px RGB copy, kept when an evidence map is wanted
    want_map: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def _is_named_pair(item: Any) -> bool:
    """``(name, bytes | binary file | PIL image)``."""
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and (isinstance(item[1], bytes | bytearray | memoryview | Image.Image) or hasattr(item[1], "read"))
    )


def _named(item: Any, index: int) -> tuple[str, Any]:
    if _is_named_pair(item):
        return item[0], item[1]
    if isinstance(item, str | os.PathLike):
        return os.fspath(item), item
    if isinstance(item, Image.Image):
        return str(getattr(item, "filename", "") or f"image-{index}"), item
    name = getattr(item, "name", None)
    return (name if isinstance(name, str) and name else f"image-{index}"), item


@dataclass
class Decoder:
    """Input -> :class:`Prepared`: bytes read under ``max_bytes``, decoded under ``max_pixels``, evaluation
    transform (:func:`~synerdetect.model.detector.view_transform`), sha256 and (optional) provenance. Holds no
    model, so it pickles cheaply into DataLoader workers and runs in any number of threads."""

    transform: Callable[[Any], Any]
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_bytes: int | None = None
    provenance: bool = False
    trust_anchors_pem: str | None = None
    max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES
    maps: bool = False  # an evidence map is wanted: keep a thumbnail (the transform then makes tiles)

    def with_limits(self, *, max_pixels: int | None, max_bytes: int | None) -> Decoder:
        return replace(self, max_pixels=max_pixels, max_bytes=max_bytes)

    def read_bytes(self, name: str, source: Any) -> bytes:
        """The bytes of a path, bytes-like or binary file-like ``source``; :class:`UnreadableImage` otherwise."""
        cap = self.max_bytes
        if isinstance(source, bytes | bytearray | memoryview):
            if cap is not None and len(source) > cap:
                raise TooLarge(name, f"file too large: {_mb(len(source))} exceeds the {_mb(cap)} byte limit")
            return bytes(source)
        if isinstance(source, str | os.PathLike):
            with open_regular_file(source) as f:  # refuses FIFOs, devices, folders, broken links
                size = os.fstat(f.fileno()).st_size
                if cap is not None and size > cap:
                    raise TooLarge(name, f"file too large: {_mb(size)} exceeds the {_mb(cap)} byte limit")
                try:
                    return f.read()
                except OSError as e:
                    raise UnreadableImage(name, f"cannot read: {e.strerror or e}") from None
        if hasattr(source, "read"):
            try:
                data = source.read(-1 if cap is None else cap + 1)
            except Exception as e:  # noqa: BLE001
                raise UnreadableImage(name, f"cannot read stream: {one_line(e)}") from None
            if not isinstance(data, bytes | bytearray):
                raise UnreadableImage(name, "stream is not opened in binary mode")
            if cap is not None and len(data) > cap:
                raise TooLarge(name, f"file too large: more than the {_mb(cap)} byte limit")
            return bytes(data)
        raise UnreadableImage(
            name,
            f"unsupported input type {type(source).__name__} (give a path, bytes, a binary "
            "file object, (name, bytes) or a PIL image)",
        )

    def __call__(self, item: Any, index: int = 0) -> Prepared:
        name, source = _named(item, index)
        p = Prepared(name=name, index=index)
        t0 = time.perf_counter()
        data: bytes | None = None
        try:
            if isinstance(source, Image.Image):
                img = _pil_to_rgb(source, name, self.max_pixels, self.max_decode_bytes)
                fmt = str(source.format or "PIL")
            else:
                data = self.read_bytes(name, source)
                p.sha256 = hashlib.sha256(data).hexdigest()
                img, fmt = decode_image_bytes(
                    data, name, max_pixels=self.max_pixels, max_decode_bytes=self.max_decode_bytes
                )
            p.width, p.height, p.format = img.size[0], img.size[1], fmt
            if self.maps:
                p.thumbnail, p.want_map = thumbnail(img), True
            try:
                p.image = self.transform(img)
            except Exception as e:  # noqa: BLE001 - report per image, never crash a batch
                raise UnreadableImage(name, f"transform failed: {type(e).__name__}: {one_line(e)}") from None
        except UnreadableImage as e:
            p.error = one_line(e.reason)
            p.error_kind = "too_large" if isinstance(e, TooLarge) else error_kind(e.reason)
        p.timings["decode_ms"] = (time.perf_counter() - t0) * 1e3
        if self.provenance and p.ok:
            t1 = time.perf_counter()
            if data is None:
                p.provenance = {
                    "declared_ai": None,
                    "evidence": [],
                    "c2pa": None,
                    "error": "in-memory image: no file bytes to read provenance from",
                }
            else:
                from ..provenance import read_provenance

                p.provenance = read_provenance(data, trust_anchors=self.trust_anchors_pem)
            p.timings["provenance_ms"] = (time.perf_counter() - t1) * 1e3
        return p


class _PathDataset(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], decoder: Decoder):
        self.paths, self.decoder = list(paths), decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Prepared:
        return self.decoder(self.paths[i], i)


def _as_list(batch: list[Prepared]) -> list[Prepared]:
    return batch


# ----------------------------------------------------------------------------- provenance summary
def provenance_summary(prov: dict[str, Any] | None) -> dict[str, Any]:
    """Three flat fields for tables and CSV: ``declared_ai`` (True/False/None), ``c2pa`` (``"valid, trusted"``,
    ``"valid, untrusted"``, ``"invalid: codes"``, ``"error: ..."`` or None), ``provenance_sources`` (``"c2pa,xmp"``)."""
    if not prov:
        return {"declared_ai": None, "c2pa": None, "provenance_sources": ""}
    if prov.get("error"):
        return {"declared_ai": None, "c2pa": f"error: {prov['error']}", "provenance_sources": ""}
    info = prov.get("c2pa")
    state = None
    if isinstance(info, dict):
        state = str(info.get("validation_state"))
        if state == "valid":
            state = "valid, trusted" if info.get("trusted") else "valid, untrusted"
        else:
            fails = [f for f in info.get("failures") or [] if f != "signingCredential.untrusted"]
            state = f"{state}: {', '.join(fails)}" if fails else state
    sources = ",".join(dict.fromkeys(str(e.get("source", "?")) for e in prov.get("evidence") or []))
    return {"declared_ai": prov.get("declared_ai"), "c2pa": state, "provenance_sources": sources}


# ----------------------------------------------------------------------------- the scorer
class Scorer:
    """Decode, transform, batch, ``model.predict``, calibrate and report: see the module docstring.

    Args:
        model: a :class:`~synerdetect.model.Detector` in eval mode, on its device.
        image_size: the older single-view loader at this size (default: the checkpoint's ``data.image_size``; None
            reads two views of one decode at the model's own sizes, :func:`~synerdetect.model.detector.view_transform`).
        batch_size: images per forward pass in :meth:`score` / :meth:`score_paths`.
        calibration: a :class:`~synerdetect.engine.calibration.Calibration` (None: raw ``sigmoid(logit / tau)``).
        provenance: read the provenance evidence of every image into ``record["provenance"]``.
        trust_anchors: PEM bundle (path or text) of trusted C2PA roots (a bad one raises ``ValueError``).
        trust_metadata: let a valid manifest from a trusted signer decide ``verdict`` (implies ``provenance``).
        max_pixels: pixel cap per image (decompression bombs), checked from the header before decoding.
        max_bytes: byte cap per input (None: no cap).
    """

    def __init__(
        self,
        model: Any,
        *,
        image_size: int | None = None,
        batch_size: int = 16,
        calibration: Calibration | None = None,
        provenance: bool = False,
        trust_anchors: str | os.PathLike | None = None,
        trust_metadata: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_bytes: int | None = None,
        mode: str = "full",
        maps: bool | str | os.PathLike = False,
    ):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.cascade_band = cascade_band_of(calibration, mode)
        self.mode = mode
        self.model = model
        self.view = str(model.cfg.data.eval_view)  # the E_v view the logits come from (center | tiles)
        warn_scope(calibration, mode=mode, view=self.view)  # once: another view or mode than the calibration's
        self.image_size = image_size or model.cfg.data.image_size
        self.batch_size = int(batch_size)
        self.calibration = calibration
        self.trust_metadata = bool(trust_metadata)
        self.provenance = bool(provenance or trust_metadata)
        self.tau = float(model.mcfg.tau)
        self.checkpoint: str | None = None
        self.decoder = Decoder(
            view_transform(model.cfg, train=False, image_size=self.image_size),
            max_pixels=max_pixels,
            max_bytes=max_bytes,
            provenance=self.provenance,
            trust_anchors_pem=load_trust_anchors(trust_anchors),
        )
        # Evidence maps (engine/maps.py): True keeps the arrays in each record, a folder gets NAME.map.png/.npz;
        # the service asks per request through map_decoder.
        self.maps = maps
        self.map_decoder = None
        if mode == "full" and not self.image_size and hasattr(model, "predict_with_evidence"):
            tiled = view_transform(model.cfg, train=False, tiles=True)
            self.map_decoder = replace(self.decoder, transform=tiled, maps=True)
        if maps is not False:
            if self.map_decoder is None:
                raise ValueError("evidence maps need a SynerDetect checkpoint, mode full and no --image-size")
            self.decoder = self.map_decoder

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | os.PathLike, *, device: str | torch.device | None = None, **kwargs: Any
    ) -> Scorer:
        """Load a ``save_pretrained`` folder (and its ``calibration.json`` when present) onto ``device``
        (default: cuda when available, else cpu). ``checkpoint`` may also be a Hub repo id ``org/name[@revision]``
        (:func:`synerdetect.hub.resolve_checkpoint`)."""
        from ..hub import resolve_checkpoint
        from ..methods import load_detector

        checkpoint = resolve_checkpoint(checkpoint)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if "calibration" not in kwargs:
            kwargs["calibration"] = Calibration.load(Path(checkpoint))
        view = kwargs.pop("view", None)  # data.eval_view override: center | tiles
        model = load_detector(Path(checkpoint), **({"data.eval_view": view} if view else {}))
        model = model.to(torch.device(device)).eval().enable_fast_path()
        scorer = cls(model, **kwargs)
        scorer.checkpoint = str(checkpoint)
        return scorer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ the two stages
    def prepare(self, item: Any, index: int = 0) -> Prepared:
        """Stage 1 (thread-safe, no model): read, decode, transform, hash, provenance."""
        return self.decoder(item, index)

    def forward(self, prepared: Sequence[Prepared]) -> list[dict[str, Any]]:
        """Stage 2: one batched pass over the decodable items (``mode``: full Eq. 10, the perceptual branch, or the
        cascade within this batch), then one record per item, in order. Items with an error get their error
        record without touching the model."""
        ok = [p for p in prepared if p.ok]
        rows: dict[int, tuple[dict[str, Any], str]] = {}
        score_ms = None
        if ok:
            t0 = time.perf_counter()
            # items that want an evidence map (tiled views) are scored apart from the others
            for want in {p.want_map for p in ok}:
                ids = [k for k, p in enumerate(ok) if p.want_map == want]
                x = stack_images([ok[k].image for k in ids]).to(self.device)
                for k, out, how in self._outputs(x, ids, batch_size=len(ids), maps=want):
                    rows[k] = (out, how)
            score_ms = (time.perf_counter() - t0) * 1e3
        records, j = [], 0
        for p in prepared:
            if not p.ok:
                records.append(self.error_record(p))
                continue
            out, how = rows[j]
            records.append(self._record(p, out, how, score_ms, len(ok)))
            j += 1
        return records

    def _outputs(
        self, x: torch.Tensor, ids: list[Any], *, batch_size: int, maps: bool = False
    ) -> Iterator[tuple[Any, dict[str, Any], str]]:
        """``(id, model outputs as floats, decided_by)`` per image of the batch, by ``mode``; with ``maps`` the
        outputs also hold the image's :class:`~synerdetect.engine.maps.EvidenceMaps` under ``"_map"``."""
        if self.mode == "cascade":
            assert self.cascade_band is not None
            yield from cascade_predict(self.model, [(x, ids)], self.cascade_band, batch_size=batch_size)
            return
        evidence: list[Any] = []
        if maps:
            out, extra = self.model.predict_with_evidence(x, mode=self.mode, spatial=True)
            evidence = batch_maps(x, extra)
        else:
            out = self.model.predict(x, mode=self.mode)
        values = {k: v.detach().float().cpu().numpy() for k, v in out.items()}
        for i, ident in enumerate(ids):
            row: dict[str, Any] = {k: float(v[i]) for k, v in values.items()}
            if evidence:
                row["_map"] = evidence[i]
            yield ident, row, self.mode

    def _record(
        self, p: Prepared, out: dict[str, Any], decided_by: str, score_ms: float | None, batch_size: int
    ) -> dict[str, Any]:
        rec = self._base_record(p)
        rec.update({k: (None if np.isnan(out[k]) else out[k]) for k in SCORE_KEYS})
        # The calibration was fitted on full Eq. 10 logits: a perceptual-only decision keeps the raw softmax.
        use = self.calibration if calibration_applies(decided_by) else None
        cal = apply_calibration(np.array([out["logit"]]), self.tau, use)
        verdict = str(cal["verdict"][0])
        rec.update(
            label="fake" if out["logit"] > 0 else "real",
            verdict=verdict,
            model_verdict=verdict,
            verdict_source="model",
            decided_by=decided_by,
            prob_fake=float(cal["prob_fake"][0]),
            calibrated=bool(cal["calibrated"]),
        )
        if "perceptual_logit" in out:
            rec["perceptual_logit"] = out["perceptual_logit"]
        if "_map" in out:
            rec["map"] = map_field(out["_map"], p.name, p.thumbnail, self.maps)
        if self.trust_metadata:
            from ..provenance import trusted_ai_decision

            decided = trusted_ai_decision(p.provenance)
            if decided is not None:
                rec.update(verdict=decided, verdict_source="c2pa")
        rec["timings"].update(score_ms=score_ms, batch_size=batch_size)
        return rec

    def _base_record(self, p: Prepared) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "name": p.name,
            "sha256": p.sha256,
            "width": p.width,
            "height": p.height,
            "format": p.format,
            "label": None,
            "verdict": None,
            "verdict_source": None,
            "model_verdict": None,
            "prob_fake": None,
            "calibrated": None,
            "decided_by": None,
            "perceptual_logit": None,
        }
        rec.update(dict.fromkeys(SCORE_KEYS))
        rec.update(
            map=None,  # the evidence map's summary when one was asked for (engine/maps.py)
            provenance=p.provenance if self.provenance else None,
            timings=dict(p.timings),
            error=p.error,
            error_kind=p.error_kind,
        )
        return rec

    def error_record(self, p: Prepared) -> dict[str, Any]:
        """The record of an item that could not be scored (no model call)."""
        rec = self._base_record(p)
        rec["timings"].update(score_ms=None, batch_size=0)
        return rec

    # ------------------------------------------------------------------ conveniences
    def iter_score(self, items: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """Records of ``items`` in order, decoding as it goes: at most ``batch_size`` decoded images are held."""
        pending: list[Prepared] = []
        n_ok = 0
        for i, item in enumerate(items):
            p = self.prepare(item, i)
            pending.append(p)
            n_ok += p.ok
            if n_ok >= self.batch_size:
                yield from self.forward(pending)
                pending, n_ok = [], 0
        if pending:
            yield from self.forward(pending)

    def score(self, items: Any) -> list[dict[str, Any]]:
        """Records for paths, bytes, ``(name, bytes)``, binary file objects or PIL images (one item or a list)."""
        single = isinstance(items, str | bytes | bytearray | memoryview | os.PathLike | Image.Image)
        if single or _is_named_pair(items) or hasattr(items, "read"):
            items = [items]
        return list(self.iter_score(items))

    def score_paths(
        self,
        paths: Sequence[str],
        *,
        num_workers: int = 0,
        progress: bool = True,
        shard: bool = False,
        desc: str = "scoring",
    ) -> list[dict[str, Any]]:
        """Records for image files, decoded by a DataLoader (``num_workers`` processes) and scored by
        :meth:`forward`. ``shard``: only this rank's contiguous slice under torch.distributed / torchrun."""
        rank, world = rank_world() if shard else (0, 1)
        ds = _PathDataset(paths, self.decoder)
        sampler = ShardedEvalSampler(len(ds), num_replicas=world, rank=rank)
        loader = DataLoader(
            ds, batch_size=self.batch_size, sampler=sampler, collate_fn=_as_list, num_workers=num_workers
        )
        records: list[dict[str, Any]] = []
        with tqdm(total=len(sampler), desc=desc, unit="img", disable=not progress or rank != 0, leave=False) as bar:
            if self.mode != "cascade":
                for batch in loader:
                    records += self.forward(batch)
                    bar.update(len(batch))
                return records
            # The cascade regroups the images that need the inversion across loader batches (full batches for the
            # UNet); records are put back in input order at the end.
            assert self.cascade_band is not None

            def ok_batches() -> Iterator[tuple[torch.Tensor, list[Prepared]]]:
                for batch in loader:
                    records.extend(self.error_record(p) for p in batch if not p.ok)
                    ok = [p for p in batch if p.ok]
                    bar.update(len(batch))
                    if ok:
                        yield stack_images([p.image for p in ok if p.image is not None]).to(self.device), ok

            for p, out, how in cascade_predict(self.model, ok_batches(), self.cascade_band, batch_size=self.batch_size):
                records.append(self._record(p, out, how, None, self.batch_size))
        position = {str(path): i for i, path in enumerate(paths)}
        return sorted(records, key=lambda r: position.get(str(r["name"]), len(position)))

    def warmup(self) -> float:
        """One forward pass on a grey image (lazy initialisation, compilation); returns its milliseconds."""
        t0 = time.perf_counter()
        side = self.image_size or max(self.model.mcfg.clip_size, self.model.mcfg.sd_size)
        p = Prepared(name="warmup", image=self.decoder.transform(Image.new("RGB", (side, side), (128, 128, 128))))
        self.forward([p])
        return (time.perf_counter() - t0) * 1e3

    def promise(self) -> str:
        """The certified promise that covers this scorer's verdicts (its mode and view), or why there is none."""
        return promise_for(self.calibration, mode=self.mode, view=self.view)

    def info(self) -> dict[str, Any]:
        """What is loaded: preset, base models, loader size, tau, calibration, package version, device."""
        cfg = self.model.cfg
        m = self.model.mcfg
        return {
            "package_version": __version__,
            "checkpoint": self.checkpoint,
            "preset": getattr(cfg, "preset", None),
            "base_models": {
                "clip": str(getattr(self.model, "clip_source", None) or m.clip),
                "sd": str(getattr(self.model, "sd_source", None) or m.sd),
            },
            "image_size": self.image_size,
            "clip_size": m.clip_size,
            "sd_size": m.sd_size,
            "inversion_steps": m.inversion_steps,
            "dtype": m.dtype,
            "tau": self.tau,
            "device": str(self.device),
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "view": self.view,
            "provenance": self.provenance,
            "trust_metadata": self.trust_metadata,
            "max_pixels": self.decoder.max_pixels,
            "max_bytes": self.decoder.max_bytes,
            "maps": self.map_decoder is not None,  # evidence maps on request (POST /v1/detect?maps=true)
        }


def predict_paths(
    model,
    paths: Sequence[str],
    *,
    image_size: int | None,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    calibration=None,
    provenance: bool = False,
    trust_anchors=None,
    trust_metadata: bool = False,
    mode: str = "full",
    maps: str | os.PathLike | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Score unlabelled files through :class:`~synerdetect.engine.scoring.Scorer`: one dict per scored image (its
    record with ``path`` for ``name``: label, verdict, prob_fake, calibrated, logit, s_real, s_fake, the branch
    similarities, sha256, provenance, timings) and ``(path, reason)`` per file that could not be scored. Under
    torch.distributed each rank scores its own slice and the results are gathered."""
    scorer = Scorer(
        model,
        image_size=image_size,
        batch_size=batch_size,
        calibration=calibration,
        provenance=provenance,
        trust_anchors=trust_anchors,
        trust_metadata=trust_metadata,
        mode=mode,
        maps=maps if maps is not None else False,  # a folder: NAME.map.png / .npz written there
    )
    rows: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    for rec in scorer.score_paths(paths, num_workers=num_workers, progress=progress, shard=True, desc="predict"):
        if rec["error"] is not None:
            errors.append((rec["name"], rec["error"]))
            continue
        row = {"path": rec["name"]}
        row.update((k, v) for k, v in rec.items() if k not in ("name", "error", "error_kind"))
        rows.append(row)
    return gather(rows), gather(errors)
