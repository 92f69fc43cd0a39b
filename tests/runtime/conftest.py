"""Fixtures the runtime tests share across modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from specstack_conformance.harness import FlowRecord
from tests.runtime.test_hardening import Running, _start


@pytest.fixture(scope="session")
def compute_mv_stack() -> Iterator[Running]:
    """One embedded stack for both compute microversion modules (started once)."""
    yield from _start("sqlite")


@pytest.fixture(scope="session")
def compute_mv_server(compute_mv_stack: Running) -> FlowRecord:
    """A server booted from a volume on it."""
    return compute_mv_stack.target.boot(volume=True)
