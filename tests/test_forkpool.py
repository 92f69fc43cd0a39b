"""The forked worker that offloaded render targets run on."""

from __future__ import annotations

import os

import pytest

from generator.pipeline.forkpool import Worker


def _pid_and_double(x: int) -> tuple[int, int]:
    return os.getpid(), 2 * x


def _fail(message: str) -> None:
    raise ValueError(message)


def test_forked_worker_runs_calls_in_another_process() -> None:
    worker = Worker()
    try:
        results = [worker.submit(_pid_and_double, i) for i in range(3)]
        pids, values = zip(*(r() for r in results), strict=True)
    finally:
        worker.close()
    assert values == (0, 2, 4)
    assert len(set(pids)) == 1 and pids[0] != os.getpid()


def test_inline_worker_runs_in_this_process() -> None:
    worker = Worker.inline()
    assert worker.submit(_pid_and_double, 5)() == (os.getpid(), 10)
    worker.close()


@pytest.mark.parametrize("make", [Worker, Worker.inline], ids=["forked", "inline"])
def test_a_failing_call_raises_its_own_error_when_its_result_is_asked_for(make: type) -> None:
    worker = make()
    try:
        result = worker.submit(_fail, "no model class for Server")
        with pytest.raises(ValueError, match="no model class for Server"):
            result()
        # the worker survives a failing call
        assert worker.submit(_pid_and_double, 1)()[1] == 2
    finally:
        worker.close()


def test_warm_runs_in_the_worker_before_the_first_call() -> None:
    worker = Worker(warm=_mark_warm)
    try:
        assert worker.submit(_is_warm)() is True
    finally:
        worker.close()
    assert not _WARM  # this process was not warmed


_WARM: list[bool] = []


def _mark_warm() -> None:
    _WARM.append(True)


def _is_warm() -> bool:
    return bool(_WARM)


def _die() -> None:
    os._exit(9)


def test_a_worker_that_dies_is_reported_as_such() -> None:
    from generator.pipeline.forkpool import WorkerDied

    worker = Worker()
    try:
        with pytest.raises(WorkerDied, match="ended before it finished"):
            worker.submit(_die)()
    finally:
        worker.close()


def _slow_warm() -> None:
    import time

    time.sleep(60)


def test_closing_a_worker_given_up_on_ends_it_instead_of_waiting() -> None:
    """An invalid spec ends the run while the worker still imports: it is terminated."""
    worker = Worker(warm=_slow_warm)
    processes = list(worker._pool._processes.values())  # type: ignore[union-attr]
    worker.submit(_pid_and_double, 1)  # never asked for
    worker.close()
    assert processes and all(p.exitcode is not None and p.exitcode < 0 for p in processes)
