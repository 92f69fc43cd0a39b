from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from specstack_runtime.behaviours.objectstore import (
    Conflict,
    ContainerNotEmpty,
    InvalidMetadata,
    InvalidName,
    NotFound,
    ObjectInfo,
    ObjectStore,
    Subdir,
)

ACCOUNT = "AUTH_project1"


def run(root: Path, scenario: Callable[[ObjectStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = ObjectStore(root)
        await store.create_container(ACCOUNT, "c")
        await scenario(store)

    asyncio.run(main())


def names(entries: list[ObjectInfo | Subdir]) -> list[str]:
    return [e.subdir if isinstance(e, Subdir) else e.name for e in entries]


def test_put_get_head_and_etag(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        data = b"hello swift" * 1000
        info = await store.put_object(
            ACCOUNT, "c", "img", data, "application/x-qemu", {"owner": "glance"}
        )
        assert info.etag == hashlib.md5(data).hexdigest()
        assert info.size == len(data)
        assert info.content_type == "application/x-qemu"
        assert info.metadata == {"owner": "glance"}
        got_info, got = await store.get_object(ACCOUNT, "c", "img")
        assert got == data and got_info == info
        assert await store.head_object(ACCOUNT, "c", "img") == info

    run(tmp_path, scenario)


def test_streaming_put_sync_and_async_iterables(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        chunks = [b"a" * 10, b"b" * 20, b"c"]
        expected = b"".join(chunks)

        async def agen() -> AsyncIterator[bytes]:
            for chunk in chunks:
                await asyncio.sleep(0)
                yield chunk

        for source in (iter(chunks), agen()):
            info = await store.put_object(ACCOUNT, "c", "o", source)
            assert info.etag == hashlib.md5(expected).hexdigest()
            assert info.size == 31
            assert info.content_type == "application/octet-stream"
        empty = await store.put_object(ACCOUNT, "c", "empty", b"")
        assert empty.etag == hashlib.md5(b"").hexdigest() and empty.size == 0

    run(tmp_path, scenario)


def test_chunked_reader(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        data = bytes(range(256)) * 100
        await store.put_object(ACCOUNT, "c", "o", data)
        reader = await store.open_object(ACCOUNT, "c", "o", chunk_size=1000)
        chunks = [chunk async for chunk in reader]
        assert b"".join(chunks) == data
        assert max(map(len, chunks)) == 1000
        assert reader.info.size == len(data)

    run(tmp_path, scenario)


def test_open_reader_keeps_old_bytes_across_overwrite(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        await store.put_object(ACCOUNT, "c", "o", b"old" * 10)
        async with await store.open_object(ACCOUNT, "c", "o", chunk_size=3) as reader:
            first = await reader.__anext__()
            await store.put_object(ACCOUNT, "c", "o", b"new" * 10)
            rest = b"".join([c async for c in reader])
        assert first + rest == b"old" * 10
        assert (await store.get_object(ACCOUNT, "c", "o"))[1] == b"new" * 10

    run(tmp_path, scenario)


def test_overwrite_leaves_no_stale_data_and_failed_put_no_temp(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        for n in range(3):
            await store.put_object(ACCOUNT, "c", "o", bytes([n]) * 10)

        def broken() -> AsyncIterator[bytes]:
            async def gen() -> AsyncIterator[bytes]:
                yield b"partial"
                raise OSError("client went away")

            return gen()

        with pytest.raises(OSError, match="client went away"):
            await store.put_object(ACCOUNT, "c", "o", broken())
        assert (await store.get_object(ACCOUNT, "c", "o"))[1] == bytes([2]) * 10

    run(tmp_path, scenario)
    data_files = [p for p in tmp_path.rglob("data/*")]
    assert len(data_files) == 1


def test_delete_object(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        await store.put_object(ACCOUNT, "c", "o", b"x")
        await store.delete_object(ACCOUNT, "c", "o")
        with pytest.raises(NotFound):
            await store.head_object(ACCOUNT, "c", "o")
        with pytest.raises(NotFound):
            await store.get_object(ACCOUNT, "c", "o")
        with pytest.raises(NotFound):
            await store.delete_object(ACCOUNT, "c", "o")

    run(tmp_path, scenario)


def test_missing_container(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        with pytest.raises(NotFound):
            await store.put_object(ACCOUNT, "nope", "o", b"x")
        with pytest.raises(NotFound):
            await store.list_objects(ACCOUNT, "nope")
        with pytest.raises(NotFound):
            await store.delete_container(ACCOUNT, "nope")
        assert await store.list_containers("AUTH_nobody") == []

    run(tmp_path, scenario)


def test_container_lifecycle_and_stats(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        assert await store.create_container(ACCOUNT, "d", {"color": "blue"}) is True
        assert await store.create_container(ACCOUNT, "d") is False
        await store.put_object(ACCOUNT, "c", "a", b"12345")
        await store.put_object(ACCOUNT, "c", "b", b"123")
        await store.put_object(ACCOUNT, "d", "z", b"1")
        head = await store.head_container(ACCOUNT, "c")
        assert (head.object_count, head.bytes_used) == (2, 8)
        assert (await store.head_container(ACCOUNT, "d")).metadata == {"color": "blue"}
        listed = await store.list_containers(ACCOUNT)
        assert [(c.name, c.object_count, c.bytes_used) for c in listed] == [
            ("c", 2, 8),
            ("d", 1, 1),
        ]
        with pytest.raises(ContainerNotEmpty):
            await store.delete_container(ACCOUNT, "d")
        assert issubclass(ContainerNotEmpty, Conflict)
        await store.delete_object(ACCOUNT, "d", "z")
        await store.delete_container(ACCOUNT, "d")
        assert [c.name for c in await store.list_containers(ACCOUNT)] == ["c"]

    run(tmp_path, scenario)


def test_list_containers_paging(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        for name in ("b", "a2", "a1", "c"):
            await store.create_container(ACCOUNT, name)
        all_names = [c.name for c in await store.list_containers(ACCOUNT)]
        assert all_names == ["a1", "a2", "b", "c"]
        assert [c.name for c in await store.list_containers(ACCOUNT, prefix="a")] == ["a1", "a2"]
        page = await store.list_containers(ACCOUNT, marker="a2", limit=1)
        assert [c.name for c in page] == ["b"]
        assert [c.name for c in await store.list_containers(ACCOUNT, end_marker="b")] == [
            "a1",
            "a2",
        ]

    run(tmp_path, scenario)


def test_list_objects_sorted_prefix_marker_limit_delimiter(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        for name in ("photos/b.jpg", "photos/a.jpg", "notes.txt", "photos/2024/x.jpg", "zeta"):
            await store.put_object(ACCOUNT, "c", name, b"x")
        everything = await store.list_objects(ACCOUNT, "c")
        assert names(everything) == [
            "notes.txt",
            "photos/2024/x.jpg",
            "photos/a.jpg",
            "photos/b.jpg",
            "zeta",
        ]
        assert all(isinstance(e, ObjectInfo) for e in everything)
        prefixed = await store.list_objects(ACCOUNT, "c", prefix="photos/")
        assert names(prefixed) == ["photos/2024/x.jpg", "photos/a.jpg", "photos/b.jpg"]
        page = await store.list_objects(ACCOUNT, "c", marker="photos/a.jpg", limit=2)
        assert names(page) == ["photos/b.jpg", "zeta"]
        top = await store.list_objects(ACCOUNT, "c", delimiter="/")
        assert names(top) == ["notes.txt", "photos/", "zeta"]
        assert isinstance(top[1], Subdir)
        inner = await store.list_objects(ACCOUNT, "c", prefix="photos/", delimiter="/")
        assert names(inner) == ["photos/2024/", "photos/a.jpg", "photos/b.jpg"]
        after_subdir = await store.list_objects(ACCOUNT, "c", delimiter="/", marker="photos/")
        assert names(after_subdir) == ["zeta"]

    run(tmp_path, scenario)


def test_object_names_with_slashes_and_unicode_are_stored_safely(tmp_path: Path) -> None:
    tricky = ["a/b/c", "dir/", "/leading", "ünïcödé name %2F", "a//b", "x" * 1024, "ok.tar.gz"]

    async def scenario(store: ObjectStore) -> None:
        for name in tricky:
            await store.put_object(ACCOUNT, "c", name, name.encode())
        for name in tricky:
            assert (await store.get_object(ACCOUNT, "c", name))[1] == name.encode()
        assert names(await store.list_objects(ACCOUNT, "c")) == sorted(tricky)

    run(tmp_path, scenario)
    # Everything stays inside the container directory, one level of files.
    for path in tmp_path.rglob("*"):
        assert path.resolve().is_relative_to(tmp_path.resolve())
        assert len(path.name) < 256


@pytest.mark.parametrize(
    ("account", "container", "name"),
    [
        ("..", "c", "o"),
        ("AUTH_x/..", "c", "o"),
        (ACCOUNT, "..", "o"),
        (ACCOUNT, ".", "o"),
        (ACCOUNT, "a/b", "o"),
        (ACCOUNT, "c", "../../etc/passwd"),
        (ACCOUNT, "c", "a/../../b"),
        (ACCOUNT, "c", ".."),
        (ACCOUNT, "c", "./x"),
        (ACCOUNT, "c", ""),
        (ACCOUNT, "", "o"),
        ("", "c", "o"),
        (ACCOUNT, "c", "nul\x00byte"),
        (ACCOUNT, "c", "x" * 1025),
        (ACCOUNT, "c" * 257, "o"),
        (ACCOUNT, "c", "é" * 513),  # 1026 bytes of UTF-8
        (ACCOUNT, "c", "bad\udcff"),
    ],
    ids=lambda value: repr(value)[:20],
)
def test_invalid_names_are_rejected(
    tmp_path: Path, account: str, container: str, name: str
) -> None:
    async def scenario(store: ObjectStore) -> None:
        if name == "o":  # the account or container name is the bad one
            with pytest.raises(InvalidName):
                await store.create_container(account, container)
            with pytest.raises(InvalidName):
                await store.list_objects(account, container)
        with pytest.raises(InvalidName):
            await store.put_object(account, container, name, b"x")
        with pytest.raises(InvalidName):
            await store.get_object(account, container, name)
        with pytest.raises(InvalidName):
            await store.delete_object(account, container, name)

    root = tmp_path / "store"
    run(root, scenario)
    assert [p.name for p in tmp_path.iterdir()] == ["store"]  # nothing escaped the root


def test_invalid_metadata(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        with pytest.raises(InvalidMetadata):
            await store.put_object(ACCOUNT, "c", "o", b"x", metadata={"k": 1})  # type: ignore[dict-item]

    run(tmp_path, scenario)


def test_set_object_metadata(tmp_path: Path) -> None:
    async def scenario(store: ObjectStore) -> None:
        original = await store.put_object(ACCOUNT, "c", "o", b"x", metadata={"a": "1"})
        updated = await store.set_object_metadata(ACCOUNT, "c", "o", {"b": "2"})
        assert updated.metadata == {"b": "2"} and updated.etag == original.etag
        assert (await store.head_object(ACCOUNT, "c", "o")).metadata == {"b": "2"}

    run(tmp_path, scenario)


def test_persistence_across_instances(tmp_path: Path) -> None:
    async def write() -> ObjectInfo:
        store = ObjectStore(tmp_path)
        await store.create_container(ACCOUNT, "glance")
        return await store.put_object(ACCOUNT, "glance", "images/1", b"disk", "application/x")

    async def read() -> None:
        store = ObjectStore(tmp_path)
        info, data = await store.get_object(ACCOUNT, "glance", "images/1")
        assert (info, data) == (written, b"disk")
        assert [c.name for c in await store.list_containers(ACCOUNT)] == ["glance"]
        assert names(await store.list_objects(ACCOUNT, "glance")) == ["images/1"]

    written = asyncio.run(write())
    asyncio.run(read())
