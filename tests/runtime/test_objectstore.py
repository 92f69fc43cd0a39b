"""The object bytes' files (specstack_runtime/behaviours/objectstore.py); the rows and the
operations are tested through the behaviours (test_objects.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from specstack_runtime.behaviours.objectstore import THREAD_BYTES, ObjectStore
from tests.aio import arun


@arun
async def test_write_read_and_remove(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "swift")
    data = b"image bytes " * 1000
    blob = await store.write(data)
    assert blob.etag == hashlib.md5(data).hexdigest() and blob.size == len(data)
    assert await store.read(blob.data) == data
    empty = await store.write(b"")
    assert (empty.size, empty.etag) == (0, hashlib.md5(b"").hexdigest())
    assert await store.read(empty.data) == b""
    store.remove(blob.data)
    assert await store.read(blob.data) is None
    store.remove(blob.data)  # removing twice is nothing
    # each write is a file of its own: overwriting an object never touches a reader's bytes
    again = await store.write(data)
    assert again.data not in (blob.data, empty.data)


@arun
async def test_large_bodies_and_persistence(tmp_path: Path) -> None:
    big = bytes(range(256)) * (THREAD_BYTES // 256 + 1)  # written and hashed in a thread
    blob = await ObjectStore(tmp_path).write(big)
    assert blob.etag == hashlib.md5(big).hexdigest()
    assert await ObjectStore(tmp_path).read(blob.data) == big  # another instance, same root
    assert sorted(p.name for p in tmp_path.iterdir()) == [blob.data]  # no temp file left


@arun
async def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    with pytest.raises(TypeError):
        await store.write("not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_only_the_stores_ids_name_files(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "swift")
    for bad in ("../etc/passwd", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="not a data id"):
            store.remove(bad)
