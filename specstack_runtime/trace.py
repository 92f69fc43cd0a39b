"""The trace recorder: one event per step a component carries out, kept per flow.

A flow is one run of a sequence, identified by its global request id. Events are
handed to live listeners as they end (the `run` command prints steps so) and written
to a SQLite file in the data directory in small batches, so a trace survives the
process and `specstack trace` can read it later; a flow is read back from that file.
A trace without a file (tests) keeps its last flows in memory instead.

In distributed mode (`shared=True`) every process of the stack, on every host,
writes its events to one store on the database server (`url`, `trace_sql`), and
reading a flow always reads the store, so it gathers the steps of every process.
(With a `path` and `shared`, the processes of one host share the SQLite file.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specstack_runtime import jsoncodec

if TYPE_CHECKING:
    from specstack_runtime.trace_sql import SqlTraceStore

# What a trace keeps in memory: one without a file or database its last flows, there
# only; a persistent one none (it reads its store, which has them all) and its latest
# aliases and owners: a long-running stack's memory does not grow with its requests.
MAX_FLOWS_IN_MEMORY = 300
MAX_NAMES_IN_MEMORY = 4096  # aliases and owners


@dataclass(frozen=True)
class TraceEvent:
    flow_id: str  # the global request id of the flow
    sequence: str
    step: str  # label: "7" or "7.1"
    title: str
    source: str
    target: str
    via: str
    name: str | None  # operation, message or driver method
    status: str  # ok | error | skipped
    started_at: float
    ended_at: float
    request_id: str  # the request id of the handling component's call
    host: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.ended_at - self.started_at) * 1000.0

    def as_dict(self) -> dict[str, Any]:
        # Shallow: the bodies in `detail` are only read (asdict deep-copied them per event).
        d = {name: getattr(self, name) for name in _FIELDS}
        detail = d["detail"] = dict(self.detail)
        d["duration_ms"] = round(self.duration_ms, 3)
        received = detail.get("received")
        if isinstance(received, bytes | bytearray):  # a JSON answer kept as it came
            try:
                detail["received"] = jsoncodec.loads(received)
            except ValueError:
                detail.pop("received")
        return d


_FIELDS = tuple(f.name for f in fields(TraceEvent))


Listener = Callable[[TraceEvent], None]
#: an event as the store keeps it: flow id, sequence, step, body (JSON text), started at
Row = tuple[str, str, str, str, float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  flow_id TEXT NOT NULL, sequence TEXT NOT NULL, step TEXT NOT NULL, body TEXT NOT NULL,
  started_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ix_events_flow ON events (flow_id);
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, flow_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owners (flow_id TEXT PRIMARY KEY, project_id TEXT NOT NULL);
"""


class TraceRecorder:
    def __init__(self, path: Path | None, *, shared: bool = False, url: str | None = None) -> None:
        """`path`: the SQLite trace file; `url`: a database server's store instead."""
        self.path = None if url else path
        self.sql: SqlTraceStore | None = None
        if url:
            from specstack_runtime.trace_sql import SqlTraceStore

            self.sql = SqlTraceStore(url)
        self.persistent = self.path is not None or self.sql is not None
        self.shared = shared and self.persistent
        self._flows: OrderedDict[str, list[Row]] = OrderedDict()
        self._aliases: dict[str, str] = {}
        self._pending: list[Row] = []
        self._pending_aliases: list[tuple[str, str]] = []
        self._owners: dict[str, str] = {}
        self._pending_owners: list[tuple[str, str]] = []
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        # The trace file's writer: one connection kept open (a flush opened one, set its
        # journal mode and dropped it again, five times a second), one flush at a time.
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._flusher: asyncio.Task[None] | None = None
        if self.path is not None:
            path = self.path
            path.parent.mkdir(parents=True, exist_ok=True)
            _private(path)
            with self._connect() as db:
                db.executescript(_SCHEMA)

    def _connect(self, *, any_thread: bool = False) -> sqlite3.Connection:
        assert self.path is not None
        db = sqlite3.connect(self.path, timeout=10, check_same_thread=not any_thread)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # recording -------------------------------------------------------------
    def record(self, event: TraceEvent) -> None:
        # Kept as the row the store gets (its body JSON text): untracked by the garbage
        # collector, where the event and its bodies were some 160 objects a boot.
        row = (
            event.flow_id,
            event.sequence,
            event.step,
            jsoncodec.dumps(event.as_dict()).decode(),
            event.started_at,
        )
        with self._lock:
            if self.persistent:  # read back from its store
                self._pending.append(row)
            else:
                self._flows.setdefault(event.flow_id, []).append(row)
                self._flows.move_to_end(event.flow_id)
                while len(self._flows) > MAX_FLOWS_IN_MEMORY:
                    self._flows.popitem(last=False)
        for listener in list(self._listeners):
            listener(event)

    def alias(self, alias: str, flow_id: str) -> None:
        """Let `alias` (e.g. the request id nova-api answered with) name the flow too."""
        if alias == flow_id:
            return
        with self._lock:
            _keep(self._aliases, alias, flow_id)
            if self.persistent:
                self._pending_aliases.append((alias, flow_id))

    def own(self, flow_id: str, project_id: str) -> None:
        """The project whose token started the flow at its entry (the first one to)."""
        with self._lock:
            if flow_id in self._owners:
                return
            _keep(self._owners, flow_id, project_id)
            if self.persistent:
                self._pending_owners.append((flow_id, project_id))

    def owner(self, some_id: str) -> str | None:
        """The project that started the flow `some_id` names, if one is known (a persistent
        trace's store has the first one: its memory keeps only the latest names)."""
        flow_id = self.resolve(some_id)
        if self.sql is not None:
            self.flush()
            return self.sql.owner(flow_id) or self._owners.get(flow_id)
        if self.path is None or not self.path.exists():
            return self._owners.get(flow_id)
        self.flush()
        with self._connect() as db:
            row = db.execute(
                "SELECT project_id FROM owners WHERE flow_id = ?", (flow_id,)
            ).fetchone()
        return str(row[0]) if row else self._owners.get(flow_id)

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # persistence -----------------------------------------------------------
    def _has_pending(self) -> bool:
        return bool(self._pending or self._pending_aliases or self._pending_owners)

    def flush(self) -> None:
        # one flush at a time, in the order the events were taken
        with self._write_lock:
            with self._lock:
                events, self._pending = self._pending, []
                aliases, self._pending_aliases = self._pending_aliases, []
                owners, self._pending_owners = self._pending_owners, []
            if not self.persistent or not (events or aliases or owners):
                return
            rows = events
            if self.sql is not None:
                self.sql.write(rows, aliases, owners)
                return
            db = self._writer
            if db is None:
                db = self._writer = self._connect(any_thread=True)
            try:
                with db:
                    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
                    db.executemany("INSERT OR REPLACE INTO aliases VALUES (?, ?)", aliases)
                    db.executemany("INSERT OR IGNORE INTO owners VALUES (?, ?)", owners)
            except sqlite3.Error:
                self._close_writer()  # the next flush opens the file again
                raise

    async def run_flusher(self, interval: float = 0.2) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                if self._has_pending():  # no thread's turn for nothing to write
                    await asyncio.to_thread(self.flush)
        finally:
            self.flush()

    def _close_writer(self) -> None:
        db, self._writer = self._writer, None
        if db is not None:
            db.close()

    def close(self) -> None:
        with self._write_lock:
            self._close_writer()
        if self.sql is not None:
            self.sql.close()

    # reading ---------------------------------------------------------------
    def resolve(self, some_id: str) -> str:
        if some_id in self._aliases:
            return self._aliases[some_id]
        if self.sql is not None:
            self.flush()
            return self.sql.flow_of(some_id) or some_id
        if self.path is not None and self.path.exists():
            self.flush()
            with self._connect() as db:
                row = db.execute(
                    "SELECT flow_id FROM aliases WHERE alias = ?", (some_id,)
                ).fetchone()
            if row:
                return str(row[0])
        return some_id

    def events(self, some_id: str) -> list[dict[str, Any]]:
        """Every event of the flow that `some_id` names (flow id or alias), in start order."""
        flow_id = self.resolve(some_id)
        if not self.persistent:
            with self._lock:
                live = sorted(self._flows.get(flow_id, ()), key=lambda row: row[4])
            return [jsoncodec.loads(row[3]) for row in live]
        if self.sql is not None:
            self.flush()
            return [jsoncodec.loads(b) for b in self.sql.bodies(flow_id)]
        if self.path is None or not self.path.exists():
            return []
        self.flush()
        with self._connect() as db:
            rows = db.execute(
                "SELECT body FROM events WHERE flow_id = ? ORDER BY started_at", (flow_id,)
            ).fetchall()
        return [jsoncodec.loads(r[0]) for r in rows]


def sequence_events(path: Path, sequence: str, since: float) -> list[dict[str, Any]]:
    """Every event of `sequence`'s flows that started at or after `since` in the trace file
    at `path` (read-only: a stack may be writing it), in no particular order."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT body FROM events WHERE sequence = ? AND started_at >= ?", (sequence, since)
        ).fetchall()
    finally:
        db.close()
    return [jsoncodec.loads(r[0]) for r in rows]


def _keep(names: dict[str, str], key: str, value: str) -> None:
    """`names[key] = value`, the oldest name dropped past MAX_NAMES_IN_MEMORY."""
    names[key] = value
    if len(names) > MAX_NAMES_IN_MEMORY:
        del names[next(iter(names))]


def _private(path: Path) -> None:
    """The trace file (and SQLite's -wal and -shm beside it, which take its mode) readable
    by the stack's user only: it holds request bodies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        # SQLite removes -wal and -shm when another process's last connection closes: one
        # may go between a look and the chmod (distributed processes start together)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(p, 0o600)


def now() -> float:
    return time.time()
