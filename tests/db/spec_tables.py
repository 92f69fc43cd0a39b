"""The databases and tables the spec declares, as the runtime reads them (generated/ir.json)."""

from __future__ import annotations

from pathlib import Path

from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import TableSpec

REPO = Path(__file__).resolve().parents[2]
INFO = StackInfo.load(REPO / "generated" / "ir.json")
DATABASES = sorted(n for n, c in INFO.components.items() if c["kind"] == "database" and c["tables"])


def tables(database: str) -> list[TableSpec]:
    return [TableSpec.of(t) for t in INFO.components[database]["tables"]]
