"""A database's tables: what their compound indexes may name."""

from __future__ import annotations

from typing import Any

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import PathElem, SpecFile
from generator.pipeline.validate.names import hint
from specstack_runtime.ir import index_name

#: PostgreSQL's limit on an identifier (MariaDB's is 64)
MAX_NAME = 63


def compound_indexes(
    f: SpecFile, base: list[PathElem], table: str, spec: dict[str, Any]
) -> list[Diagnostic]:
    """Each compound index is over the table's own indexed columns (the only columns it has
    besides id, created_at and the document), with a name every backend takes."""
    columns = list(spec.get("indexes") or [])
    out = []
    for n, compound in enumerate(spec.get("compound") or []):
        for m, column in enumerate(compound):
            if column not in columns:
                out.append(
                    f.at(
                        [*base, "compound", n, m],
                        f"compound index of table '{table}': '{column}' is not one of its "
                        f"indexed columns{hint(column, columns, 'indexes')}",
                    )
                )
        name = index_name(table, compound)
        if len(name) > MAX_NAME:
            out.append(
                f.at(
                    [*base, "compound", n],
                    f"compound index {name!r} is {len(name)} characters long; PostgreSQL "
                    f"takes {MAX_NAME} at most (index fewer columns)",
                )
            )
    return out
