"""nova-api: the key pairs' keys (the algorithm behind spec/resources/compute.yaml's key pairs)."""

from __future__ import annotations

import base64
import hashlib

from specstack_runtime.errors import (
    ApiError,
)
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent


@behaviour("compute.keypair_material")
async def keypair_material(event: ResourceEvent) -> None:
    """A new key pair's keys: a generated RSA pair when none is given (the private key goes
    to the creator's answer only, never to the database), and its MD5 fingerprint."""
    doc = event.doc
    public_key = doc.get("public_key")
    if public_key is None:
        private_key, public_key = _generate_keypair()
        event.call.vars["private_key"] = private_key
    elif not isinstance(public_key, str):
        raise event.engine.res.fail("bad_key")
    doc["public_key"] = public_key.strip()
    doc["fingerprint"] = _fingerprint(public_key, event)
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
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _generate_keypair() -> tuple[str, str]:
    """(private key PEM, public key in OpenSSH format), as nova generates them."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise ApiError(
            "This cloud cannot generate key pairs (the cryptography package is missing); "
            "import a public key instead.",
            status=501,
        ) from None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, f"{public} Generated-by-Nova"
