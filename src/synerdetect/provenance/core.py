"""What an image file declares about its own origin.

:func:`read_provenance` gathers *declarations*, not detections:

* ``"c2pa"``: C2PA content credentials (signed; validated with ``c2pa-python``, see :mod:`.c2pa_manifest`);
* ``"xmp"``: IPTC ``Iptc4xmpExt:DigitalSourceType`` and the IPTC AI properties in XMP;
* ``"png_text"``: generator parameters in PNG text chunks (A1111, ComfyUI, NovelAI, InvokeAI, Fooocus...);
* ``"exif"``: EXIF ``Software`` / ``Make`` / ``Model`` / ``UserComment``; ``"jpeg_comment"``: JPEG COM.

Result (a JSON-serialisable dict)::

    {"declared_ai": True | False | None,
     "evidence": [{"source", "field", "value", "kind": "ai" | "capture" | "info", ["generator"],
                   ["manifest_valid" (c2pa only)]}, ...],
     "c2pa": None | {"validation_state": "valid" | "invalid" | "unverified", "failures": [codes],
                     "trusted": bool, "digital_source_type", "digital_source_types", "claim_generator",
                     "actions", "active_manifest", "signer", "library_state"},
     ["truncated": True, "truncated_reason": "why; why"],  # only when some evidence was cut (see below)
     ["error": "one-line reason"]}

Bounded work and output: every file gets a work budget (:class:`~.metadata.Budget`: metadata bytes inflated,
parsed or scanned) and caps on XMP packets, depth, elements and properties, PNG chunks, C2PA manifests and lists,
evidence items (``MAX_EVIDENCE_ITEMS``) and the length of every string kept (``MAX_VALUE_CHARS``). Whatever is cut,
the result says ``"truncated": True`` and why. ``declared_ai`` is decided on all the evidence read, and when the
list is cut the ``"ai"`` and ``"capture"`` items are kept before ``"info"`` ones, so the items behind the decision
stay in the list.

Rules for ``declared_ai``:

* True when any evidence item has kind ``"ai"``; False when none does and at least one *counting* item has
  kind ``"capture"``; None when nothing is declared (absence of metadata proves nothing: it is stripped by
  almost every upload pipeline).
* Invalid C2PA manifests (tampered asset, broken signature, unreadable store; ``validation_state ==
  "invalid"``) are never reported as clean declarations: their evidence items carry ``manifest_valid:
  False`` and ``c2pa.validation_state`` says ``"invalid"`` with the failing codes. The rule is
  asymmetric. A *capture* claim inside an invalid manifest does not count (forging a capture claim is the
  attack that matters). An *AI* claim inside an invalid manifest still counts toward ``declared_ai``: it is
  self-incriminating, and editing the pixels after signing does not turn generated pixels into captured ones.
* A manifest whose signer does not chain to the configured trust anchors is ``"valid"`` with ``trusted:
  False`` (the SDK reports ``signingCredential.untrusted`` among ``failures``); it counts like any other
  unsigned declaration. With no anchors configured, every signer is untrusted.
* Unsigned metadata (XMP, PNG text, EXIF) counts as declared, and can be forged or stripped by anyone.

:func:`trusted_ai_decision` is the only place a declaration may decide a verdict (the opt-in
``--trust-metadata`` mode): a *valid* manifest from a *trusted* signer whose digital source types include an
AI type gives ``"fake"``, a capture type (and no AI type) gives ``"real"``; anything else gives None.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from synerdetect.imageformats import open_image
from synerdetect.provenance.c2pa_manifest import read_c2pa
from synerdetect.provenance.metadata import Budget, collect_metadata
from synerdetect.provenance.vocab import classify_source_type
from synerdetect.utils import one_line

MAX_INPUT_BYTES = 50 * 1024 * 1024  # larger inputs are refused, never read whole
MAX_EVIDENCE_ITEMS = 100  # evidence items kept per file (each value at most MAX_VALUE_CHARS characters)

Source = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


class _InputError(Exception):
    """Bad input: reported in the result's "error", never raised to the caller."""


def error_result(reason: str) -> dict[str, Any]:
    return {"declared_ai": None, "evidence": [], "c2pa": None, "error": one_line(reason)}


def load_trust_anchors(trust_anchors: str | os.PathLike | None) -> str | None:
    """PEM text of the trust anchors: ``trust_anchors`` is a path to a PEM bundle, or PEM text itself.

    Raises ``ValueError`` (a configuration error, unlike a bad image) when the file cannot be read or
    holds no parseable X.509 certificate.
    """
    if trust_anchors is None:
        return None
    if isinstance(trust_anchors, str) and "-----BEGIN" in trust_anchors:
        pem, origin = trust_anchors, "trust anchors"
    else:
        path = Path(trust_anchors)
        try:
            if path.stat().st_size > MAX_INPUT_BYTES:
                raise ValueError(f"trust anchors file {path} is larger than {MAX_INPUT_BYTES} bytes")
            pem = path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise ValueError(f"cannot read trust anchors file {path}: {exc.strerror or exc}") from exc
        origin = f"trust anchors file {path}"
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - cryptography ships with c2pa-python
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError(f"{origin} holds no PEM certificate") from None
        return pem
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii", errors="replace"))
    except ValueError as exc:
        raise ValueError(f"{origin} holds no valid PEM certificate: {one_line(exc)}") from exc
    if not certs:
        raise ValueError(f"{origin} holds no PEM certificate")
    return pem


def _read_bounded(source: Source) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > MAX_INPUT_BYTES:
            raise _InputError(f"input is larger than the {MAX_INPUT_BYTES // (1024 * 1024)} MB limit")
        return data
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            if not path.is_file():
                raise _InputError(f"not a file: {path}" if path.exists() else f"file not found: {path}")
            if path.stat().st_size > MAX_INPUT_BYTES:
                raise _InputError(f"file is larger than the {MAX_INPUT_BYTES // (1024 * 1024)} MB limit")
            with path.open("rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise _InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    elif hasattr(source, "read"):
        try:
            data = source.read(MAX_INPUT_BYTES + 1)
        except Exception as exc:
            raise _InputError(f"cannot read stream: {exc}") from exc
        if not isinstance(data, bytes | bytearray):
            raise _InputError("stream is not opened in binary mode")
        data = bytes(data)
    else:
        raise _InputError(f"unsupported source type: {type(source).__name__}")
    if len(data) > MAX_INPUT_BYTES:
        raise _InputError(f"input is larger than the {MAX_INPUT_BYTES // (1024 * 1024)} MB limit")
    return data


def _open_image(data: bytes) -> tuple[Any, str | None]:
    """The Pillow image (header parsed, pixels not decoded), or None and why."""
    from PIL import UnidentifiedImageError

    if not data:
        return None, "empty input"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = open_image(io.BytesIO(data))  # the loaders' formats only (no PostScript, ...)
        return img, None
    except UnidentifiedImageError:
        return None, "not a recognised image"
    except Exception as exc:  # noqa: BLE001 - DecompressionBombError, truncated headers, any plugin's errors
        return None, f"unreadable image: {type(exc).__name__}: {exc}"


def decide_declared_ai(evidence: list[dict[str, Any]]) -> bool | None:
    """Apply the module's rules (see the module docstring) to a list of evidence items."""
    if any(item.get("kind") == "ai" for item in evidence):
        return True
    if any(item.get("kind") == "capture" and item.get("manifest_valid", True) for item in evidence):
        return False
    return None


def read_provenance(source: Source, *, trust_anchors: str | os.PathLike | None = None) -> dict[str, Any]:
    """What ``source`` (a path, bytes or a binary file-like) declares about its origin.

    Never raises for bad input: a missing, oversized, corrupt or non-image input gives a result with
    ``"error"``. ``trust_anchors`` (path to a PEM bundle, or PEM text) configures the C2PA trust list;
    a bad trust anchors file raises ``ValueError``.
    """
    anchors_pem = load_trust_anchors(trust_anchors)
    try:
        data = _read_bounded(source)
    except _InputError as exc:
        return error_result(str(exc))
    try:
        return _analyse(data, anchors_pem)
    except Exception as exc:  # noqa: BLE001 - a parser bug must not take a batch down: report it per file
        return error_result(f"provenance read failed: {type(exc).__name__}: {exc}")


def cap_evidence(evidence: list[dict[str, Any]], limit: int, work: Budget) -> list[dict[str, Any]]:
    """At most ``limit`` items in their order, the ``"ai"`` / ``"capture"`` items first (they decide)."""
    if len(evidence) <= limit:
        return evidence
    work.cut(f"{len(evidence)} evidence items: {limit} kept")
    decisive = [i for i, item in enumerate(evidence) if item.get("kind") in ("ai", "capture")]
    keep = set(decisive[:limit])
    for i in range(len(evidence)):
        if len(keep) >= limit:
            break
        keep.add(i)
    return [evidence[i] for i in sorted(keep)]


def _analyse(data: bytes, anchors_pem: str | None) -> dict[str, Any]:
    work = Budget()
    img, image_error = _open_image(data)
    try:
        c2pa_info, evidence = read_c2pa(data, anchors_pem, work)
        evidence = evidence + collect_metadata(data, img, work)
    finally:
        if img is not None:
            img.close()
    if img is None and c2pa_info is None and not evidence:
        return error_result(image_error or "not a recognised image")
    declared_ai = decide_declared_ai(evidence)
    kept = cap_evidence(evidence, MAX_EVIDENCE_ITEMS, work)
    result: dict[str, Any] = {"declared_ai": declared_ai, "evidence": kept, "c2pa": c2pa_info}
    if work.reasons:
        result.update(truncated=True, truncated_reason=one_line("; ".join(work.reasons), 1000))
    return result


def trusted_ai_decision(prov: dict[str, Any] | None) -> str | None:
    """``"fake"`` / ``"real"`` from a valid manifest of a trusted signer, else None (for ``--trust-metadata``)."""
    c2pa_info = (prov or {}).get("c2pa")
    if not isinstance(c2pa_info, dict):
        return None
    if c2pa_info.get("validation_state") != "valid" or c2pa_info.get("trusted") is not True:
        return None
    kinds = {classify_source_type(t) for t in c2pa_info.get("digital_source_types") or []}
    if not kinds and c2pa_info.get("digital_source_type"):
        kinds = {classify_source_type(c2pa_info["digital_source_type"])}
    if "ai" in kinds:
        return "fake"
    if "capture" in kinds:
        return "real"
    return None
