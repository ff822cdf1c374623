"""Vocabularies shared by the provenance readers.

* IPTC *Digital Source Type* codes (https://cv.iptc.org/newscodes/digitalsourcetype/), as used both by
  C2PA ``c2pa.actions`` assertions and by XMP ``Iptc4xmpExt:DigitalSourceType``, sorted into three kinds:
  ``"ai"`` (synthetic: made by a trained model or another algorithm), ``"capture"`` (recorded from the real
  world by a camera, scanner or film) and ``"info"`` (anything else: human-made digital art, minor edits,
  screen captures, unknown codes...), which is listed as evidence but decides nothing.
* Names of AI image generators, matched in free-text software fields (EXIF ``Software``, XMP
  ``xmp:CreatorTool``, PNG ``Software``...).
"""

from __future__ import annotations

import re

IPTC_DIGITAL_SOURCE_TYPE_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"

#: Codes declaring synthetic (AI or otherwise algorithmic) media.
AI_SOURCE_TYPES = frozenset(
    {
        "trainedAlgorithmicMedia",
        "compositeWithTrainedAlgorithmicMedia",
        "algorithmicMedia",
        "compositeSynthetic",
        "trainedAlgorithmicData",  # C2PA-specific code used by some early manifests
    }
)

#: Codes declaring a capture of the real world.
CAPTURE_SOURCE_TYPES = frozenset(
    {
        "digitalCapture",
        "computationalCapture",
        "compositeCapture",
        "negativeFilm",
        "positiveFilm",
        "print",
    }
)

_AI_LOWER = {c.lower(): c for c in AI_SOURCE_TYPES}
_CAPTURE_LOWER = {c.lower(): c for c in CAPTURE_SOURCE_TYPES}


def source_type_code(value: object) -> str | None:
    """The bare code of a digital source type (``".../trainedAlgorithmicMedia"`` -> ``"trainedAlgorithmicMedia"``)."""
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip("/")
    if not text:
        return None
    code = re.split(r"[/#]", text)[-1]
    if ":" in code:  # "Iptc4xmpExt:trainedAlgorithmicMedia"-style prefixes
        code = code.rsplit(":", 1)[-1]
    return code or None


def classify_source_type(value: object) -> str:
    """``"ai"``, ``"capture"`` or ``"info"`` for one digital source type (URI or bare code)."""
    code = source_type_code(value)
    if code is None:
        return "info"
    low = code.lower()
    if low in _AI_LOWER:
        return "ai"
    if low in _CAPTURE_LOWER:
        return "capture"
    return "info"


# (display name, pattern) for AI image generators named in software / creator-tool fields.
_AI_SOFTWARE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("Adobe Firefly", r"\bfirefly\b"),
    ("DALL-E", r"\bdall[\s\-_.·]?e\b"),
    ("Midjourney", r"\bmid[\s\-_]?journey\b"),
    ("Stable Diffusion", r"\bstable[\s\-_]?diffusion\b|\bsdxl\b"),
    ("NovelAI", r"\bnovel[\s\-_]?ai\b"),
    ("ComfyUI", r"\bcomfy[\s\-_]?ui\b"),
    ("AUTOMATIC1111", r"\bautomatic1111\b|\bstable-diffusion-webui\b"),
    ("InvokeAI", r"\binvoke[\s\-_]?ai\b"),
    ("Fooocus", r"fooocus"),
    ("Google Imagen", r"\bimagen\b"),
    ("Google Gemini", r"\bgemini\b"),
    ("OpenAI", r"\bopenai\b|\bchatgpt\b|\bgpt-image\b|\bgpt-4o\b|\bsora\b"),
    ("Leonardo.Ai", r"\bleonardo\.?ai\b"),
    ("Ideogram", r"\bideogram\b"),
    ("FLUX", r"\bflux\.\d\b|\bblack forest labs\b"),
    ("Bing Image Creator", r"\bbing image creator\b|\bimage creator from (microsoft )?designer\b"),
    ("Craiyon", r"\bcraiyon\b"),
    ("NightCafe", r"\bnightcafe\b"),
    ("DreamStudio", r"\bdreamstudio\b"),
    ("Stability AI", r"\bstability[\s\-_]?ai\b"),
    ("Draw Things", r"\bdraw things\b"),
    ("DiffusionBee", r"\bdiffusion[\s\-_]?bee\b"),
    ("Easy Diffusion", r"\beasy[\s\-_]?diffusion\b"),
    ("SwarmUI", r"\bswarm[\s\-_]?ui\b"),
    ("SD.Next", r"\bsd\.next\b"),
    ("Runway", r"\brunway[\s\-_]?(ml|gen)"),
    ("Krea", r"\bkrea(\.ai)?\b"),
    ("Recraft", r"\brecraft\b"),
    ("Tensor.Art", r"\btensor\.art\b"),
    ("Civitai", r"\bcivitai\b"),
    ("Playground AI", r"\bplayground[\s\-_]?(ai|v\d)"),
    ("Grok", r"\bgrok\b"),
    ("Meta AI", r"\bmeta ai\b|\bimagine with meta\b"),
)
_AI_SOFTWARE_RE = tuple((name, re.compile(pat, re.IGNORECASE)) for name, pat in _AI_SOFTWARE_PATTERNS)


def match_ai_software(text: object) -> str | None:
    """The AI generator named in a software / creator-tool string, or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    for name, pattern in _AI_SOFTWARE_RE:
        if pattern.search(text):
            return name
    return None
