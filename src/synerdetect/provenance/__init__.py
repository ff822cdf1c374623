"""Provenance evidence: what an image file itself declares about its origin.

C2PA content credentials (``c2pa-python``), IPTC digital source type in XMP, generator parameters in PNG
text chunks and EXIF. Declarations, not detections: see :mod:`synerdetect.provenance.core` for the rules.

Typical use::

    from synerdetect.provenance import read_provenance, trusted_ai_decision
    prov = read_provenance("image.jpg", trust_anchors="c2pa-trust-anchors.pem")
    prov["declared_ai"], prov["c2pa"], trusted_ai_decision(prov)
"""

from synerdetect.provenance.core import (
    MAX_INPUT_BYTES,
    decide_declared_ai,
    load_trust_anchors,
    read_provenance,
    trusted_ai_decision,
)
from synerdetect.provenance.report import format_inspect_table, inspect_paths
from synerdetect.provenance.vocab import (
    AI_SOURCE_TYPES,
    CAPTURE_SOURCE_TYPES,
    IPTC_DIGITAL_SOURCE_TYPE_PREFIX,
    classify_source_type,
    match_ai_software,
)

__all__ = [
    "AI_SOURCE_TYPES",
    "CAPTURE_SOURCE_TYPES",
    "IPTC_DIGITAL_SOURCE_TYPE_PREFIX",
    "MAX_INPUT_BYTES",
    "classify_source_type",
    "decide_declared_ai",
    "format_inspect_table",
    "inspect_paths",
    "load_trust_anchors",
    "match_ai_software",
    "read_provenance",
    "trusted_ai_decision",
]
