"""The IR of the rows the resource engine records by itself (a resource's `record:`):
which handlings write them, and what each writes."""

from __future__ import annotations

from specstack_runtime.ir_node import Node


class Record(Node):  # a row the engine writes as a component handles one of `on`
    on: tuple[str, ...]  # operationIds (answered 2xx) or message names
    key: tuple[str, ...]  # the fields whose values make the row's id (stable)
    set: dict[str, str]  # field -> CEL
    when: str | None = None  # CEL
    each: str | None = None  # CEL: a list; a row per item (`item`)
    append: tuple[str, dict[str, str]] | None = None  # (list field, key -> CEL)
