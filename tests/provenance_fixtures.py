"""Fixtures for the provenance tests: a throwaway test CA, C2PA-signed images, metadata-bearing images.

Everything is generated in memory (ES256 / P-256 keys made with ``cryptography``); nothing touches the
network. The end-entity certificate carries what C2PA requires of a claim signer: digitalSignature key
usage, an allowed extended key usage (emailProtection), not a CA, and an authority key identifier
pointing at the root.
"""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass

from PIL import Image
from PIL.PngImagePlugin import PngInfo

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED = DST + "trainedAlgorithmicMedia"
CAPTURE = DST + "digitalCapture"


@dataclass(frozen=True)
class TestCA:
    root_pem: bytes  # the trust anchor
    chain_pem: bytes  # end-entity certificate followed by the root
    key_pem: bytes  # end-entity private key (PKCS#8)

    __test__ = False  # not a pytest test class


def _key_usage(*, signing: bool):
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signing,
        crl_sign=not signing,
        encipher_only=False,
        decipher_only=False,
    )


def make_test_ca(name: str = "SynerDetect Test") -> TestCA:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{name} Org")
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Root CA"), org])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    ee_key = ec.generate_private_key(ec.SECP256R1())
    ee = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Signer"), org]))
        .issuer_name(root_name)
        .public_key(ee_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ee_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TestCA(
        root_pem=root.public_bytes(pem),
        chain_pem=ee.public_bytes(pem) + root.public_bytes(pem),
        key_pem=ee_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def jpeg_bytes(color=(120, 30, 200), size=(64, 48), **save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90, **save_kwargs)
    return buf.getvalue()


def png_bytes(text: dict[str, str] | None = None, *, xmp: str | None = None, size=(32, 24)) -> bytes:
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    if xmp is not None:
        info.add_itxt("XML:com.adobe.xmp", xmp)
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 90)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def xmp_packet(digital_source_type: str, *, as_attribute: bool = False, extra: str = "") -> str:
    ns = (
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
    )
    if as_attribute:
        body = f'<rdf:Description rdf:about="" Iptc4xmpExt:DigitalSourceType="{digital_source_type}"/>'
    else:
        body = (
            f'<rdf:Description rdf:about=""><Iptc4xmpExt:DigitalSourceType>{digital_source_type}'
            f"</Iptc4xmpExt:DigitalSourceType>{extra}</rdf:Description>"
        )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF {ns}>{body}</rdf:RDF></x:xmpmeta>'
        '<?xpacket end="w"?>'
    )


def sign_image(
    data: bytes,
    ca: TestCA,
    *,
    digital_source_type: str = TRAINED,
    action: str = "c2pa.created",
    mime: str = "image/jpeg",
    generator: str = "SynerDetect test generator",
    extra_actions: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """``data`` with an embedded C2PA manifest signed by ``ca``: one action, then ``(action, dst)`` extras."""
    import c2pa

    actions = [
        {"action": name, "digitalSourceType": dst, "softwareAgent": {"name": generator}}
        for name, dst in ((action, digital_source_type), *extra_actions)
    ]
    manifest = {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "title": "fixture",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": actions},
            }
        ],
    }
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", ca.chain_pem, ca.key_pem, None))
    context = c2pa.Context.from_dict(
        {"builder": {"thumbnail": {"enabled": False}}, "verify": {"verify_after_sign": False}}
    )
    try:
        builder = c2pa.Builder(manifest, context=context)
        out = io.BytesIO()
        builder.sign(signer, mime, io.BytesIO(data), out)
        return out.getvalue()
    finally:
        signer.close()
        context.close()


def tamper_jpeg(data: bytes, n: int = 8) -> bytes:
    """Flip the low bit of ``n`` bytes of entropy-coded image data (after the last SOS segment)."""
    sos = data.rfind(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    out = bytearray(data)
    flipped, k = 0, start + 4
    while flipped < n and k < len(out) - 2:
        if out[k] not in (0x00, 0xFE, 0xFF) and out[k - 1] != 0xFF:
            out[k] ^= 0x01
            flipped += 1
        k += 3
    assert flipped == n, "image data region too small to tamper"
    return bytes(out)


def strip_metadata(data: bytes) -> bytes:
    """Re-encode the pixels with Pillow, keeping no metadata at all."""
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format
        clean = Image.frombytes(img.mode, img.size, img.tobytes())  # pixels only: no info, no exif
    buf = io.BytesIO()
    clean.save(buf, fmt)
    return buf.getvalue()
