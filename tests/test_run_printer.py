"""`specstack run`'s step lines in distributed mode: the shared trace is polled from worker
threads (a poll of the follower may still run when the final reads start), and each step
must still be printed once, in order."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

from rich.console import Console

from generator.commands.run import SharedTraceFeed, StepPrinter
from specstack_runtime.trace import TraceEvent

STEPS = [{"label": str(n), "title": f"step {n}"} for n in range(1, 16)]


class SlowStore:
    """The shared trace as the feed reads it: every step's event, each read taking a while."""

    def __init__(self) -> None:
        self.reads = 0

    def events(self, flow_id: str) -> list[dict[str, Any]]:
        self.reads += 1
        time.sleep(0.001)
        return [
            TraceEvent(
                flow_id=flow_id, sequence="boot-vm", step=s["label"], title=s["title"],
                source="a", target="b", via="http", name=None, status="ok",
                started_at=float(n), ended_at=n + 0.001, request_id=f"req-{n}", host="h",
            ).as_dict()
            for n, s in enumerate(STEPS)
        ]  # fmt: skip


def test_polls_from_several_threads_print_each_step_once_in_order() -> None:
    out = io.StringIO()
    printer = StepPrinter(Console(file=out, width=200), {"steps": STEPS})
    store = SlowStore()
    feed = SharedTraceFeed(store, printer)  # type: ignore[arg-type]
    feed.flow_id = "req-1"
    threads = [threading.Thread(target=feed.poll) for _ in range(8)]
    for t in threads:
        t.start()
    printer.flush(final=True)
    for t in threads:
        t.join()
    printer.flush(final=True)
    labels = [line.split("]")[0].strip("[ ").split("/")[0] for line in out.getvalue().splitlines()]
    assert labels == [s["label"] for s in STEPS]
    assert store.reads == 8
