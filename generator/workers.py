"""Forked worker processes: slow, independent parts of a run overlap the main process."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")


class WorkerDied(RuntimeError):
    """The worker process ended while it still had calls to answer."""


class Worker:
    """One forked process running submitted calls in order; in-process where fork is missing.

    Forking copies what the main process has already imported, so a worker starts
    in milliseconds; `warm` runs first in the worker (imports its jobs need) while
    the main process goes on.
    """

    def __init__(self, warm: Callable[[], None] | None = None, *, fork: bool = True) -> None:
        self._pool: ProcessPoolExecutor | None = None
        if fork and "fork" in mp.get_all_start_methods():
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=mp.get_context("fork"), initializer=warm
            )
            self._pool.submit(int)  # the pool forks on its first call: fork (and warm) now

    @classmethod
    def inline(cls) -> Worker:
        """A worker that runs each call in this process, when its result is asked for."""
        return cls(fork=False)

    def submit(self, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
        """Start `fn(*args)`; the returned callable waits for its result (or its exception)."""
        if self._pool is None:
            return lambda: fn(*args)
        future: Future[T] = self._pool.submit(fn, *args)

        def result() -> T:
            try:
                return future.result()
            except BrokenProcessPool as exc:
                raise WorkerDied(
                    "the worker process ended before it finished (killed, or out of memory?)"
                ) from exc

        return result

    def close(self) -> None:
        """Stop the worker; calls not started yet are dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
