"""Provenance evidence: C2PA (c2pa-python, with a throwaway test CA), XMP, PNG text, EXIF."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from provenance_fixtures import (
    CAPTURE,
    DST,
    TRAINED,
    jpeg_bytes,
    make_test_ca,
    png_bytes,
    sign_image,
    strip_metadata,
    tamper_jpeg,
    xmp_packet,
)
from synerdetect.provenance import (
    classify_source_type,
    format_inspect_table,
    inspect_paths,
    load_trust_anchors,
    read_provenance,
    trusted_ai_decision,
)
from synerdetect.provenance import core as prov_core

pytest.importorskip("c2pa")

A1111 = (
    "a photo of a cat wearing a hat\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x512, Model: sd_xl_base_1.0"
)
COMFY_PROMPT = json.dumps(
    {
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "model": ["4", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    }
)
COMFY_WORKFLOW = json.dumps({"last_node_id": 4, "nodes": [{"id": 3, "type": "KSampler"}], "links": []})


@pytest.fixture(scope="module")
def ca():
    return make_test_ca()


@pytest.fixture(scope="module")
def anchors(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("anchors") / "root.pem"
    path.write_bytes(ca.root_pem)
    return path


@pytest.fixture(scope="module")
def ai_jpeg(ca):
    return sign_image(jpeg_bytes(), ca, digital_source_type=TRAINED)


@pytest.fixture(scope="module")
def capture_jpeg(ca):
    return sign_image(jpeg_bytes((5, 90, 40)), ca, digital_source_type=CAPTURE)


def _c2pa_dst_items(prov):
    return [e for e in prov["evidence"] if e["source"] == "c2pa" and e["field"].endswith("digitalSourceType")]


# --------------------------------------------------------------------------------------------- C2PA


def test_c2pa_ai_manifest_valid_untrusted(ai_jpeg):
    prov = read_provenance(ai_jpeg)
    assert prov["declared_ai"] is True
    assert "error" not in prov
    c = prov["c2pa"]
    assert c["validation_state"] == "valid"
    assert c["trusted"] is False
    assert c["failures"] == ["signingCredential.untrusted"]
    assert c["digital_source_type"] == TRAINED
    assert c["digital_source_types"] == [TRAINED]
    assert c["claim_generator"] == "SynerDetect test generator 1.0"
    assert c["actions"] == ["c2pa.created"]
    assert c["signer"] == "SynerDetect Test Signer (SynerDetect Test Org)"
    assert c["active_manifest"].startswith("urn:c2pa:")
    assert _c2pa_dst_items(prov) == [
        {
            "source": "c2pa",
            "field": "c2pa.actions.v2:c2pa.created.digitalSourceType",
            "value": TRAINED,
            "kind": "ai",
            "manifest_valid": True,
        }
    ]
    assert trusted_ai_decision(prov) is None  # untrusted signer never decides
    json.dumps(prov)


def test_c2pa_ai_manifest_trusted_with_anchor(ai_jpeg, anchors, ca):
    for trust in (anchors, str(anchors), ca.root_pem.decode()):
        prov = read_provenance(ai_jpeg, trust_anchors=trust)
        c = prov["c2pa"]
        assert (c["validation_state"], c["trusted"], c["failures"]) == ("valid", True, [])
        assert c["library_state"] == "Trusted"
        assert prov["declared_ai"] is True
        assert trusted_ai_decision(prov) == "fake"


def test_c2pa_anchor_of_another_ca_is_untrusted(ai_jpeg):
    other = make_test_ca("Other")
    prov = read_provenance(ai_jpeg, trust_anchors=other.root_pem.decode())
    assert (prov["c2pa"]["validation_state"], prov["c2pa"]["trusted"]) == ("valid", False)
    assert "signingCredential.untrusted" in prov["c2pa"]["failures"]
    assert trusted_ai_decision(prov) is None


def test_c2pa_tampered_is_invalid_not_clean(ai_jpeg, anchors):
    tampered = tamper_jpeg(ai_jpeg)
    prov = read_provenance(tampered, trust_anchors=anchors)
    c = prov["c2pa"]
    assert c["validation_state"] == "invalid"
    assert c["library_state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in c["failures"]
    assert c["trusted"] is True  # the signer still chains to the anchor; the content does not match
    assert trusted_ai_decision(prov) is None  # invalid never decides
    # Documented rule: an AI claim inside an invalid manifest still counts, flagged as invalid.
    assert prov["declared_ai"] is True
    assert [(e["kind"], e["manifest_valid"]) for e in _c2pa_dst_items(prov)] == [("ai", False)]
    untrusted = read_provenance(tampered)["c2pa"]
    assert untrusted["failures"] == ["signingCredential.untrusted", "assertion.dataHash.mismatch"]


def test_c2pa_stripped(ai_jpeg):
    prov = read_provenance(strip_metadata(ai_jpeg))
    assert prov == {"declared_ai": None, "evidence": [], "c2pa": None}


def test_c2pa_capture_manifest(capture_jpeg, anchors):
    prov = read_provenance(capture_jpeg)
    assert prov["declared_ai"] is False
    assert prov["c2pa"]["digital_source_type"] == CAPTURE
    assert (prov["c2pa"]["validation_state"], prov["c2pa"]["trusted"]) == ("valid", False)
    assert [e["kind"] for e in _c2pa_dst_items(prov)] == ["capture"]
    assert trusted_ai_decision(prov) is None
    assert trusted_ai_decision(read_provenance(capture_jpeg, trust_anchors=anchors)) == "real"


def test_c2pa_tampered_capture_claim_does_not_count(capture_jpeg, anchors):
    prov = read_provenance(tamper_jpeg(capture_jpeg), trust_anchors=anchors)
    assert prov["c2pa"]["validation_state"] == "invalid"
    assert prov["declared_ai"] is None  # an invalid manifest is not a capture declaration
    assert [(e["kind"], e["manifest_valid"]) for e in _c2pa_dst_items(prov)] == [("capture", False)]
    assert trusted_ai_decision(prov) is None


def test_c2pa_capture_then_generative_edit_png(ca, anchors):
    composite = DST + "compositeWithTrainedAlgorithmicMedia"
    signed = sign_image(
        png_bytes(), ca, digital_source_type=CAPTURE, mime="image/png", extra_actions=(("c2pa.edited", composite),)
    )
    prov = read_provenance(io.BytesIO(signed), trust_anchors=anchors)
    c = prov["c2pa"]
    assert (c["validation_state"], c["trusted"], c["failures"]) == ("valid", True, [])
    assert c["actions"] == ["c2pa.created", "c2pa.edited"]
    assert c["digital_source_type"] == CAPTURE  # the c2pa.created action's type
    assert c["digital_source_types"] == [CAPTURE, composite]
    assert [e["kind"] for e in _c2pa_dst_items(prov)] == ["capture", "ai"]
    assert prov["declared_ai"] is True  # an AI edit outweighs the captured origin
    assert trusted_ai_decision(prov) == "fake"


def test_c2pa_malformed_manifest_is_invalid(ca, anchors):
    # c2pa.edited as the only action (no parent ingredient) is malformed per the C2PA spec.
    signed = sign_image(jpeg_bytes(), ca, digital_source_type=CAPTURE, action="c2pa.edited")
    prov = read_provenance(signed, trust_anchors=anchors)
    assert prov["c2pa"]["validation_state"] == "invalid"
    assert prov["c2pa"]["failures"] == ["assertion.action.malformed"]
    assert prov["declared_ai"] is None
    assert trusted_ai_decision(prov) is None


def test_c2pa_corrupt_manifest_store_is_invalid(ai_jpeg):
    data = bytearray(ai_jpeg)
    pos = data.find(b"digitalSourceType")  # a CBOR text string inside the actions assertion
    data[pos] ^= 0xFF
    data[pos + 1] ^= 0xFF
    prov = read_provenance(bytes(data))
    assert "error" not in prov
    assert prov["c2pa"]["validation_state"] == "invalid"
    assert prov["c2pa"]["failures"] == ["manifest.unreadable"]
    assert prov["c2pa"]["error"]
    assert prov["declared_ai"] is None
    assert trusted_ai_decision(prov) is None


def test_trusted_ai_decision_edge_cases():
    assert trusted_ai_decision(None) is None
    assert trusted_ai_decision({"c2pa": None}) is None
    base = {"validation_state": "valid", "trusted": True, "digital_source_types": [DST + "digitalCreation"]}
    assert trusted_ai_decision({"c2pa": base}) is None
    mixed = {**base, "digital_source_types": [CAPTURE, TRAINED]}
    assert trusted_ai_decision({"c2pa": mixed}) == "fake"
    assert trusted_ai_decision({"c2pa": {**mixed, "trusted": False}}) is None
    assert trusted_ai_decision({"c2pa": {**mixed, "validation_state": "invalid"}}) is None


# --------------------------------------------------------------------------------------------- XMP


def test_xmp_in_png_itxt_trained():
    prov = read_provenance(png_bytes(xmp=xmp_packet(TRAINED)))
    assert prov == {
        "declared_ai": True,
        "evidence": [{"source": "xmp", "field": "Iptc4xmpExt:DigitalSourceType", "value": TRAINED, "kind": "ai"}],
        "c2pa": None,
    }


def test_xmp_in_jpeg_digital_capture_attribute_form():
    prov = read_provenance(jpeg_bytes(xmp=xmp_packet(CAPTURE, as_attribute=True).encode()))
    assert prov["declared_ai"] is False
    assert prov["evidence"] == [
        {"source": "xmp", "field": "Iptc4xmpExt:DigitalSourceType", "value": CAPTURE, "kind": "capture"}
    ]


def test_xmp_ai_properties_and_creator_tool():
    extra = (
        "<xmp:CreatorTool>Adobe Firefly</xmp:CreatorTool>"
        "<Iptc4xmpExt:AISystemUsed>ImageGen 3</Iptc4xmpExt:AISystemUsed>"
    )
    prov = read_provenance(jpeg_bytes(xmp=xmp_packet(DST + "digitalCreation", extra=extra).encode()))
    assert prov["declared_ai"] is True
    assert [(e["field"], e["kind"], e.get("generator")) for e in prov["evidence"]] == [
        ("Iptc4xmpExt:DigitalSourceType", "info", None),
        ("xmp:CreatorTool", "ai", "Adobe Firefly"),
        ("Iptc4xmpExt:AISystemUsed", "ai", None),
    ]


def test_xmp_with_entities_is_refused():
    evil = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>' + xmp_packet(TRAINED)
    prov = read_provenance(png_bytes(xmp=evil))
    assert prov == {"declared_ai": None, "evidence": [], "c2pa": None}


def _reference_xmp_pairs(packet: str) -> list[tuple[str, str]]:
    """The properties of interest as the earlier tree-walking parser found them (stdlib ElementTree, one
    subtree walk per property): the streaming parser must give the same pairs on ordinary packets."""
    import xml.etree.ElementTree as ET

    rdf = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
    wanted = {"DigitalSourceType", "CreatorTool", "AISystemUsed", "AISystemVersionUsed", "AIPromptInformation"}
    wanted.add("AIPromptWriterName")

    def local(name):
        return name.rsplit("}", 1)[-1].rsplit(":", 1)[-1]

    out = []
    root = ET.fromstring(packet[packet.find("<") : packet.rfind(">") + 1])
    for el in root.iter():
        for attr, value in el.attrib.items():
            if local(attr) in wanted and value.strip():
                out.append((local(attr), value.strip()))
        if local(el.tag) in wanted:
            value = (el.get(rdf + "resource") or "").strip()
            items = [li.text.strip() for li in el.iter(rdf + "li") if li.text and li.text.strip()]
            value = value or "; ".join(items) or (el.text or "").strip()
            if value:
                out.append((local(el.tag), value))
    return out


ORDINARY_XMP = [
    xmp_packet(TRAINED),
    xmp_packet(CAPTURE, as_attribute=True),
    xmp_packet(
        DST + "digitalCreation",
        extra=(
            "<xmp:CreatorTool>Adobe Firefly</xmp:CreatorTool>"
            "<Iptc4xmpExt:AISystemUsed><rdf:Alt><rdf:li xml:lang='x-default'> ImageGen 3 </rdf:li>"
            "<rdf:li xml:lang='de'>ImageGen</rdf:li></rdf:Alt></Iptc4xmpExt:AISystemUsed>"
            "<Iptc4xmpExt:AIPromptInformation rdf:resource=' https://example.org/p '/>"
            "<Iptc4xmpExt:AISystemVersionUsed>  </Iptc4xmpExt:AISystemVersionUsed>"
            "<dc:title xmlns:dc='http://purl.org/dc/elements/1.1/'><rdf:Alt><rdf:li>t</rdf:li></rdf:Alt></dc:title>"
            "<Iptc4xmpExt:AIPromptWriterName>me<b>x</b>tail</Iptc4xmpExt:AIPromptWriterName>"
        ),
    ),
]


@pytest.mark.parametrize("packet", ORDINARY_XMP)
def test_streaming_xmp_parser_matches_the_tree_walk_on_ordinary_packets(packet):
    from synerdetect.provenance.metadata import Budget, parse_xmp

    work = Budget()
    assert parse_xmp(packet, work) == _reference_xmp_pairs(packet) != []
    assert work.reasons == []


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_xmp_packets_in_utf16_and_utf32_are_read(encoding):
    from synerdetect.provenance.metadata import parse_xmp

    packet = xmp_packet(TRAINED)
    declared = '<?xml version="1.0" encoding="{}"?>'.format(encoding.split("-sig")[0].upper()) + packet
    for text in (packet, declared):
        assert parse_xmp(text.encode(encoding)) == [("DigitalSourceType", TRAINED)], (encoding, text[:40])
    prov = read_provenance(jpeg_bytes(xmp=declared.encode(encoding)))
    assert prov["declared_ai"] is True and "truncated" not in prov


@pytest.mark.parametrize(
    "prolog",
    [
        '<!DOCTYPE x [<!ENTITY a "aaaa">]>',
        '<!DOCTYPE x SYSTEM "file:///etc/passwd">',
        '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
    ],
)
def test_xmp_dtd_entities_and_external_references_are_refused(prolog):
    from synerdetect.provenance.metadata import parse_xmp

    packet = xmp_packet(TRAINED)
    assert parse_xmp(packet) != []
    assert parse_xmp('<?xml version="1.0"?>' + prolog + packet) == []


def _nested_creator_tool(depth: int) -> str:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        + "<xmp:CreatorTool>a" * depth
        + "</xmp:CreatorTool>" * depth
        + "</x:xmpmeta>"
    )


def _png_with_xmp_packets(packets: list[str]) -> bytes:
    """A small PNG with each packet in its own compressed iTXt chunk (as a hostile file would carry them)."""
    import zlib

    data = png_bytes(size=(8, 8))
    chunks = b""
    for packet in packets:
        body = b"XML:com.adobe.xmp\0\x01\x00\0\0" + zlib.compress(packet.encode(), 9)
        chunks += len(body).to_bytes(4, "big") + b"iTXt" + body + zlib.crc32(b"iTXt" + body).to_bytes(4, "big")
    return data[:-12] + chunks + data[-12:]


def test_deeply_nested_xmp_is_cut_at_the_depth_cap_in_linear_work(monkeypatch):
    import time

    from synerdetect.provenance import metadata

    packet = _nested_creator_tool(50_000)
    assert len(packet) > 1_000_000
    data = _png_with_xmp_packets([packet])
    assert len(data) < 10_000  # a few KB of file: the work must not grow with the nesting
    starts = []
    real_start = metadata._XmpCollector.start
    monkeypatch.setattr(metadata._XmpCollector, "start", lambda self, *a: (starts.append(1), real_start(self, *a)))
    t0 = time.perf_counter()
    prov = read_provenance(data)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, elapsed  # about 20 s per 20k levels before (quadratic); milliseconds now
    assert len(starts) == metadata.MAX_XMP_DEPTH + 1  # parsing stopped at the first element over the cap
    # x:xmpmeta holds the CreatorTool elements at depths 2..64: each one's leading text "a" is kept
    depth_kept = metadata.MAX_XMP_DEPTH - 1
    found = [(e["field"], e["value"], e["kind"]) for e in prov["evidence"]]
    assert found == [("xmp:CreatorTool", "a", "info")] * depth_kept
    assert prov["truncated"] is True
    assert f"nested deeper than {metadata.MAX_XMP_DEPTH}" in prov["truncated_reason"]


def test_many_xmp_packets_and_items_are_capped_and_said():
    from synerdetect.provenance import core, metadata

    wide = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        + "<xmp:CreatorTool>GIMP 2.10</xmp:CreatorTool>" * 8000
        + "</x:xmpmeta>"
    )
    data = _png_with_xmp_packets([wide] * 16)
    assert len(data) < 100_000
    prov = read_provenance(data)
    assert len(prov["evidence"]) == core.MAX_EVIDENCE_ITEMS  # 128,000 items (15.7 MB of JSON) before
    assert len(json.dumps(prov)) < 50_000
    assert prov["truncated"] is True
    reason = prov["truncated_reason"]
    assert f"16 XMP packets: only the first {metadata.MAX_XMP_PACKETS} read" in reason
    assert f"more than {metadata.MAX_XMP_PROPERTIES} properties of interest" in reason
    read = metadata.MAX_XMP_PACKETS * metadata.MAX_XMP_PROPERTIES
    assert f"{read} evidence items: {core.MAX_EVIDENCE_ITEMS} kept" in reason


def test_capped_evidence_keeps_the_items_that_decide():
    from PIL.PngImagePlugin import PngInfo

    from synerdetect.provenance import core

    # 150 "info" items (a PNG "Software" chunk each), then one A1111 block: the block decides and is kept.
    info = PngInfo()
    for i in range(150):
        info.add_text("Software", f"GIMP {i}")
    info.add_text("parameters", A1111)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=info)
    prov = read_provenance(buf.getvalue())
    items = prov["evidence"]
    assert len(items) == core.MAX_EVIDENCE_ITEMS and prov["truncated"] is True
    assert prov["declared_ai"] is True
    assert items[-1]["field"] == "parameters" and items[-1]["kind"] == "ai"
    # the info items kept are the first ones, in order
    assert [e["value"] for e in items[:-1]] == [f"GIMP {i}" for i in range(core.MAX_EVIDENCE_ITEMS - 1)]


def test_work_budget_stops_parsing_with_a_reason(monkeypatch):
    from synerdetect.provenance import metadata

    monkeypatch.setattr(metadata, "MAX_WORK_BYTES", 5_000)
    big = "x" * 4_000
    prov = read_provenance(png_bytes({"Software": "GIMP", "Comment": big, "parameters": A1111}))
    assert prov["truncated"] is True
    assert "work budget of 5000 bytes per file used up" in prov["truncated_reason"]
    assert [e["field"] for e in prov["evidence"]] == ["Software"]  # the A1111 block came after the budget


# --------------------------------------------------------------------------------------------- PNG text


def test_png_a1111_parameters():
    prov = read_provenance(png_bytes({"parameters": A1111}))
    assert prov == {
        "declared_ai": True,
        "evidence": [
            {"source": "png_text", "field": "parameters", "value": A1111, "kind": "ai", "generator": "AUTOMATIC1111"}
        ],
        "c2pa": None,
    }


def test_png_comfyui_prompt_and_workflow():
    prov = read_provenance(png_bytes({"prompt": COMFY_PROMPT, "workflow": COMFY_WORKFLOW}))
    assert prov["declared_ai"] is True
    assert [(e["field"], e["kind"], e["generator"], e["value"]) for e in prov["evidence"]] == [
        ("prompt", "ai", "ComfyUI", COMFY_PROMPT),
        ("workflow", "ai", "ComfyUI", COMFY_WORKFLOW),
    ]


@pytest.mark.parametrize(
    ("text", "field", "generator"),
    [
        (
            {"Software": "NovelAI", "Comment": json.dumps({"steps": 28, "noise_schedule": "karras"})},
            "Software",
            "NovelAI",
        ),
        ({"invokeai_metadata": json.dumps({"positive_prompt": "a cat"})}, "invokeai_metadata", "InvokeAI"),
        ({"sd-metadata": "{}"}, "sd-metadata", "InvokeAI"),
        ({"Dream": '"a cat" -s 50 -S 42 -W 512 -H 512'}, "Dream", "InvokeAI"),
        (
            {"parameters": json.dumps({"prompt": "a cat", "base_model": "juggernautXL"}), "fooocus_scheme": "fooocus"},
            "parameters",
            "Fooocus",
        ),
        ({"parameters": json.dumps({"sui_image_params": {"prompt": "a cat"}})}, "parameters", "SwarmUI"),
        ({"parameters": A1111 + ", Version: f2.0.1v1.10.1"}, "parameters", "Forge"),
        ({"generation_data": "{}"}, "generation_data", "Tensor.Art"),
    ],
)
def test_png_generators(text, field, generator):
    prov = read_provenance(png_bytes(text))
    assert prov["declared_ai"] is True
    first = prov["evidence"][0]
    assert (first["source"], first["field"], first["kind"], first["generator"]) == ("png_text", field, "ai", generator)
    assert all(e["kind"] == "ai" for e in prov["evidence"])


def test_png_unrelated_text_is_not_a_declaration():
    prov = read_provenance(png_bytes({"Software": "GIMP 2.10", "parameters": "gamma=2.2", "Author": "me"}))
    assert prov["declared_ai"] is None
    assert [(e["field"], e["kind"]) for e in prov["evidence"]] == [("Software", "info"), ("parameters", "info")]


def test_png_compressed_itxt_after_image_data_and_truncated_value():
    long_prompt = "a cat, " * 1000 + "\nSteps: 30, Sampler: Euler a, CFG scale: 5, Seed: 7"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    data = buf.getvalue()
    # Append a compressed iTXt chunk after IDAT, just before IEND (Pillow only reads such chunks on load()).
    import zlib

    body = b"parameters\0\x01\x00\0\0" + zlib.compress(long_prompt.encode())
    chunk = len(body).to_bytes(4, "big") + b"iTXt" + body + zlib.crc32(b"iTXt" + body).to_bytes(4, "big")
    data = data[:-12] + chunk + data[-12:]
    prov = read_provenance(data)
    assert prov["declared_ai"] is True
    value = prov["evidence"][0]["value"]
    assert len(value) == 2000 and value.endswith(" [truncated]")
    assert prov["evidence"][0]["generator"] == "AUTOMATIC1111"


# --------------------------------------------------------------------------------------------- EXIF


def _exif(**tags):
    exif = Image.Exif()
    names = {"Make": 0x010F, "Model": 0x0110, "Software": 0x0131}
    for name, value in tags.items():
        exif[names[name]] = value
    return exif


def test_exif_camera_make_model_is_capture():
    prov = read_provenance(jpeg_bytes(exif=_exif(Make="Canon", Model="Canon EOS R5", Software="Firmware 1.8.1")))
    assert prov["declared_ai"] is False
    assert [(e["source"], e["field"], e["value"], e["kind"]) for e in prov["evidence"]] == [
        ("exif", "Software", "Firmware 1.8.1", "info"),
        ("exif", "Make", "Canon", "capture"),
        ("exif", "Model", "Canon EOS R5", "capture"),
    ]


def test_exif_software_midjourney_is_ai():
    prov = read_provenance(jpeg_bytes(exif=_exif(Software="Midjourney v6")))
    assert prov == {
        "declared_ai": True,
        "evidence": [
            {"source": "exif", "field": "Software", "value": "Midjourney v6", "kind": "ai", "generator": "Midjourney"}
        ],
        "c2pa": None,
    }


def test_exif_usercomment_a1111_and_comfyui_make():
    exif = _exif(Make="workflow:" + COMFY_WORKFLOW)
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + A1111.encode("utf-16-be")
    prov = read_provenance(jpeg_bytes(exif=exif))
    assert prov["declared_ai"] is True
    assert [(e["field"], e["kind"], e["generator"]) for e in prov["evidence"]] == [
        ("Make", "ai", "ComfyUI"),
        ("UserComment", "ai", "AUTOMATIC1111"),
    ]
    assert prov["evidence"][1]["value"] == A1111


def test_ai_wins_over_capture():
    data = png_bytes({"parameters": A1111}, xmp=xmp_packet(CAPTURE))
    prov = read_provenance(data)
    assert prov["declared_ai"] is True
    assert sorted(e["kind"] for e in prov["evidence"]) == ["ai", "capture"]


# --------------------------------------------------------------------------------------------- inputs


def test_no_metadata_is_null():
    for data in (jpeg_bytes(), png_bytes()):
        assert read_provenance(data) == {"declared_ai": None, "evidence": [], "c2pa": None}


def test_bad_inputs_give_one_line_errors(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00\x01 definitely not an image \xff" * 40)
    cases = {
        "garbage": read_provenance(garbage),
        "empty": read_provenance(b""),
        "missing": read_provenance(tmp_path / "missing.png"),
        "folder": read_provenance(tmp_path),
        "type": read_provenance(12345),  # type: ignore[arg-type]
        "text_stream": read_provenance(io.StringIO("text")),  # type: ignore[arg-type]
    }
    for name, prov in cases.items():
        assert set(prov) == {"declared_ai", "evidence", "c2pa", "error"}, name
        assert (prov["declared_ai"], prov["evidence"], prov["c2pa"]) == (None, [], None), name
        assert prov["error"] and "\n" not in prov["error"], name
    assert cases["garbage"]["error"] == "not a recognised image"
    assert cases["missing"]["error"].startswith("file not found:")
    monkeypatch.setattr(prov_core, "MAX_INPUT_BYTES", 100)
    assert "limit" in read_provenance(jpeg_bytes())["error"]
    assert "limit" in read_provenance(io.BytesIO(jpeg_bytes()))["error"]


def test_path_bytes_and_stream_agree(tmp_path):
    data = png_bytes({"parameters": A1111})
    path = tmp_path / "a.png"
    path.write_bytes(data)
    results = [
        read_provenance(path),
        read_provenance(str(path)),
        read_provenance(data),
        read_provenance(io.BytesIO(data)),
    ]
    assert all(r == results[0] for r in results)


def test_bad_trust_anchors_raise(tmp_path, ai_jpeg):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ValueError, match="no"):
        read_provenance(ai_jpeg, trust_anchors=bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_trust_anchors(tmp_path / "absent.pem")
    with pytest.raises(ValueError):
        inspect_paths([], trust_anchors=bad)


def test_classify_source_type():
    assert classify_source_type(TRAINED) == "ai"
    assert classify_source_type("compositeSynthetic") == "ai"
    assert classify_source_type(DST + "algorithmicMedia") == "ai"
    assert classify_source_type(DST + "computationalCapture") == "capture"
    assert classify_source_type(DST + "algorithmicallyEnhanced") == "info"
    assert classify_source_type(None) == "info"


# --------------------------------------------------------------------------------------------- CLI helpers


def test_inspect_paths_and_table(tmp_path, ai_jpeg, anchors):
    files = {
        "signed.jpg": ai_jpeg,
        "tampered.jpg": tamper_jpeg(ai_jpeg),
        "a1111.png": png_bytes({"parameters": A1111}),
        "plain.png": png_bytes(),
        "broken.jpg": b"nope",
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    records = inspect_paths(paths, trust_anchors=anchors)
    assert [r["path"] for r in records] == [str(p) for p in paths]
    assert [r["declared_ai"] for r in records] == [True, True, True, None, None]
    assert records[0]["c2pa"]["trusted"] is True
    json.dumps(records)
    table = format_inspect_table(records)
    lines = table.splitlines()
    assert lines[0].split() == ["path", "declared_ai", "sources", "c2pa"]
    assert len(lines) == 2 + len(paths)
    assert lines[2].split()[1:] == ["true", "c2pa", "valid,", "trusted"]
    assert "invalid: assertion.dataHash.mismatch" in lines[3]
    assert lines[4].split()[1:] == ["true", "png_text", "-"]
    assert lines[5].split()[1:] == ["null", "-", "-"]
    assert lines[6].split()[1:4] == ["error", "-", "error:"]
    assert format_inspect_table([]).splitlines()[0].split() == ["path", "declared_ai", "sources", "c2pa"]


def test_truncation_reaches_the_scoring_record():
    """The provenance record that predict --json and the service return carries the truncation note."""
    from synerdetect.engine.scoring import Decoder

    wide = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        + "<xmp:CreatorTool>GIMP</xmp:CreatorTool>" * 500
        + "</x:xmpmeta>"
    )
    decoder = Decoder(transform=lambda img: img, provenance=True)
    prepared = decoder(("wide.png", _png_with_xmp_packets([wide])))
    assert prepared.ok and prepared.provenance is not None
    assert prepared.provenance["truncated"] is True
    assert "more than 64 properties" in prepared.provenance["truncated_reason"]
    json.dumps(prepared.provenance)
    plain = decoder(("plain.png", png_bytes()))
    assert plain.provenance == {"declared_ai": None, "evidence": [], "c2pa": None}


@pytest.mark.parametrize("late", [False, True], ids=["exif-before-idat", "exif-after-idat"])
def test_png_exif_is_read_without_decoding_the_pixels(late, monkeypatch):
    """Pillow's PNG getexif() decodes the whole image (to find an eXIf chunk after the pixel data): provenance
    reads the chunk from the bytes instead, wherever it is."""
    from PIL import PngImagePlugin

    buf = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buf, "PNG", exif=_exif(Software="Midjourney v6"))
    data = buf.getvalue()
    if late:  # move the eXIf chunk just before IEND
        start = data.index(b"eXIf") - 4
        end = start + 12 + int.from_bytes(data[start : start + 4], "big")
        data = data[:start] + data[end:-12] + data[start:end] + data[-12:]
        assert data.index(b"eXIf") > data.index(b"IDAT")
    decoded = []
    real_load = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: (decoded.append(1), real_load(self))[1])
    prov = read_provenance(data)
    assert decoded == []
    assert [(e["source"], e["field"], e["value"], e["kind"]) for e in prov["evidence"]] == [
        ("exif", "Software", "Midjourney v6", "ai")
    ]
    with Image.open(io.BytesIO(data)) as img:  # independent: what Pillow finds after decoding
        assert img.getexif()[0x0131] == "Midjourney v6"
