"""C2PA content credentials, read with the official ``c2pa-python`` bindings (``c2pa.Reader``).

Verification runs offline: remote manifests and OCSP responses are never fetched. Trust is judged only
against the anchors the caller passes (a PEM bundle, set as the SDK's ``trust.trust_anchors`` setting
through ``c2pa.Context``); with none, the SDK has no anchors and every signer is reported untrusted.
"""

from __future__ import annotations

import io
import json
from collections import deque
from typing import Any

from synerdetect.provenance.metadata import Budget, clip
from synerdetect.provenance.vocab import classify_source_type
from synerdetect.utils import one_line

MAX_MANIFESTS = 32  # ingredient manifests followed per asset
MAX_SOURCE_TYPES = 64  # digital source types kept per manifest
MAX_ACTIONS = 100  # action names kept for the active manifest
MAX_WALK_NODES = 2000  # JSON nodes visited per assertion when looking for DigitalSourceType keys
MAX_FAILURES = 64  # validation failure codes kept (each at most 200 characters)

# Failure codes about the signer's trust, not about the integrity of the manifest.
TRUST_ONLY_CODES = frozenset({"signingCredential.untrusted", "signingCredential.ocsp.skipped"})


def has_c2pa_markers(data: bytes) -> bool:
    """Whether the bytes plausibly hold a JUMBF C2PA manifest store (a cheap pre-check, not a parse)."""
    return b"jumb" in data and b"c2pa" in data


def _settings(anchors_pem: str | None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "verify": {
            "verify_after_reading": True,
            "verify_trust": True,
            "remote_manifest_fetch": False,
            "ocsp_fetch": False,
        }
    }
    if anchors_pem:
        # trust_anchors *replaces* the SDK's anchors: only the caller's list decides what is trusted.
        settings["trust"] = {"trust_anchors": anchors_pem}
    return settings


def _empty_info(state: str, failures: list[str]) -> dict[str, Any]:
    return {
        "validation_state": state,
        "failures": failures,
        "trusted": False,
        "digital_source_type": None,
        "digital_source_types": [],
        "claim_generator": None,
        "actions": [],
        "active_manifest": None,
        "signer": None,
        "library_state": None,
    }


def read_c2pa(
    data: bytes, anchors_pem: str | None = None, work: Budget | None = None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read and validate the C2PA manifest store embedded in ``data``.

    Returns ``(info, evidence)``; ``info`` is None when the asset carries no manifest (or is a type the
    SDK does not handle). Never raises for bad input. Lists over their caps are cut, and ``work`` says so.
    """
    work = work if work is not None else Budget()
    try:
        import c2pa
    except ImportError:  # pragma: no cover - c2pa-python is a dependency; degrade rather than crash
        if has_c2pa_markers(data):
            return _empty_info("unverified", ["c2pa-python is not installed"]), []
        return None, []

    context = c2pa.Context.from_dict(_settings(anchors_pem))
    reader = None
    try:
        try:
            reader = c2pa.Reader(io.BytesIO(data), context=context)
            store = json.loads(reader.json())
        except c2pa.C2paError as exc:
            return _from_reader_error(c2pa, exc, data)
    finally:
        if reader is not None:
            reader.close()
        context.close()
    return _from_store(store, work)


def _from_reader_error(c2pa: Any, exc: Exception, data: bytes) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    not_found = tuple(
        t
        for t in (getattr(c2pa.C2paError, "ManifestNotFound", None), getattr(c2pa.C2paError, "NotSupported", None))
        if isinstance(t, type)
    )
    if not_found and isinstance(exc, not_found):
        return None, []
    message = str(exc)
    remote_type = getattr(c2pa.C2paError, "RemoteManifest", None)
    if message.startswith("Remote") or (isinstance(remote_type, type) and isinstance(exc, remote_type)):
        url = message.split("url", 1)[-1].strip() if "url" in message else None
        info = _empty_info("unverified", ["manifest.remote.notFetched"])
        info["remote_manifest_url"] = clip(url) if url else None
        evidence = [{"source": "c2pa", "field": "remote_manifest", "value": clip(url or message), "kind": "info"}]
        return info, evidence
    if has_c2pa_markers(data):
        # A manifest store is present but the SDK cannot parse it: report it, never as a clean declaration.
        info = _empty_info("invalid", ["manifest.unreadable"])
        info["error"] = one_line(message)
        return info, []
    return None, []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _codes(entries: object) -> list[str]:
    if not isinstance(entries, list):
        return []
    return [e["code"] for e in entries if isinstance(e, dict) and isinstance(e.get("code"), str)]


def _dedup(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    infos = manifest.get("claim_generator_info")
    names = []
    if isinstance(infos, list):
        for info in infos:
            if isinstance(info, dict) and info.get("name"):
                version = info.get("version")
                names.append(f"{info['name']} {version}" if version else str(info["name"]))
    if names:
        return ", ".join(names)
    generator = manifest.get("claim_generator")
    return str(generator) if generator else None


def _signer(manifest: dict[str, Any]) -> str | None:
    sig = manifest.get("signature_info")
    if not isinstance(sig, dict):
        return None
    cn, issuer = sig.get("common_name"), sig.get("issuer")
    if cn and issuer:
        return f"{cn} ({issuer})"
    return str(cn or issuer) if (cn or issuer) else None


def _walk_source_types(node: object, path: str, out: list[tuple[str, str]], budget: list[int]) -> None:
    """Collect ``(path, value)`` for every key named ``*DigitalSourceType`` inside an assertion's data."""
    if budget[0] <= 0:
        return
    budget[0] -= 1
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if str(key).lower().endswith("digitalsourcetype") and isinstance(value, str):
                out.append((sub, value))
            else:
                _walk_source_types(value, sub, out, budget)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk_source_types(value, f"{path}[{i}]", out, budget)


def _manifest_source_types(manifest: dict[str, Any]) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """``[(field, value, is_primary)]`` and the action names of one manifest."""
    found: list[tuple[str, str, bool]] = []
    actions: list[str] = []
    for assertion in manifest.get("assertions") or []:
        if not isinstance(assertion, dict):
            continue
        label = str(assertion.get("label", ""))
        data = assertion.get("data")
        if label.startswith("c2pa.actions") and isinstance(data, dict):
            for action in data.get("actions") or []:
                if not isinstance(action, dict):
                    continue
                name = clip(action.get("action", ""), 200)
                actions.append(name)
                dst = action.get("digitalSourceType") or _dict(action.get("parameters")).get("digitalSourceType")
                if isinstance(dst, str) and len(found) < MAX_SOURCE_TYPES:
                    primary = name in ("c2pa.created", "c2pa.opened")
                    found.append((f"{label}:{name}.digitalSourceType", dst, primary))
        elif data is not None:
            walked: list[tuple[str, str]] = []
            _walk_source_types(data, "", walked, [MAX_WALK_NODES])
            found.extend((f"{label}:{sub}", value, False) for sub, value in walked[: MAX_SOURCE_TYPES - len(found)])
    return found, actions


def _from_store(store: object, work: Budget) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if not isinstance(store, dict):
        return _empty_info("invalid", ["manifest.unreadable"]), []
    manifests = _dict(store.get("manifests"))
    active_label = store.get("active_manifest")
    active = manifests.get(active_label) if isinstance(active_label, str) else None
    if not isinstance(active_label, str) or not isinstance(active, dict):
        active_label, active = None, None

    results = _dict(store.get("validation_results"))
    active_results = _dict(results.get("activeManifest"))
    failures = _codes(active_results.get("failure"))
    for delta in results.get("ingredientDeltas") or []:
        failures += _codes(_dict(_dict(delta).get("validationDeltas")).get("failure"))
    failures += _codes(store.get("validation_status"))  # older SDKs: a flat list of failures
    failures = _dedup(failures)
    if len(failures) > MAX_FAILURES:
        work.cut(f"{len(failures)} C2PA failure codes: {MAX_FAILURES} kept")
    failures = [clip(code, 200) for code in failures[:MAX_FAILURES]]
    successes = _codes(active_results.get("success"))

    library_state = store.get("validation_state")
    if isinstance(library_state, str):
        state = "invalid" if library_state.lower() == "invalid" else "valid"
    else:
        state = "invalid" if any(code not in TRUST_ONLY_CODES for code in failures) else "valid"
    if active is None:
        state = "invalid"
        failures = _dedup(failures + ["manifest.activeNotFound"])
    trusted = (isinstance(library_state, str) and library_state.lower() == "trusted") or (
        "signingCredential.trusted" in successes and "signingCredential.untrusted" not in failures
    )

    evidence: list[dict[str, Any]] = []
    info = _empty_info(state, failures)
    info.update(trusted=bool(trusted), active_manifest=active_label, library_state=library_state)
    if active is None or active_label is None:
        return info, evidence

    generator = _claim_generator(active)
    signer = _signer(active)
    info["claim_generator"] = clip(generator) if generator else None
    info["signer"] = clip(signer) if signer else None
    valid = state == "valid"
    evidence.append(
        {
            "source": "c2pa",
            "field": "claim_generator",
            "value": info["claim_generator"] or "(unnamed)",
            "kind": "info",
            "manifest_valid": valid,
        }
    )

    # The active manifest first, then the manifests of its ingredients (breadth first, bounded).
    primary: str | None = None
    types: list[str] = []
    queue: deque[tuple[str, str]] = deque([(active_label, "")])
    seen: set[str] = set()
    while queue:
        if len(seen) >= MAX_MANIFESTS and any(label not in seen for label, _ in queue):
            work.cut(f"more than {MAX_MANIFESTS} C2PA manifests: the others not read")
            break
        if len(seen) >= MAX_MANIFESTS:
            break
        label, prefix = queue.popleft()
        if label in seen or not isinstance(manifests.get(label), dict):
            continue
        seen.add(label)
        manifest = manifests[label]
        found, actions = _manifest_source_types(manifest)
        if not prefix:
            info["actions"] = actions[:MAX_ACTIONS]
        for field, raw_value, is_primary in found:
            value = clip(raw_value)
            types.append(value)
            if primary is None and is_primary and not prefix:
                primary = value
            evidence.append(
                {
                    "source": "c2pa",
                    "field": clip(prefix + field, 300),
                    "value": value,
                    "kind": classify_source_type(value),
                    "manifest_valid": valid,
                }
            )
        for i, ingredient in enumerate(manifest.get("ingredients") or []):
            if isinstance(ingredient, dict) and isinstance(ingredient.get("active_manifest"), str):
                queue.append((ingredient["active_manifest"], f"{prefix}ingredient[{i}]/"))

    info["digital_source_types"] = _dedup(types)[:MAX_SOURCE_TYPES]
    info["digital_source_type"] = primary or (types[0] if types else None)
    return info, evidence
