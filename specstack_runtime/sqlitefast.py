"""The store's statements on SQLite, run on the driver's connection as prepared SQL text.

Embedded mode runs every store call of the stack on one SQLite connection in one
event loop. There, SQLAlchemy Core's per-statement work (cache keys, compiled
parameters, result wrapping) costs several times what SQLite itself does, so the
store hands SQLite its statements directly: SQL text built once per table (or per
filter shape), `?` parameters, sqlite3's own statement cache. The schema, the
column values and the semantics are the store's; only the execution is cut short.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Row = dict[str, Any]
ColumnValue = Callable[[Any], "str | None"]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteStatements:
    """Prepared SQL for tables whose columns are `columns[table]` (id first, data last)."""

    def __init__(
        self, conn: sqlite3.Connection, columns: Mapping[str, Sequence[str]], value: ColumnValue
    ) -> None:
        self.conn = conn
        self.columns = {t: tuple(cols) for t, cols in columns.items()}
        self.value = value
        self._sql: dict[tuple[str, ...], str] = {}

    def _text(self, key: tuple[str, ...], build: Callable[[], str]) -> str:
        sql = self._sql.get(key)
        if sql is None:
            sql = self._sql[key] = build()
        return sql

    # -- single rows --------------------------------------------------------------------
    def get(self, table: str, id_: str) -> str | None:
        sql = self._text(("get", table), lambda: f"SELECT data FROM {_q(table)} WHERE id = ?")
        row = self.conn.execute(sql, (id_,)).fetchone()
        return None if row is None else str(row[0])

    def insert(self, table: str, row: Row) -> None:
        """Raises sqlite3.IntegrityError when the id exists."""
        cols = self.columns[table]
        sql = self._text(
            ("insert", table),
            lambda: (
                f"INSERT INTO {_q(table)} ({', '.join(map(_q, cols))}) "
                f"VALUES ({', '.join('?' for _ in cols)})"
            ),
        )
        with self.conn:
            self.conn.execute(sql, tuple(row.get(c) for c in cols))

    def update(self, table: str, id_: str, change: Callable[[str], Row | None]) -> Row | None:
        """Read the row's data, let `change` decide the new column values, write them.

        One transaction; `change` returns None to leave the row as it is. None: no row.
        """
        cols = [c for c in self.columns[table] if c != "id"]
        sql = self._text(
            ("update", table),
            lambda: (
                f"UPDATE {_q(table)} SET {', '.join(f'{_q(c)} = ?' for c in cols)} WHERE id = ?"
            ),
        )
        with self.conn:
            data = self.get(table, id_)
            if data is None:
                return None
            values = change(data)
            if values is None:
                return None
            self.conn.execute(sql, (*(values.get(c) for c in cols), id_))
            return values

    def delete(self, table: str, id_: str) -> bool:
        sql = self._text(("delete", table), lambda: f"DELETE FROM {_q(table)} WHERE id = ?")
        with self.conn:
            return self.conn.execute(sql, (id_,)).rowcount > 0

    # -- filtered reads ---------------------------------------------------------------------
    def _where(self, where: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """`where` (indexed columns only) as SQL; a list/tuple/set value means any of them."""
        parts: list[str] = []
        params: list[Any] = []
        for key, value in where.items():
            if isinstance(value, list | tuple | set):
                values = [self.value(v) for v in value]
                if not values:
                    parts.append("0")
                    continue
                parts.append(f"{_q(key)} IN ({', '.join('?' for _ in values)})")
                params += values
            elif value is None:
                parts.append(f"{_q(key)} IS NULL")
            else:
                parts.append(f"{_q(key)} = ?")
                params.append(self.value(value))
        return (" WHERE " + " AND ".join(parts) if parts else ""), params

    def select_data(
        self, table: str, where: Mapping[str, Any], order: str, reverse: bool
    ) -> list[str]:
        clause, params = self._where(where)
        sql = (
            f"SELECT data FROM {_q(table)}{clause} "
            f"ORDER BY {_q(order)}{' DESC' if reverse else ''}, id"
        )
        return [str(r[0]) for r in self.conn.execute(sql, params)]

    def select_column(self, table: str, column: str, where: Mapping[str, Any]) -> list[Any]:
        clause, params = self._where(where)
        sql = f"SELECT {_q(column)} FROM {_q(table)}{clause}"
        return [r[0] for r in self.conn.execute(sql, params)]

    def count(self, table: str, where: Mapping[str, Any]) -> int:
        clause, params = self._where(where)
        row = self.conn.execute(f"SELECT count(*) FROM {_q(table)}{clause}", params).fetchone()
        return int(row[0])
