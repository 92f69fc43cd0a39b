"""The trace store on a database server (PostgreSQL or MariaDB), through SQLAlchemy.

A distributed stack's processes run on several hosts that share no file: each one
writes its trace events to this store, and every reader (`specstack trace`, the
trace endpoint the dashboard and the conformance report ask) reads the flow back
from it, with the steps of every host. The tables are those of the SQLite trace
file: events (the event as JSON), aliases and owners.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from specstack_runtime import jsoncodec
from specstack_runtime.database import engine_url

_meta = MetaData()
EVENTS = Table(
    "trace_events",
    _meta,
    Column("flow_id", String(255), nullable=False),
    Column("sequence", String(255), nullable=False),
    Column("step", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("started_at", Float(precision=53), nullable=False),
    Index("ix_trace_events_flow", "flow_id"),
)
ALIASES = Table(
    "trace_aliases",
    _meta,
    Column("alias", String(255), primary_key=True),
    Column("flow_id", String(255), nullable=False),
)
OWNERS = Table(
    "trace_owners",
    _meta,
    Column("flow_id", String(255), primary_key=True),
    Column("project_id", String(255), nullable=False),
)


def create_schema(url: str) -> None:
    """The trace tables on the server (done once by the supervisor, before its processes)."""
    engine = create_engine(engine_url(url))
    try:
        _meta.create_all(engine, checkfirst=True)
    finally:
        engine.dispose()


class SqlTraceStore:
    """Events, aliases and owners of flows in the tables of a database server."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(engine_url(url), pool_pre_ping=True, pool_size=2)
        try:
            _meta.create_all(self.engine, checkfirst=True)
        except DBAPIError:
            # another process created them between the check and the CREATE
            _meta.create_all(self.engine, checkfirst=True)

    def _upsert(self, table: Table, rows: Sequence[dict[str, Any]], replace: str | None) -> Any:
        """INSERT that replaces the `replace` column of an existing key, or keeps the row."""
        name = self.engine.dialect.name
        if name == "postgresql":
            pg = postgresql.insert(table)
            if replace is None:
                return pg.on_conflict_do_nothing()
            return pg.on_conflict_do_update(
                index_elements=list(table.primary_key.columns),
                set_={replace: pg.excluded[replace]},
            )
        if name in ("mysql", "mariadb"):
            my = mysql.insert(table)
            if replace is None:
                return my.prefix_with("IGNORE")
            return my.on_duplicate_key_update({replace: my.inserted[replace]})
        lite = sqlite.insert(table)
        if replace is None:
            return lite.on_conflict_do_nothing()
        return lite.on_conflict_do_update(set_={replace: lite.excluded[replace]})

    def write(
        self,
        events: list[tuple[str, str, str, str, float]],
        aliases: list[tuple[str, str]],
        owners: list[tuple[str, str]],
    ) -> None:
        with self.engine.begin() as conn:
            if events:
                conn.execute(
                    EVENTS.insert(),
                    [
                        {"flow_id": f, "sequence": s, "step": st, "body": b, "started_at": t}
                        for f, s, st, b, t in events
                    ],
                )
            if aliases:
                rows = [{"alias": a, "flow_id": f} for a, f in dict(aliases).items()]
                conn.execute(self._upsert(ALIASES, rows, "flow_id"), rows)
            if owners:
                rows = [{"flow_id": f, "project_id": p} for f, p in owners]
                conn.execute(self._upsert(OWNERS, rows, None), rows)

    def flow_of(self, alias: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(ALIASES.c.flow_id).where(ALIASES.c.alias == alias)).first()
        return str(row[0]) if row else None

    def owner(self, flow_id: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(OWNERS.c.project_id).where(OWNERS.c.flow_id == flow_id)
            ).first()
        return str(row[0]) if row else None

    def bodies(self, flow_id: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(EVENTS.c.body)
                .where(EVENTS.c.flow_id == flow_id)
                .order_by(EVENTS.c.started_at)
            ).all()
        return [str(r[0]) for r in rows]

    def sequence_events(self, sequence: str, since: float) -> list[dict[str, Any]]:
        """Every event of `sequence`'s flows begun at or after `since` (as the trace file's
        `trace.sequence_events`), in no particular order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(EVENTS.c.body).where(
                    EVENTS.c.sequence == sequence, EVENTS.c.started_at >= since
                )
            ).all()
        return [jsoncodec.loads(r[0]) for r in rows]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.engine.dispose()
