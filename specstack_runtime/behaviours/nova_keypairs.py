"""nova-api: the key pairs' keys (the algorithm behind spec/resources/compute.yaml's key pairs)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from specstack_runtime.errors import ApiError
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent


@behaviour("compute.keypair_material")
async def keypair_material(event: ResourceEvent) -> None:
    """A new key pair's keys: a generated RSA pair when none is given (the private key goes
    to the creator's answer only, never to the database), and its MD5 fingerprint (the spec
    has refused a given key that is not text)."""
    doc = event.doc
    public_key = doc.get("public_key")
    x509 = doc.get("type") == "x509"  # a certificate (microversion 2.2), else an SSH key
    if public_key is None:
        try:
            private_key, public_key = (
                _generate_certificate(str(doc.get("user_id"))) if x509 else _generate_keypair()
            )
        except ImportError:  # a server's fault, not the request's: no spec'd (4xx) error
            msg = "This cloud cannot generate key pairs (the cryptography package is missing)"
            raise ApiError(f"{msg}; import a public key instead.", status=501) from None
        event.call.vars["private_key"] = private_key
    doc["public_key"] = public_key if x509 else public_key.strip()
    doc["fingerprint"] = (
        _certificate_fingerprint(public_key, event) if x509 else _fingerprint(public_key, event)
    )
    # nova's key pairs have an integer id of their own
    others = await event.engine.store.list(event.engine.res.res.table)
    doc["seq"] = max((int(d.get("seq") or 0) for d in others), default=0) + 1


def _fingerprint(public_key: str, event: ResourceEvent) -> str:
    try:
        from cryptography.hazmat.primitives.serialization import load_ssh_public_key

        load_ssh_public_key(public_key.strip().encode())
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except Exception:
        raise event.engine.res.fail("bad_key") from None
    return _colons(hashlib.md5(blob).hexdigest())


def _certificate_fingerprint(pem: str, event: ResourceEvent) -> str:
    """The SHA-1 fingerprint of a PEM certificate, as nova gives an x509 key pair's."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        digest = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA1()).hex()
    except Exception:
        raise event.engine.res.fail("bad_certificate") from None
    return _colons(digest)


def _colons(digest: str) -> str:
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _generate_certificate(user_id: str) -> tuple[str, str]:
    """(private key PEM, self-signed certificate PEM) for WinRM client authentication, as
    nova makes an x509 pair: CN and UPN (user@localhost) of the user, valid ten years."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id)])
    upn = f"{user_id}@localhost".encode()
    # the UPN is an otherName holding a DER UTF8String
    upn_der = (
        bytes([0x0C, len(upn)]) + upn if len(upn) < 128 else bytes([0x0C, 0x81, len(upn)]) + upn
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), upn_der)]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return _pem(key), cert.public_bytes(serialization.Encoding.PEM).decode()


def _generate_keypair() -> tuple[str, str]:
    """(private key PEM, public key in OpenSSH format), as nova generates them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return _pem(key), f"{public} Generated-by-Nova"


def _pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    pem = serialization.PrivateFormat.TraditionalOpenSSL
    return str(
        key.private_bytes(serialization.Encoding.PEM, pem, serialization.NoEncryption()).decode()
    )
