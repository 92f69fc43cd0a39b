"""Database backends for the database-layer tests: SQLite, PostgreSQL and MariaDB.

Every test gets a database of its own, created with a unique name and dropped after,
on the machine's servers (SPECSTACK_TEST_PG_URL, SPECSTACK_TEST_MARIADB_URL). A server
that does not answer skips its tests, except under CI, where that is a failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from specstack_runtime import migrate
from specstack_runtime.store import Store, TableSpec

SERVERS = {
    "postgresql": os.environ.get("SPECSTACK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/"),
    "mariadb": os.environ.get("SPECSTACK_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/"),
}
BACKENDS = ["sqlite", *SERVERS]
# A table of no spec, for the store's own tests.
THINGS = [TableSpec("things", ("project_id", "name", "state"))]


def _reachable(url: str) -> bool:
    u = make_url(url)
    try:
        with socket.create_connection((u.host or "127.0.0.1", u.port or 0), 2):
            return True
    except OSError:
        return False


def server_database(backend: str) -> str:
    """The URL of a new, empty database on `backend`'s server."""
    base = SERVERS[backend]
    if not _reachable(base):
        message = f"{backend} is not reachable at {make_url(base).host}:{make_url(base).port}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must start it: .ci/services.sh)")
        package = {"postgresql": "postgresql", "mariadb": "mariadb-server"}[backend]
        pytest.skip(f"{message} (apt-get install {package}, then bash .ci/services.sh)")
    name = f"specstack_test_{uuid.uuid4().hex[:12]}"
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    assert migrate.ensure_database(url)
    return url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    url = server_database(request.param)
    try:
        yield url
    finally:
        migrate.drop_database(url)


@pytest.fixture(params=list(SERVERS))
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """PostgreSQL and MariaDB only: several processes' connections on one database."""
    url = server_database(request.param)
    try:
        yield url
    finally:
        migrate.drop_database(url)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store of THINGS on each backend in turn."""
    s = Store(db_url, THINGS, database=None)
    if s.sqlite:
        s.create_schema()
    else:
        # "things" is no table of the spec, so there is no migration for it: create it
        # the way the migrations would (their equality is checked in test_migrations).
        s.metadata.create_all(s.engine)
    yield s
    s.close()
