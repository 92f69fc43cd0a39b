"""A cache of slow, pure results (model modules, API document verdicts) by input digest.

An entry is a file named by the SHA-256 of everything its result depends on, so an
entry is either right or never found again: nothing is invalidated, and a spec edit
redoes only the work whose input it changed. It lives in the user's cache directory
(or `$SPECSTACK_CACHE_DIR`), never in `generated/`; deleting it only costs time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

ENV = "SPECSTACK_CACHE_DIR"


def cache_root() -> Path:
    configured = os.environ.get(ENV)
    if configured:
        return Path(configured)
    from platformdirs import user_cache_path

    return user_cache_path("specstack", appauthor=False)


def digest(*parts: Any) -> str:
    """The SHA-256 of `parts` as JSON in their own key order (bytes are hashed as they are):
    order is part of the input, since a model's fields follow its schema's properties."""
    h = hashlib.sha256()
    for part in parts:
        raw = part if isinstance(part, bytes) else json.dumps(part).encode()
        h.update(len(raw).to_bytes(8, "big"))
        h.update(raw)
    return h.hexdigest()


@functools.cache
def dist_version(dist: str) -> str:
    """An installed distribution's version, for the keys of results that depend on it
    (looked up once a process: each lookup scans the installed packages)."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def source_digest(module_file: str) -> str:
    """The digest of a module's own source: a change to the code makes its entries new ones."""
    return hashlib.sha256(Path(module_file).read_bytes()).hexdigest()


class DigestCache:
    """Text results of one kind of work, by input digest."""

    def __init__(self, kind: str, root: Path | None = None) -> None:
        self.dir = (root or cache_root()) / kind

    def get(self, key: str) -> str | None:
        try:
            return (self.dir / key).read_text("utf-8")
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            return None

    def put(self, key: str, text: str) -> None:
        """Store atomically; a cache that cannot be written is only slower."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{key[:12]}.")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, self.dir / key)
        except OSError:
            pass
