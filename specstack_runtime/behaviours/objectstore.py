"""The bytes of swift's objects: one immutable file per write under a local directory.

The rows (containers, objects: names, sizes, ETags, metadata) are the resource model's
(spec/resources/object-store.yaml); an object's row names the file holding its bytes.
A write puts the bytes in a fresh file (a temporary name, then os.replace), so a reader
of the old row keeps the old bytes while the row is switched to the new file, and no
name a user chose is ever a path. Large bodies are written and hashed in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

THREAD_BYTES = 1 << 20  # write and hash larger bodies in a worker thread


@dataclass(frozen=True, slots=True)
class Blob:
    data: str  # the file's id
    etag: str  # md5 hex of the content, as swift's ETag
    size: int


class ObjectStore:
    """Object bytes kept under root, one file per id; safe to reopen on the same root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, data_id: str) -> Path:
        if not data_id.isalnum():  # ids are ours (hex), never a user's name
            raise ValueError(f"not a data id: {data_id!r}")
        return self.root / data_id

    async def write(self, data: bytes) -> Blob:
        """Store the bytes in a new file; its id, MD5 and size."""
        if len(data) > THREAD_BYTES:
            return await asyncio.to_thread(self._write, data)
        return self._write(data)

    def _write(self, data: bytes) -> Blob:
        data_id = uuid.uuid4().hex
        final = self._path(data_id)
        temp = final.with_name(f".tmp-{data_id}")
        try:
            temp.write_bytes(data)
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Blob(data_id, hashlib.md5(data, usedforsecurity=False).hexdigest(), len(data))

    async def read(self, data_id: str) -> bytes | None:
        """The bytes of the file, None when it is gone (its object was overwritten or
        deleted meanwhile)."""
        try:
            path = self._path(data_id)
            size = path.stat().st_size
            return (
                await asyncio.to_thread(path.read_bytes)
                if size > THREAD_BYTES
                else (path.read_bytes())
            )
        except FileNotFoundError:
            return None

    def remove(self, data_id: str) -> None:
        self._path(data_id).unlink(missing_ok=True)
