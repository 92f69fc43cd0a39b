"""A Swift-like object store (accounts, containers, objects) on a local directory tree.

Layout under root, every name percent-encoded so no user name is ever a path:

    <account>/<container>/container.json     the container exists iff this file does
    <account>/<container>/objects/<name>.json one sidecar per object: metadata + data id
    <account>/<container>/data/<data id>      object bytes, immutable once written

An object write puts its bytes in a fresh data file, then swaps the sidecar in
with os.replace, so readers see the old object or the new one, never a mix, and
an open reader keeps its bytes even when the object is overwritten meanwhile.
Disk I/O runs inline: it is local and chunked, so each step is short.
Stats are computed by scanning sidecars, which is fine at embedded-stack scale.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self
from urllib.parse import unquote

from specstack_runtime import errors
from specstack_runtime.errors import BadRequest, Conflict
from specstack_runtime.resources.namelists import NameQuery

MAX_ACCOUNT_NAME_LENGTH = 256
MAX_CONTAINER_NAME_LENGTH = 256
MAX_OBJECT_NAME_LENGTH = 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_SIZE = 64 * 1024
# Encoded names longer than this are hashed, keeping file names under NAME_MAX (255).
_MAX_ENCODED = 200
_SAFE = frozenset(string.ascii_letters + string.digits + "-_")
_CONTAINER_FILE = "container.json"

ObjectData = bytes | Iterable[bytes] | AsyncIterable[bytes]


class NotFound(errors.NotFound):
    """The container or object does not exist (swift's 404 page names neither)."""

    def __init__(self, detail: str) -> None:
        super().__init__("The resource could not be found.", detail=detail)


class ContainerNotEmpty(Conflict):
    """A container still holding objects cannot be deleted."""


class InvalidName(BadRequest, ValueError):
    """An account, container or object name is not acceptable."""


class InvalidMetadata(BadRequest, ValueError):
    """Metadata must map non-empty strings to strings."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    name: str
    etag: str  # md5 hex of the content, as Swift's ETag
    size: int
    last_modified: float  # epoch seconds
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Subdir:
    """A pseudo-directory in a delimited listing (Swift's {"subdir": ...} entry)."""

    subdir: str


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    name: str
    object_count: int
    bytes_used: int
    created_at: float
    metadata: dict[str, str] = field(default_factory=dict)


class ObjectReader:
    """Chunks of one object's bytes; close it (or read to the end) to release the file."""

    def __init__(self, info: ObjectInfo, handle: BinaryIO, chunk_size: int) -> None:
        self.info = info
        self._handle = handle
        self._chunk_size = chunk_size

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._handle.closed:
            raise StopAsyncIteration
        chunk = self._handle.read(self._chunk_size)
        if not chunk:
            self._handle.close()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._handle.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.close()


# -- names -----------------------------------------------------------------------


def _validate(kind: str, name: str, max_length: int, *, slash_allowed: bool) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidName(f"{kind} name must not be empty")
    try:
        length = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidName(f"{kind} name is not valid UTF-8") from None
    if length > max_length:
        raise InvalidName(f"{kind} name is longer than {max_length} bytes")
    if "\x00" in name:
        raise InvalidName(f"{kind} name must not contain NUL")
    if not slash_allowed and "/" in name:
        raise InvalidName(f"{kind} name must not contain '/'")
    if any(part in (".", "..") for part in name.split("/")):
        raise InvalidName(f"{kind} name {name!r} must not contain '.' or '..' segments")


def _encode(name: str) -> str:
    """A file-name-safe spelling of name: no '/', no '.', nothing hidden or relative."""
    encoded = "".join(
        ch if ch in _SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in name
    )
    if len(encoded) > _MAX_ENCODED:
        return "~" + hashlib.sha256(name.encode("utf-8")).hexdigest()
    return encoded


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    checked = dict(metadata or {})
    for key, value in checked.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidMetadata(f"metadata item {key!r}: {value!r} is not a string pair")
    return checked


# -- files -----------------------------------------------------------------------


def _write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    temp = path.with_name(f".tmp-{uuid.uuid4().hex}")
    try:
        temp.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return document


def _info(document: dict[str, Any]) -> ObjectInfo:
    kept = {f.name: document[f.name] for f in fields(ObjectInfo)}
    return ObjectInfo(**{**kept, "metadata": dict(document["metadata"])})


async def _chunks(data: ObjectData) -> AsyncIterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    elif isinstance(data, AsyncIterable):
        async for chunk in data:
            yield chunk
    else:
        for chunk in data:
            yield chunk


class ObjectStore:
    """Accounts, containers and objects kept under root; safe to reopen on the same root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------

    def _account_dir(self, account: str) -> Path:
        _validate("account", account, MAX_ACCOUNT_NAME_LENGTH, slash_allowed=False)
        return self.root / _encode(account)

    def _container_dir(self, account: str, container: str, *, must_exist: bool = True) -> Path:
        _validate("container", container, MAX_CONTAINER_NAME_LENGTH, slash_allowed=False)
        path = self._account_dir(account) / _encode(container)
        if must_exist and not (path / _CONTAINER_FILE).is_file():
            raise NotFound(f"container {container!r} not found in account {account!r}")
        return path

    def _object_paths(self, account: str, container: str, name: str) -> tuple[Path, Path]:
        """(container dir, sidecar); every name is validated before existence is checked."""
        _validate("object", name, MAX_OBJECT_NAME_LENGTH, slash_allowed=True)
        container_dir = self._container_dir(account, container)
        return container_dir, _sidecar(container_dir, name)

    def _object_document(self, account: str, container: str, name: str) -> dict[str, Any]:
        _, sidecar = self._object_paths(account, container, name)
        document = _read_json(sidecar)
        if document is None:
            raise NotFound(f"object {name!r} not found in container {container!r}")
        return document

    # -- containers ------------------------------------------------------------

    async def create_container(
        self,
        account: str,
        container: str,
        metadata: Mapping[str, str] | None = None,
        removed: Iterable[str] = (),
    ) -> bool:
        """Create the container (and account); True if new. `metadata` is merged into the
        container's; entries with an empty value, and those `removed`, are dropped."""
        path = self._container_dir(account, container, must_exist=False)
        existing = _read_json(path / _CONTAINER_FILE)
        merged = {**(existing or {}).get("metadata", {}), **_check_metadata(metadata)}
        gone = set(removed)
        merged = {k: v for k, v in merged.items() if v and k not in gone}
        if existing is not None:
            if merged != existing["metadata"]:
                _write_json_atomic(path / _CONTAINER_FILE, {**existing, "metadata": merged})
            return False
        (path / "objects").mkdir(parents=True, exist_ok=True)
        (path / "data").mkdir(exist_ok=True)
        document = {"name": container, "created_at": time.time(), "metadata": merged}
        _write_json_atomic(path / _CONTAINER_FILE, document)  # written last: marks existence
        return True

    async def delete_container(self, account: str, container: str) -> None:
        path = self._container_dir(account, container)
        if self._object_names(path):
            raise ContainerNotEmpty(
                "There was a conflict when trying to complete your request: "
                "the container is not empty."
            )
        (path / _CONTAINER_FILE).unlink()
        shutil.rmtree(path, ignore_errors=True)

    async def head_container(self, account: str, container: str) -> ContainerInfo:
        return self._container_info(self._container_dir(account, container))

    async def list_containers(
        self, account: str, query: NameQuery | None = None, **window: Any
    ) -> list[ContainerInfo]:
        """Containers sorted by name, in the window `query` (or NameQuery(**window)) gives."""
        paths = self._container_paths(account)
        shown = (query or NameQuery(**window)).window(paths)
        return [self._container_info(paths[name]) for name, subdir in shown if not subdir]

    def _container_paths(self, account: str) -> dict[str, Path]:
        account_dir = self._account_dir(account)
        paths: dict[str, Path] = {}
        if account_dir.is_dir():
            for entry in account_dir.iterdir():
                document = _read_json(entry / _CONTAINER_FILE)
                if document is not None:
                    paths[document["name"]] = entry
        return paths

    def _container_info(self, path: Path) -> ContainerInfo:
        document = _read_json(path / _CONTAINER_FILE)
        if document is None:
            raise NotFound(f"container at {path.name!r} vanished")
        sizes = [d["size"] for d in self._object_documents(path)]
        return ContainerInfo(
            name=document["name"],
            object_count=len(sizes),
            bytes_used=sum(sizes),
            created_at=document["created_at"],
            metadata=dict(document["metadata"]),
        )

    # -- objects ---------------------------------------------------------------

    async def put_object(
        self,
        account: str,
        container: str,
        name: str,
        data: ObjectData,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store (or replace) an object, streaming data to disk while hashing it."""
        container_dir, sidecar = self._object_paths(account, container, name)
        checked = _check_metadata(metadata)
        data_id = uuid.uuid4().hex
        final = container_dir / "data" / data_id
        temp = final.with_name(f".tmp-{data_id}")
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            handle = temp.open("wb")
        except FileNotFoundError:
            raise NotFound(f"container {container!r} was deleted") from None
        try:
            with handle:
                async for chunk in _chunks(data):
                    if not isinstance(chunk, bytes | bytearray | memoryview):
                        raise TypeError(f"object data chunks must be bytes, not {type(chunk)}")
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        info = ObjectInfo(
            name=name,
            etag=digest.hexdigest(),
            size=size,
            last_modified=time.time(),
            content_type=content_type or DEFAULT_CONTENT_TYPE,
            metadata=checked,
        )
        # No await from here on: reading the old sidecar and replacing it happen together.
        previous = _read_json(sidecar)
        _write_json_atomic(sidecar, {**asdict(info), "data": data_id})
        if previous is not None:
            (container_dir / "data" / previous["data"]).unlink(missing_ok=True)
        return info

    async def head_object(self, account: str, container: str, name: str) -> ObjectInfo:
        return _info(self._object_document(account, container, name))

    async def get_object(self, account: str, container: str, name: str) -> tuple[ObjectInfo, bytes]:
        async with await self.open_object(account, container, name) as reader:
            return reader.info, b"".join([chunk async for chunk in reader])

    async def open_object(
        self, account: str, container: str, name: str, *, chunk_size: int = CHUNK_SIZE
    ) -> ObjectReader:
        """A chunked reader of the object as it is now (later overwrites do not affect it)."""
        container_dir, _ = self._object_paths(account, container, name)
        # Retry covers an overwrite landing between reading the sidecar and opening the data.
        for _ in range(3):
            document = self._object_document(account, container, name)
            try:
                handle = (container_dir / "data" / document["data"]).open("rb")
            except FileNotFoundError:
                continue
            return ObjectReader(_info(document), handle, chunk_size)
        raise Conflict(f"object {name!r} is changing too fast to read")

    async def set_object_metadata(
        self, account: str, container: str, name: str, metadata: Mapping[str, str]
    ) -> ObjectInfo:
        """Replace the object's metadata (Swift POST semantics); the content is unchanged."""
        checked = _check_metadata(metadata)
        _, sidecar = self._object_paths(account, container, name)
        document = self._object_document(account, container, name)
        document["metadata"] = checked
        _write_json_atomic(sidecar, document)
        return _info(document)

    async def delete_object(self, account: str, container: str, name: str) -> None:
        container_dir, sidecar = self._object_paths(account, container, name)
        document = self._object_document(account, container, name)
        sidecar.unlink(missing_ok=True)
        (container_dir / "data" / document["data"]).unlink(missing_ok=True)

    async def list_objects(
        self, account: str, container: str, query: NameQuery | None = None, **window: Any
    ) -> list[ObjectInfo | Subdir]:
        """Objects sorted by name, in the window `query` (or NameQuery(**window)) gives;
        with a delimiter, names past it fold into Subdir entries."""
        container_dir = self._container_dir(account, container)
        entries: list[ObjectInfo | Subdir] = []
        names = self._object_names(container_dir)
        for name, subdir in (query or NameQuery(**window)).window(names):
            if subdir:
                entries.append(Subdir(name))
            elif (document := _read_json(_sidecar(container_dir, name))) is not None:
                entries.append(_info(document))  # (None: deleted while listing)
        return entries

    def _object_documents(self, container_dir: Path) -> list[dict[str, Any]]:
        found = (_read_json(entry) for entry in _sidecars(container_dir))
        return [document for document in found if document is not None]

    def _object_names(self, container_dir: Path) -> list[str]:
        names = []
        for entry in _sidecars(container_dir):
            stem = entry.name.removesuffix(".json")
            if stem.startswith("~"):  # hashed long name: the sidecar knows the real one
                document = _read_json(entry)
                if document is not None:
                    names.append(str(document["name"]))
            else:
                names.append(unquote(stem, errors="strict"))
        return names


def _sidecars(container_dir: Path) -> list[Path]:
    """The container's object sidecars (not the temp files of writes under way)."""
    objects_dir = container_dir / "objects"
    if not objects_dir.is_dir():
        return []
    return [e for e in objects_dir.iterdir() if e.suffix == ".json" and e.name[0] != "."]


def _sidecar(container_dir: Path, name: str) -> Path:
    return container_dir / "objects" / f"{_encode(name)}.json"
