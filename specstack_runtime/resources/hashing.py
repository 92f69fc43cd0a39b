"""Hashed fields (`hash: bcrypt`): the hash of a secret, and whether a secret matches one."""

from __future__ import annotations

import asyncio

import bcrypt


def secret_bytes(secret: str) -> bytes:
    # bcrypt reads at most 72 bytes (keystone's passlib truncates the same way).
    return secret.encode("utf-8", "surrogatepass")[:72]


async def bcrypt_hash(rounds: int, secret: str) -> str:
    """The bcrypt hash of `secret`, made in a worker thread (the event loop never waits)."""
    salt = bcrypt.gensalt(max(4, min(31, int(rounds))))
    hashed: bytes = await asyncio.to_thread(bcrypt.hashpw, secret_bytes(secret), salt)
    return hashed.decode("ascii")


async def bcrypt_matches(secret: str, hashed: str | None) -> bool:
    """True if `secret` is what the bcrypt `hashed` was made from."""
    if not hashed:
        return False
    try:
        ok = await asyncio.to_thread(bcrypt.checkpw, secret_bytes(secret), hashed.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return bool(ok)
