"""Small JSON state files an agent keeps (DHCP hosts, wired ports), written behind.

The document lives in memory; changes are written to disk atomically a moment
later, once per burst, so a busy agent does not rewrite its file per message.
`flush_all` writes everything pending (the stack calls it when it stops).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specstack_runtime import filewriter, jsoncodec

log = logging.getLogger("specstack.statefile")
# ext4 flushes a file's data when a rename replaces it (auto_da_alloc): 1-2 ms a write,
# so a busy agent writes at most twice a second.
DELAY_S = 0.5


def atomic_write(path: Path, text: str) -> None:
    filewriter.atomic_write(path, text.encode("utf-8"))


def _write(path: Path, text: str) -> None:
    """Behind, on the writer thread, when an event loop runs; at once otherwise."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        atomic_write(path, text)
        return
    filewriter.write_later(path, text.encode("utf-8"))


class StateFile:
    def __init__(self, path: Path, render: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.path = path
        self.render = render or (lambda d: jsoncodec.dumps_text(d, indent=True))
        self.data: dict[str, Any] = self._read()
        self._handle: asyncio.TimerHandle | None = None
        self.extra: list[tuple[Path, Callable[[dict[str, Any]], str]]] = []

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:
            log.warning("ignoring unreadable state file %s", self.path)
            return {}
        return data if isinstance(data, dict) else {}

    def also_write(self, path: Path, render: Callable[[dict[str, Any]], str]) -> None:
        """Another file derived from the same state (e.g. a dnsmasq hosts file)."""
        if all(p != path for p, _ in self.extra):
            self.extra.append((path, render))

    def changed(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._handle is None:
            self._handle = loop.call_later(DELAY_S, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        _write(self.path, self.render(self.data))
        for path, render in self.extra:
            _write(path, render(self.data))


def state_file(shared: dict[str, Any], path: Path) -> StateFile:
    """The one StateFile of `path` in this process."""
    files: dict[Path, StateFile] = shared.setdefault("statefiles", {})
    if path not in files:
        files[path] = StateFile(path)
    return files[path]


def flush_all(shared: dict[str, Any]) -> None:
    """Write every pending state file and wait until all of them are on disk."""
    for f in shared.get("statefiles", {}).values():
        if f._handle is not None:
            f.flush()
    filewriter.drain()
