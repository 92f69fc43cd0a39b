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
        self._futures: list[Future[Any]] = []
        if fork and "fork" in mp.get_all_start_methods():
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=mp.get_context("fork"), initializer=warm
            )
            # the pool forks on its first call: fork (and warm) now
            self._futures.append(self._pool.submit(int))

    @classmethod
    def inline(cls) -> Worker:
        """A worker that runs each call in this process, when its result is asked for."""
        return cls(fork=False)

    def submit(self, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
        """Start `fn(*args)`; the returned callable waits for its result (or its exception)."""
        if self._pool is None:
            return lambda: fn(*args)
        future: Future[T] = self._pool.submit(fn, *args)
        self._futures.append(future)

        def result() -> T:
            try:
                return future.result()
            except BrokenProcessPool as exc:
                raise WorkerDied(
                    "the worker process ended before it finished (killed, or out of memory?)"
                ) from exc

        return result

    def close(self) -> None:
        """Stop the worker and wait for it to exit; calls not started yet are dropped.

        Not waiting leaves the pool's wake-up pipe closed under its exit handler,
        which then fails at interpreter exit ("Bad file descriptor").
        """
        if self._pool is None:
            return
        if not all(f.done() for f in self._futures):
            # given up on (an invalid spec): end it now rather than after its imports;
            # the executor has no public way to, hence its process table
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
