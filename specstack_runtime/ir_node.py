"""The base of every IR node: immutable, and strict about the fields it takes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(Node):  # where a declaration lives in the spec (path inside the spec directory)
    file: str
    line: int


class ErrorText(Node):
    message: str
    kind: str | None = None
    status: int | None = None  # a named error: its message, type name and status
