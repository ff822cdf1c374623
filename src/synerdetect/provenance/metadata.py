"""Unsigned metadata that generators and cameras write: XMP, PNG text chunks, EXIF, JPEG comments.

None of this is signed: it is what a file *declares*, and anyone can write or strip it.

* XMP: ``Iptc4xmpExt:DigitalSourceType`` (IPTC digital source type), the IPTC 2023.2 AI properties
  (``AISystemUsed``, ``AISystemVersionUsed``, ``AIPromptInformation``, ``AIPromptWriterName``) and
  ``xmp:CreatorTool``. Packets come from Pillow (``img.info["xmp"]`` for JPEG/WebP, TIFF tag 700) or the
  PNG iTXt chunk ``XML:com.adobe.xmp`` (UTF-8, UTF-16 or UTF-32) and are streamed through :mod:`defusedxml`'s
  expat parser (DTDs, entities and external references refused) in time linear in the packet, under caps on
  packet count and size, nesting depth, elements and properties.
* PNG text chunks (tEXt / zTXt / iTXt), walked directly from the bytes so that chunks after the image data
  are seen without decoding pixels; zTXt/iTXt inflation is bounded. Recognised generators: AUTOMATIC1111 /
  Forge / SD.Next / Civitai-style ``parameters``, ComfyUI ``prompt`` / ``workflow``, SwarmUI
  (``sui_image_params``), NovelAI (``Software: NovelAI``, ``Comment`` JSON), InvokeAI
  (``invokeai_metadata``, ``invokeai_graph``, ``invokeai_workflow``, ``sd-metadata``, ``Dream``), Fooocus
  (``fooocus_scheme``, JSON ``parameters``), RuinedFooocus, Easy Diffusion, Tensor.Art
  (``generation_data``), Stability Matrix (``smproj``), plus a ``Software`` chunk naming an AI generator.
* EXIF (Pillow ``getexif()``): ``Software`` naming an AI generator (see :mod:`.vocab`); ``Make`` /
  ``Model`` of a camera as capture evidence (unless they carry ComfyUI's ``prompt:`` / ``workflow:`` JSON
  or name an AI generator); generator parameters in ``UserComment`` / ``ImageDescription`` (A1111, Fooocus,
  SwarmUI, NovelAI and InvokeAI JPEG/WebP exports).
* JPEG ``COM`` comments holding generator parameters (source ``"jpeg_comment"``).

All parsing of one file shares a :class:`Budget`: a work cap (bytes of metadata inflated, parsed or scanned) and
the reasons anything was cut, which :func:`synerdetect.provenance.read_provenance` reports as ``"truncated"``.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from synerdetect.provenance.vocab import classify_source_type, match_ai_software

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_VALUE_CHARS = 2000  # longest evidence value kept
MAX_TEXT_BYTES = 4 * 1024 * 1024  # longest (inflated) text chunk analysed
MAX_TEXT_TOTAL = 16 * 1024 * 1024  # all PNG text inflated per file
MAX_PNG_CHUNKS = 10_000
MAX_XMP_BYTES = 2 * 1024 * 1024  # larger packets are skipped (with a note)
MAX_XMP_PACKETS = 4  # packets parsed per file (a file normally holds one)
MAX_XMP_DEPTH = 64  # element nesting; real packets stay under ~15
MAX_XMP_ELEMENTS = 50_000  # elements per packet (Photoshop DocumentAncestors lists can run to thousands)
MAX_XMP_PROPERTIES = 64  # properties of interest kept per packet
MAX_WORK_BYTES = 48 * 1024 * 1024  # metadata bytes inflated + parsed + scanned per file

_IPTC_AI_PROPERTIES = ("AISystemUsed", "AISystemVersionUsed", "AIPromptInformation", "AIPromptWriterName")
_RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

# PNG text keys whose mere presence names a generator.
_PNG_KEY_GENERATORS = {
    "invokeai_metadata": "InvokeAI",
    "invokeai_graph": "InvokeAI",
    "invokeai_workflow": "InvokeAI",
    "sd-metadata": "InvokeAI",
    "dream": "InvokeAI",
    "fooocus_scheme": "Fooocus",
    "generation_data": "Tensor.Art",
    "smproj": "Stability Matrix",
    "use_stable_diffusion_model": "Easy Diffusion",
    "negative_prompt": "Easy Diffusion",
}


def clip(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` as a string of at most ``limit`` characters (marked when cut)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    marker = " [truncated]"
    return text[: limit - len(marker)] + marker


class Budget:
    """The work left for one file's evidence parsing, and why anything was cut (``reasons``, in order)."""

    def __init__(self, work: int | None = None):
        self.total = MAX_WORK_BYTES if work is None else work
        self.left = self.total
        self.reasons: list[str] = []

    def cut(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def spend(self, n: int, what: str) -> bool:
        """Take ``n`` units for ``what``; False (and a reason) when the budget cannot cover them."""
        if n > self.left:
            self.left = 0
            self.cut(f"work budget of {self.total} bytes per file used up: {what} and later metadata skipped")
            return False
        self.left -= n
        return True


def _item(source: str, field: str, value: object, kind: str, generator: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"source": source, "field": field, "value": clip(value), "kind": kind}
    if generator:
        item["generator"] = generator
    return item


# ----------------------------------------------------------------------------------------------------
# Generator parameters in free text / JSON
# ----------------------------------------------------------------------------------------------------


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _is_comfy_prompt_graph(obj: dict[str, Any]) -> bool:
    return any(isinstance(v, dict) and "class_type" in v for v in list(obj.values())[:1000])


def _is_comfy_workflow(obj: dict[str, Any]) -> bool:
    return isinstance(obj.get("nodes"), list) and ("links" in obj or "last_node_id" in obj or "version" in obj)


def detect_generator_text(text: str) -> str | None:
    """The generator whose parameter block ``text`` is (A1111-style text or a generator's JSON), or None."""
    t = text.strip().lstrip("\ufeff")
    if not t:
        return None
    if "sui_image_params" in t or "swarm_version" in t:
        return "SwarmUI"
    obj = _json_object(t)
    if obj is not None:
        keys = set(obj)
        low = {str(k).lower() for k in keys}
        if keys & {"invokeai_metadata", "invokeai_graph", "sd-metadata"}:
            return "InvokeAI"
        if "prompt" in keys and "workflow" in keys:
            return "ComfyUI"
        if str(obj.get("software", "")).lower() == "ruinedfooocus":
            return "RuinedFooocus"
        if "use_stable_diffusion_model" in keys:
            return "Easy Diffusion"
        if keys & {"v4_prompt", "noise_schedule", "uncond_scale"} or obj.get("Software") == "NovelAI":
            return "NovelAI"
        if "fooocus" in str(obj.get("version", "")).lower() or ("prompt" in keys and "base_model" in keys):
            return "Fooocus"
        if _is_comfy_prompt_graph(obj) or _is_comfy_workflow(obj):
            return "ComfyUI"
        if {"steps", "seed"} <= low and ("sampler" in low or "cfg_scale" in low or "scale" in low):
            return "diffusion generator (JSON parameters)"
        return None
    if re.search(r"\bSteps:\s*\d+", t) and re.search(r"\b(Sampler|Seed|CFG scale):", t):
        version = re.search(r"\bVersion:\s*([^\s,]+)", t)
        if re.search(r"\bApp:\s*SD\.Next", t):
            return "SD.Next"
        if version and re.match(r"f\d", version.group(1)):
            return "Forge"
        if version and version.group(1) == "ComfyUI":
            return "ComfyUI"
        if "Civitai resources:" in t:
            return "Civitai"
        return "AUTOMATIC1111"
    # InvokeAI 1.x "Dream" command line: "a prompt" -s 50 -S 42 -W 512 -H 512 -C 7.5 -A k_lms
    if re.match(r'^".*"\s+(-[sSWHCA]\s*\S+\s*){3,}', t, re.DOTALL):
        return "InvokeAI"
    return None


# ----------------------------------------------------------------------------------------------------
# PNG text chunks
# ----------------------------------------------------------------------------------------------------


def _inflate(data: bytes, limit: int) -> bytes | None:
    try:
        inflater = zlib.decompressobj()
        return inflater.decompress(data, limit)
    except zlib.error:
        return None


def iter_png_text(data: bytes, work: Budget | None = None) -> list[tuple[str, str]]:
    """``(keyword, text)`` of every tEXt / zTXt / iTXt chunk of a PNG, bounded in count and size (what was
    left unread goes to ``work``'s reasons)."""
    out: list[tuple[str, str]] = []
    if not data.startswith(PNG_SIGNATURE):
        return out
    work = work if work is not None else Budget()
    pos, budget, chunks = len(PNG_SIGNATURE), MAX_TEXT_TOTAL, 0
    while pos + 8 <= len(data):
        if chunks >= MAX_PNG_CHUNKS:
            work.cut(f"PNG with more than {MAX_PNG_CHUNKS} chunks: later chunks not read")
            break
        if budget <= 0:
            work.cut(f"PNG text over {MAX_TEXT_TOTAL} bytes: later text chunks not read")
            break
        chunks += 1
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        start, end = pos + 8, pos + 8 + length
        if end > len(data):
            break
        pos = end + 4  # skip the CRC
        if ctype == b"IEND":
            break
        if ctype not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        body = data[start:end]
        key_raw, sep, rest = body.partition(b"\0")
        if not sep or not key_raw or len(key_raw) > 79:
            continue
        key = key_raw.decode("latin-1")
        raw: bytes | None
        if ctype == b"tEXt":
            raw, encoding = rest[:MAX_TEXT_BYTES], "latin-1"
        elif ctype == b"zTXt":
            raw, encoding = _inflate(rest[1:], min(MAX_TEXT_BYTES, budget)), "latin-1"
        else:
            if len(rest) < 2:
                continue
            compressed = rest[0] == 1
            parts = rest[2:].split(b"\0", 2)  # language tag, translated keyword, text
            if len(parts) < 3:
                continue
            raw = _inflate(parts[2], min(MAX_TEXT_BYTES, budget)) if compressed else parts[2][:MAX_TEXT_BYTES]
            encoding = "utf-8"
        if raw is None:
            continue
        budget -= len(raw)
        if not work.spend(len(raw), f"PNG text chunk {key!r}"):
            break
        out.append((key, raw.decode(encoding, errors="replace")))
    return out


def png_text_evidence(chunks: list[tuple[str, str]], work: Budget | None = None) -> list[dict[str, Any]]:
    """Evidence from PNG text chunks (the XMP chunk excluded: see :func:`xmp_evidence`)."""
    work = work if work is not None else Budget()
    evidence: list[dict[str, Any]] = []
    keys = {k for k, _ in chunks}
    for key, text in chunks:
        low = key.lower()
        if key == "XML:com.adobe.xmp":
            continue
        if not work.spend(len(text), f"analysing PNG text chunk {key!r}"):
            break
        generator: str | None = None
        if low in _PNG_KEY_GENERATORS:
            generator = _PNG_KEY_GENERATORS[low]
        elif low == "parameters":
            generator = detect_generator_text(text)
            if generator is None:
                evidence.append(_item("png_text", key, text, "info"))
                continue
        elif low == "prompt":
            obj = _json_object(text.strip())
            if obj is not None and "sui_image_params" in text:
                generator = "SwarmUI"
            elif obj is not None and _is_comfy_prompt_graph(obj):
                generator = "ComfyUI"
            else:
                generator = detect_generator_text(text)
            if generator is None:
                evidence.append(_item("png_text", key, text, "info"))
                continue
        elif low == "workflow":
            obj = _json_object(text.strip())
            if obj is not None and _is_comfy_workflow(obj):
                generator = "ComfyUI"
            else:
                evidence.append(_item("png_text", key, text, "info"))
                continue
        elif low in ("comment", "description"):
            generator = detect_generator_text(text)
            if generator is None:
                continue
        elif low in ("software", "source"):
            generator = match_ai_software(text)
            if generator is None:
                if low == "software":
                    evidence.append(_item("png_text", key, text, "info"))
                continue
        elif low == "title" and re.search(r"\bai[\s-]generated\b", text, re.IGNORECASE):
            generator = "NovelAI" if "Software" in keys else None
            evidence.append(_item("png_text", key, text, "ai", generator))
            continue
        else:
            continue
        evidence.append(_item("png_text", key, text, "ai", generator))
    return evidence


# ----------------------------------------------------------------------------------------------------
# XMP
# ----------------------------------------------------------------------------------------------------


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


_WANTED = frozenset({"DigitalSourceType", "CreatorTool", *_IPTC_AI_PROPERTIES})
_RDF_LI = f"{{{_RDF_NS}}}li"
_RDF_RESOURCE = f"{{{_RDF_NS}}}resource"
_XML_DECLARATION = re.compile(r"<\?xml\b[^>]*\?>")


class _XmpLimit(Exception):
    """A packet over one of the caps: parsing stops, what was found so far is kept."""


class _XmpCollector:
    """An expat target that collects the properties of interest in one pass, without building a tree.

    For a wanted element the value is, as before, its ``rdf:resource``, else the ``rdf:li`` texts anywhere
    below it joined by ``"; "``, else its own leading text; attributes named like a wanted property count
    too. Every event costs O(1) (an ``rdf:li`` also reaches its open wanted ancestors, at most
    ``MAX_XMP_DEPTH``), so the whole packet is linear in its size.
    """

    def __init__(self) -> None:
        self.out: list[tuple[str, str] | None] = []  # a slot per wanted element, filled at its end
        self.stack: list[list[Any]] = []  # [local name, slot | None, leading text parts | None, has child]
        self.open_wanted: list[tuple[int, list[str]]] = []  # (slot, li texts) of the open wanted elements
        self.elements = 0

    def _add(self, pair: tuple[str, str] | None) -> int:
        if len(self.out) >= MAX_XMP_PROPERTIES:
            raise _XmpLimit(f"more than {MAX_XMP_PROPERTIES} properties of interest")
        self.out.append(pair)
        return len(self.out) - 1

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.elements += 1
        if self.elements > MAX_XMP_ELEMENTS:
            raise _XmpLimit(f"more than {MAX_XMP_ELEMENTS} elements")
        if len(self.stack) >= MAX_XMP_DEPTH:
            raise _XmpLimit(f"elements nested deeper than {MAX_XMP_DEPTH}")
        if self.stack:
            self.stack[-1][3] = True
        for attr, value in attrib.items():
            if _local(attr) in _WANTED and value.strip():
                self._add((_local(attr), value.strip()))
        name = _local(tag)
        slot = None
        if name in _WANTED:
            slot = self._add(None)
            resource = (attrib.get(_RDF_RESOURCE) or "").strip()
            if resource:
                self.out[slot] = (name, resource)
            else:
                self.open_wanted.append((slot, []))
        tracked = slot is not None or (tag == _RDF_LI and bool(self.open_wanted))
        self.stack.append([name, slot, [] if tracked else None, False])

    def data(self, text: str) -> None:
        if self.stack:
            top = self.stack[-1]
            if top[2] is not None and not top[3]:  # text before the first child (ElementTree's .text)
                top[2].append(text)

    def end(self, _tag: str) -> None:  # the parser checked the nesting: the stack says which element ends
        name, slot, parts, _ = self.stack.pop()
        if slot is None and parts is not None:  # an rdf:li under wanted elements
            text = "".join(parts).strip()
            if text:
                for _, items in self.open_wanted:
                    items.append(text)
        elif slot is not None and self.out[slot] is None:
            self._finish(name, slot, parts)

    def _finish(self, name: str, slot: int, parts: list[str] | None) -> None:
        _, items = self.open_wanted.pop()
        text = "; ".join(items) if items else "".join(parts or ()).strip()
        if text:
            self.out[slot] = (name, text)

    def close(self) -> None:
        return None

    def result(self) -> list[tuple[str, str]]:
        """The pairs found, also after a limit stopped the parse (open elements give what they had so far)."""
        for name, slot, parts, _ in reversed(self.stack):
            if slot is not None and self.out[slot] is None:
                self._finish(name, slot, parts)
        return [pair for pair in self.out if pair is not None]


def xmp_text(packet: bytes | str) -> str | None:
    """The packet as text, from its first ``<`` to its last ``>``: UTF-8, UTF-16 or UTF-32 (by BOM or by the
    zero bytes around the first ``<``, as the XML spec's appendix F detects them), or None without markup."""
    if isinstance(packet, str):
        text = packet
    else:
        raw = bytes(packet)
        boms = (
            (b"\xef\xbb\xbf", "utf-8"),
            (b"\xff\xfe\0\0", "utf-32-le"),
            (b"\0\0\xfe\xff", "utf-32-be"),
            (b"\xff\xfe", "utf-16-le"),
            (b"\xfe\xff", "utf-16-be"),
        )
        for bom, encoding in boms:
            if raw.startswith(bom):
                text = raw[len(bom) :].decode(encoding, errors="replace")
                break
        else:
            lt = raw.find(b"<")
            if lt < 0:
                return None
            if raw[lt + 1 : lt + 4] == b"\0\0\0":
                encoding = "utf-32-le"
            elif raw[lt + 1 : lt + 2] == b"\0":
                encoding = "utf-16-le"
            elif lt >= 3 and raw[lt - 3 : lt] == b"\0\0\0":
                encoding, lt = "utf-32-be", lt - 3
            elif lt >= 1 and raw[lt - 1 : lt] == b"\0":
                encoding, lt = "utf-16-be", lt - 1
            else:
                encoding = "utf-8"
            text = raw[lt:].decode(encoding, errors="replace")
    start, end = text.find("<"), text.rfind(">")
    if start < 0 or end < start:
        return None
    return text[start : end + 1]


def parse_xmp(packet: bytes | str, budget: Budget | None = None) -> list[tuple[str, str]]:
    """``(property, value)`` pairs of interest from one XMP packet, in document order.

    [] when the packet cannot be parsed safely (malformed, a DTD or entity declaration, over
    ``MAX_XMP_BYTES``); a packet over the depth, element or property caps keeps what was found before the
    cap and the reason goes to ``budget``.
    """
    budget = budget if budget is not None else Budget()
    size = len(packet)
    if size > MAX_XMP_BYTES:
        budget.cut(f"XMP packet of {size} bytes over the {MAX_XMP_BYTES} byte limit skipped")
        return []
    text = xmp_text(packet)
    if text is None or not budget.spend(len(text), "an XMP packet"):
        return []
    # The text is re-encoded as UTF-8, so a declaration naming another encoding would be wrong now.
    if text.startswith("<?xml"):
        text = _XML_DECLARATION.sub("", text, count=1)
    collector = _XmpCollector()
    parser = DefusedXMLParser(target=collector, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(text.encode("utf-8"))
        parser.close()
    except _XmpLimit as exc:
        budget.cut(f"XMP packet with {exc}: parsing stopped there")
    except (ParseError, DefusedXmlException, ValueError):
        return []  # malformed, or a DTD / entities (expansion attacks): nothing from this packet
    return collector.result()


def xmp_evidence(packets: list[bytes | str], budget: Budget | None = None) -> list[dict[str, Any]]:
    budget = budget if budget is not None else Budget()
    if len(packets) > MAX_XMP_PACKETS:
        budget.cut(f"{len(packets)} XMP packets: only the first {MAX_XMP_PACKETS} read")
    evidence: list[dict[str, Any]] = []
    for packet in packets[:MAX_XMP_PACKETS]:
        for prop, value in parse_xmp(packet, budget):
            if prop == "DigitalSourceType":
                evidence.append(_item("xmp", "Iptc4xmpExt:DigitalSourceType", value, classify_source_type(value)))
            elif prop == "CreatorTool":
                generator = match_ai_software(value)
                evidence.append(_item("xmp", "xmp:CreatorTool", value, "ai" if generator else "info", generator))
            else:
                evidence.append(_item("xmp", f"Iptc4xmpExt:{prop}", value, "ai"))
    return evidence


# ----------------------------------------------------------------------------------------------------
# EXIF and JPEG comments
# ----------------------------------------------------------------------------------------------------

_EXIF_MAKE, _EXIF_MODEL, _EXIF_SOFTWARE, _EXIF_DESCRIPTION = 0x010F, 0x0110, 0x0131, 0x010E
_EXIF_IFD, _EXIF_USER_COMMENT = 0x8769, 0x9286


def _printable_ratio(text: str) -> float:
    if not text:
        return 0.0
    return sum(1 for c in text if c.isprintable() or c in "\n\r\t") / len(text)


def decode_user_comment(raw: object) -> str:
    """Decode an EXIF UserComment (8-byte charset header + payload; piexif writes UTF-16 for UNICODE)."""
    if isinstance(raw, str):
        return raw.strip("\0 ")
    if not isinstance(raw, bytes | bytearray):
        return ""
    raw = bytes(raw[:MAX_TEXT_BYTES])
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        candidates = [body.decode(enc, errors="replace") for enc in ("utf-16-be", "utf-16-le")]
        ascii_like = [sum(1 for c in cand if " " <= c <= "~") for cand in candidates]
        text = candidates[0] if ascii_like[0] >= ascii_like[1] else candidates[1]
    elif head.startswith(b"ASCII") or head == b"\0" * 8:
        text = body.decode("utf-8", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.strip("\0 ")


def _exif_text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value[:MAX_TEXT_BYTES]).decode("utf-8", errors="replace").strip("\0 ")
    return str(value).strip("\0 ") if value is not None else ""


def png_chunk(data: bytes, wanted: bytes) -> bytes | None:
    """The body of the first ``wanted`` chunk of a PNG (walked from the bytes, bounded), or None."""
    pos = len(PNG_SIGNATURE)
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 8 > len(data):
            break
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        if ctype == wanted:
            return data[pos + 8 : pos + 8 + length]
        if ctype == b"IEND":
            break
        pos += 12 + length
    return None


def _exif_of(img: Any, data: bytes) -> Any:
    # Pillow's PNG plugin decodes every pixel to look for an eXIf chunk after the image data (getexif() calls
    # load()): read that chunk from the bytes instead, so reading metadata never decodes the image.
    if data.startswith(PNG_SIGNATURE) and "exif" not in (getattr(img, "info", None) or {}):
        from PIL import Image

        exif = Image.Exif()
        raw = png_chunk(data, b"eXIf")
        if raw:
            exif.load(raw if raw.startswith(b"Exif\0\0") else b"Exif\0\0" + raw)
        return exif
    return img.getexif()


def exif_evidence(img: Any, data: bytes = b"") -> list[dict[str, Any]]:
    try:
        exif = _exif_of(img, data)
    except Exception:  # noqa: BLE001 - malformed EXIF (any of Pillow's errors) is absence of evidence
        return []
    if not exif:
        return []
    evidence: list[dict[str, Any]] = []
    software = _exif_text(exif.get(_EXIF_SOFTWARE))
    if software:
        generator = match_ai_software(software)
        evidence.append(_item("exif", "Software", software, "ai" if generator else "info", generator))
    for tag, field in ((_EXIF_MAKE, "Make"), (_EXIF_MODEL, "Model")):
        value = _exif_text(exif.get(tag))
        if not value:
            continue
        if re.match(r"^(prompt|workflow):\s*\{", value):  # ComfyUI WebP/JPEG savers put their graphs here
            evidence.append(_item("exif", field, value, "ai", "ComfyUI"))
        elif (generator := match_ai_software(value) or detect_generator_text(value)) is not None:
            evidence.append(_item("exif", field, value, "ai", generator))
        elif _printable_ratio(value) > 0.9 and len(value) <= 200:
            evidence.append(_item("exif", field, value, "capture"))
    description = _exif_text(exif.get(_EXIF_DESCRIPTION))
    if description and (generator := detect_generator_text(description)):
        evidence.append(_item("exif", "ImageDescription", description, "ai", generator))
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001 - a broken EXIF sub-IFD: no user comment
        sub = {}
    comment = decode_user_comment(sub.get(_EXIF_USER_COMMENT)) if sub else ""
    if comment and (generator := detect_generator_text(comment)):
        evidence.append(_item("exif", "UserComment", comment, "ai", generator))
    return evidence


def comment_evidence(img: Any) -> list[dict[str, Any]]:
    comment = getattr(img, "info", {}).get("comment")
    text = _exif_text(comment) if comment else ""
    if text and (generator := detect_generator_text(text)):
        return [_item("jpeg_comment", "COM", text, "ai", generator)]
    return []


def xmp_packets(data: bytes, img: Any, png_chunks: list[tuple[str, str]]) -> list[bytes | str]:
    packets: list[bytes | str] = [text for key, text in png_chunks if key == "XML:com.adobe.xmp"]
    if img is not None and not data.startswith(PNG_SIGNATURE):
        info = getattr(img, "info", {}) or {}
        for key in ("xmp", "XML:com.adobe.xmp"):
            if isinstance(info.get(key), bytes | str) and info[key]:
                packets.append(info[key])
                break
        tags = getattr(img, "tag_v2", None)
        if not packets and tags is not None:
            try:
                tiff_xmp = tags.get(700)
            except Exception:  # noqa: BLE001 - a broken TIFF tag: no XMP from it
                tiff_xmp = None
            if isinstance(tiff_xmp, bytes | str) and tiff_xmp:
                packets.append(tiff_xmp)
    return packets


def collect_metadata(data: bytes, img: Any, work: Budget | None = None) -> list[dict[str, Any]]:
    """All unsigned-metadata evidence of one file (``img`` is the Pillow image, or None if unreadable), within
    ``work`` (a fresh :class:`Budget` when None; its ``reasons`` say what was cut)."""
    work = work if work is not None else Budget()
    chunks = iter_png_text(data, work)
    evidence = xmp_evidence(xmp_packets(data, img, chunks), work)
    evidence += png_text_evidence(chunks, work)
    if img is not None:
        evidence += exif_evidence(img, data)
        evidence += comment_evidence(img)
    return evidence
