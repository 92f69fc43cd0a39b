"""Small files written behind, on one writer thread, so the event loop never waits on a disk.

Replacing a file by rename makes ext4 flush its data first (auto_da_alloc): a few
milliseconds that would stall every request of the process if the loop did it.
Writes go to one thread in order, so the last write of a path is the one that stays;
`drain()` waits until everything submitted is on disk (the stack calls it when it stops).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from pathlib import Path
from typing import Any

log = logging.getLogger("specstack.files")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_pending: set[Future[None]] = set()


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _done(future: Future[None]) -> None:
    with _lock:
        _pending.discard(future)
    exc = future.exception()
    if exc is not None:
        log.error("a state file could not be written: %s: %s", type(exc).__name__, exc)


def write_later(path: Path, data: bytes) -> None:
    """Queue an atomic write of `path`; it happens on the writer thread, in order."""
    run_later(atomic_write, path, data)


def run_later(work: Callable[..., None], *args: Any) -> None:
    """Queue `work(*args)` on the writer thread, after every write queued before it."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specstack-files")
        future = _executor.submit(work, *args)
        _pending.add(future)
    future.add_done_callback(_done)


def drain(timeout: float = 60.0) -> None:
    """Wait until every queued write is on disk."""
    with _lock:
        pending = list(_pending)
    if pending:
        wait_all(pending, timeout=timeout)
