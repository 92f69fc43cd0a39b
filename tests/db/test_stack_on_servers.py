"""The generated stack, unchanged, on RabbitMQ, PostgreSQL and MariaDB instead of the
in-process bus and SQLite: the demo VM boots through all 15 steps and its state lands
in the server databases (created and migrated by the stores)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from generator.commands.run import run_stack
from specstack_conformance.harness import free_port_block
from specstack_runtime import migrate
from specstack_runtime.config import StackConfig
from specstack_runtime.store import Store
from tests.db.conftest import server_database
from tests.db.spec_tables import DATABASES, REPO, tables
from tests.runtime import rabbit


@pytest.fixture
def on_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Each database on a server of its own kind: glance on MariaDB, the rest on PostgreSQL."""
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))  # the generated package
    urls: dict[str, str] = {}
    try:
        for database in DATABASES:
            urls[database] = server_database("mariadb" if database == "glance-db" else "postgresql")
        yield urls
    finally:
        for url in urls.values():
            migrate.drop_database(url)


def test_demo_boots_on_rabbitmq_postgresql_and_mariadb(
    on_servers: dict[str, str], tmp_path: Path
) -> None:
    config = StackConfig(
        data_dir=tmp_path / "data",
        base_port=free_port_block(8),
        bus_url=f"{rabbit.session_url()}?prefix={rabbit.unique_prefix()}",
        database_urls=on_servers,
    )
    out = io.StringIO()
    code = asyncio.run(run_stack(config, once=True, console=Console(file=out, width=200)))
    assert code == 0, out.getvalue()
    assert "[15/15]" in out.getvalue() and "is ACTIVE" in out.getvalue()
    assert not list((tmp_path / "data").glob("db/*.sqlite"))  # nothing fell back to SQLite

    async def stored() -> tuple[list[str], list[str]]:
        nova = Store(on_servers["nova-db"], tables("nova-db"), database="nova-db")
        glance = Store(on_servers["glance-db"], tables("glance-db"), database="glance-db")
        try:
            states = [d.get("vm_state", "") for d in await nova.list("instances")]
            images = [d["id"] for d in await glance.list("images")]
            return states, images
        finally:
            nova.close()
            glance.close()

    states, images = asyncio.run(stored())
    assert states == ["active"] and images
    for database, url in on_servers.items():
        assert migrate.current(url, database) == migrate.head(database)
