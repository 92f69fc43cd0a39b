"""Service logs in OpenStack's shape: every line names its component and its request.

A line reads like oslo.log's context format:

    2026-11-27 23:40:01.123 4242 INFO nova-api [req-1 global-req-9 user project] "POST /v2.1/servers" status: 202 ...

The request part comes from a context variable that the API app, the queue
dispatcher and the flow set for the call they serve, so a line logged anywhere
below them (a behaviour, a driver) carries the request id and the global request
id of the flow without being handed them. Records logged outside any call read
`[-]`, as oslo.log prints them.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(component)s [%(request)s] %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class LogContext:
    component: str
    request_id: str
    global_request_id: str
    user_id: str = "-"
    project_id: str = "-"

    def render(self) -> str:
        return f"{self.request_id} {self.global_request_id} {self.user_id} {self.project_id}"


_current: contextvars.ContextVar[LogContext | None] = contextvars.ContextVar(
    "specstack_log_context", default=None
)


def current() -> LogContext | None:
    return _current.get()


@contextmanager
def bound(ctx: LogContext) -> Iterator[LogContext]:
    """Make ctx the request every record logged inside the block belongs to."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def bind(ctx: LogContext) -> contextvars.Token[LogContext | None]:
    return _current.set(ctx)


def unbind(token: contextvars.Token[LogContext | None]) -> None:
    _current.reset(token)


class RequestContextFilter(logging.Filter):
    """Fill `component` and `request` on every record from the current call."""

    def __init__(self, default_component: str = "specstack") -> None:
        super().__init__()
        self.default_component = default_component

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        if ctx is None:
            record.component = getattr(record, "component", None) or self.default_component
            record.request = "-"
        else:
            record.component = ctx.component
            record.request = ctx.render()
        return True


class PerComponentFileHandler(logging.Handler):
    """One log file per component (`nova-api.log`, `nova-compute.log`, ...) in a directory.

    Embedded mode runs every component in one process; this keeps their logs apart
    the way separate services would write them.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, TextIO] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            name = str(getattr(record, "component", "specstack")) or "specstack"
            stream = self._files.get(name)
            if stream is None:
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                stream = open(self.directory / f"{safe}.log", "a", encoding="utf-8")  # noqa: SIM115
                self._files[name] = stream
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        for stream in self._files.values():
            stream.close()
        self._files.clear()
        super().close()


#: The level of the lines logged for every request (API access lines, handled queue
#: messages, sequence steps): DEBUG unless SPECSTACK_REQUEST_LOG_LEVEL says otherwise, so a
#: busy stack does not format and write a line per request at the default INFO level.
REQUEST_LOG_ENV = "SPECSTACK_REQUEST_LOG_LEVEL"
_request_level: int = logging.DEBUG


def request_level() -> int:
    """The level per-request lines are logged at (see `configure`)."""
    return _request_level


_installed: list[logging.Handler] = []
# The runtime's own loggers ("specstack.api", ...) and the behaviours' module loggers.
_ROOTS = ("specstack", "specstack_runtime")


def configure(
    *,
    directory: Path | None = None,
    stream: TextIO | None = None,
    level: int | str = logging.INFO,
    component: str = "specstack",
    request_level: int | str = logging.DEBUG,
) -> None:
    """Send the stack's logs (loggers `specstack.*`, `specstack_runtime.*`) to files and/or a stream.

    directory: one file per component in it; stream: every line also there.
    request_level: the level of the lines logged per request (access lines, handled
    messages, steps). Calling it again replaces what an earlier call installed.
    """
    global _request_level
    _request_level = (
        logging.getLevelNamesMapping()[request_level.upper()]
        if isinstance(request_level, str)
        else request_level
    )
    roots = [logging.getLogger(name) for name in _ROOTS]
    for old in _installed:
        for root in roots:
            root.removeHandler(old)
        old.close()
    _installed.clear()
    formatter = logging.Formatter(FORMAT, DATEFMT)
    context = RequestContextFilter(component)
    if directory is not None:
        _installed.append(PerComponentFileHandler(directory))
    if stream is not None:
        _installed.append(logging.StreamHandler(stream))
    for handler in _installed:
        handler.setFormatter(formatter)
        handler.addFilter(context)
    for root in roots:
        for handler in _installed:
            root.addHandler(handler)
        root.setLevel(level)
        root.propagate = not _installed


def level_from_env(default: str = "INFO", variable: str = "SPECSTACK_LOG_LEVEL") -> str:
    value = os.environ.get(variable, default).upper()
    if value not in logging.getLevelNamesMapping():
        print(
            f"{variable}={value!r} is not a logging level; using {default}",
            file=sys.stderr,
        )
        return default
    return value


def request_level_from_env() -> str:
    """SPECSTACK_REQUEST_LOG_LEVEL: the level of per-request lines (default DEBUG)."""
    return level_from_env("DEBUG", REQUEST_LOG_ENV)
