"""Bad input and secrets (issue 14): what a running stack guarantees, on SQLite and PostgreSQL.

- a NUL in any string of a request, or a value over its column's size, is a 400 in the
  service's own error format, and changes nothing;
- a microversion of thousands of digits is a 400;
- regular-expression filters run on RE2 (linear time), a bad or over-long pattern is a 400;
- a request body is read only after the token is checked, and only up to a limit (413);
- idle keep-alive connections are kept longer than clients' pools keep theirs.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from specstack_conformance.harness import Target, free_port_block
from specstack_runtime import migrate
from specstack_runtime.config import StackConfig, load_config
from specstack_runtime.embedded import load_generated
from specstack_runtime.errorformat import render
from specstack_runtime.errors import ApiError, BadRequest, RangeNotSatisfiable
from specstack_runtime.store import Store, TableSpec
from tests.db.conftest import server_database
from tests.db.spec_tables import DATABASES

from ..conftest import REPO

NUL = "\u0000"


# --- a running stack on each backend ---------------------------------------------------


@dataclass
class Running:
    target: Target
    backend: str
    urls: dict[str, str]  # API name -> base URL
    token: str  # admin, project admin
    project_id: str
    network_id: str
    log: list[str] = field(default_factory=list)  # every log line the stack wrote

    @property
    def data_dir(self) -> Path:
        return self.target.config.data_dir

    def http(self, api: str, method: str, path: str, *, auth: bool = True, **kw: Any) -> Any:
        headers = {"X-Auth-Token": self.token} if auth else {}
        headers.update(kw.pop("headers", {}))
        with httpx.Client(timeout=60) as client:
            return client.request(method, self.urls[api] + path, headers=headers, **kw)


class _Lines(logging.Handler):
    """Every record as the service logs print it, tracebacks included."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _start(backend: str) -> Iterator[Running]:
    urls: dict[str, str] = {}
    if backend == "postgresql":
        for database in DATABASES:
            urls[database] = server_database("postgresql")
    lines: list[str] = []
    handler = _Lines(lines)
    logging.getLogger().addHandler(handler)
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    # the stack's own lines down to DEBUG: the per-request lines (access, steps) are there
    ours = logging.getLogger("specstack")
    previous_ours = ours.level
    ours.setLevel(logging.DEBUG)
    target: Target | None = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(REPO)
            mp.syspath_prepend(str(REPO))
            info = load_generated()[0]
            apis = list(info.apis)
            config = StackConfig(
                data_dir=Path(tempfile.mkdtemp(prefix="specstack-hardening-")),
                base_port=free_port_block(len(info.listening)),
                bcrypt_rounds=4,
                database_urls=urls,
            )
            target = Target.embedded(config)
        assert target.ids is not None
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "admin",
                            "domain": {"name": "Default"},
                            "password": config.admin_password,
                        }
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
            }
        }
        identity = info.endpoint(info.api_of_type("identity"), config)
        resp = httpx.post(f"{identity}/v3/auth/tokens", json=body, timeout=30)
        assert resp.status_code == 201, resp.text
        yield Running(
            target=target,
            backend=backend,
            urls={api: info.endpoint(api, config) for api in apis},
            token=resp.headers["X-Subject-Token"],
            project_id=resp.json()["token"]["project"]["id"],
            network_id=target.ids.network_id,
            log=lines,
        )
    finally:
        if target is not None:
            target.close()
            shutil.rmtree(target.config.data_dir, ignore_errors=True)
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous)
        ours.setLevel(previous_ours)
        for url in urls.values():
            migrate.drop_database(url)


@pytest.fixture(scope="module")
def on_sqlite() -> Iterator[Running]:
    yield from _start("sqlite")


@pytest.fixture(scope="module")
def on_postgresql() -> Iterator[Running]:
    yield from _start("postgresql")


@pytest.fixture(params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest) -> Running:
    """The same tests on each backend (PostgreSQL skips, saying why, when unreachable)."""
    running: Running = request.getfixturevalue(f"on_{request.param}")
    return running


# --- the service's error format ------------------------------------------------------------

FORMAT_OF = {
    "identity": "keystone",
    "compute": "nova",
    "image": "glance",
    "network": "neutron",
    "block-storage": "cinder",
}


def message_of(api: str, resp: httpx.Response, status: int) -> str:
    """The error's message, after checking the body is in the service's own format."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    fmt = FORMAT_OF[api]
    if fmt in ("keystone", "glance"):
        assert body["error"]["code"] == status
        return str(body["error"]["message"])
    if fmt == "neutron":
        assert body["NeutronError"]["type"] in ("BadRequest", "InvalidInput")
        return str(body["NeutronError"]["message"])
    key = {400: "badRequest", 413: "overLimit"}[status]
    assert list(body) == [key] and body[key]["code"] == status
    return str(body[key]["message"])


def test_cinder_names_an_unexpected_failure_computefault_as_nova_does() -> None:
    body, _ = render("cinder", ApiError("The server has either erred"))
    assert json.loads(body) == {
        "computeFault": {"message": "The server has either erred", "code": 500}
    }
    body, _ = render("cinder", BadRequest("bad"))
    assert json.loads(body) == {"badRequest": {"message": "bad", "code": 400}}


def test_swift_pages_escape_the_message_and_name_the_status() -> None:
    body, ctype = render("swift", BadRequest("object name '<b>&' must not contain '..'"))
    assert ctype == "text/html; charset=UTF-8"
    assert body == (
        b"<html><h1>Bad Request</h1><p>object name '&lt;b&gt;&amp;' must not contain '..'</p></html>"
    )
    body, _ = render("swift", RangeNotSatisfiable("The Range requested is not available."))
    assert body.startswith(b"<html><h1>Requested Range Not Satisfiable</h1>")


# --- NUL and sizes ----------------------------------------------------------------------------

Request = Callable[[Running], httpx.Response]

NUL_CASES: dict[str, tuple[str, Request]] = {
    "unauthenticated token request, user name": (
        "identity",
        lambda s: s.http(
            "identity",
            "POST",
            "/v3/auth/tokens",
            auth=False,
            json={
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": f"de{NUL}mo",
                                "domain": {"name": "Default"},
                                "password": "demo",
                            }
                        },
                    }
                }
            },
        ),
    ),
    "role name filter": (
        "identity",
        lambda s: s.http("identity", "GET", "/v3/roles", params={"name": f"a{NUL}b"}),
    ),
    "server id in the path": (
        "compute",
        lambda s: s.http("compute", "GET", "/v2.1/servers/a%00b"),
    ),
    "server name filter": (
        "compute",
        lambda s: s.http("compute", "GET", "/v2.1/servers", params={"name": f"a{NUL}"}),
    ),
    "flavor id in the path": (
        "compute",
        lambda s: s.http("compute", "GET", "/v2.1/flavors/1%00"),
    ),
    "network name": (
        "network",
        lambda s: s.http(
            "network", "POST", "/v2.0/networks", json={"network": {"name": f"n{NUL}1"}}
        ),
    ),
    "network filter": (
        "network",
        lambda s: s.http("network", "GET", "/v2.0/networks", params={"name": f"n{NUL}1"}),
    ),
    "image name": (
        "image",
        lambda s: s.http("image", "POST", "/v2/images", json={"name": f"i{NUL}1"}),
    ),
    "image filter": (
        "image",
        lambda s: s.http("image", "GET", "/v2/images", params={"name": f"i{NUL}1"}),
    ),
    "volume name": (
        "block-storage",
        lambda s: s.http(
            "block-storage",
            "POST",
            f"/v3/{s.project_id}/volumes",
            json={"volume": {"size": 1, "name": f"v{NUL}1"}},
        ),
    ),
    "volume filter": (
        "block-storage",
        lambda s: s.http(
            "block-storage", "GET", f"/v3/{s.project_id}/volumes", params={"name": f"v{NUL}1"}
        ),
    ),
    "a key of the body": (
        "network",
        lambda s: s.http(
            "network", "POST", "/v2.0/networks", json={"network": {f"name{NUL}": "n"}}
        ),
    ),
}


@pytest.mark.parametrize("case", list(NUL_CASES))
def test_a_nul_anywhere_in_a_request_is_a_400_in_the_services_format(
    stack: Running, case: str
) -> None:
    api, send = NUL_CASES[case]
    message = message_of(api, send(stack), 400)
    assert "NUL character" in message, message


def test_a_refused_nul_changes_nothing(stack: Running) -> None:
    def names() -> list[str]:
        resp = stack.http("network", "GET", "/v2.0/networks")
        assert resp.status_code == 200
        return sorted(n["name"] for n in resp.json()["networks"])

    before = names()
    resp = stack.http("network", "POST", "/v2.0/networks", json={"network": {"name": f"x{NUL}"}})
    assert resp.status_code == 400
    assert names() == before


def test_a_value_over_its_columns_size_is_a_400_and_changes_nothing(stack: Running) -> None:
    # A port's device_id: its column has 255 characters.
    device = "d" * 300
    resp = stack.http(
        "network",
        "POST",
        "/v2.0/ports",
        json={"port": {"network_id": stack.network_id, "device_id": device}},
    )
    assert "device_id" in message_of("network", resp, 400)
    ports = stack.http("network", "GET", "/v2.0/ports").json()["ports"]
    assert all(p["device_id"] != device for p in ports)
    # A flavor's id is its row's id (64 characters).
    resp = stack.http(
        "compute",
        "POST",
        "/v2.1/flavors",
        json={"flavor": {"name": "too-long-id", "ram": 64, "vcpus": 1, "disk": 1, "id": "f" * 65}},
    )
    assert "longer than 64 characters" in message_of("compute", resp, 400)
    flavors = stack.http("compute", "GET", "/v2.1/flavors").json()["flavors"]
    assert "too-long-id" not in {f["name"] for f in flavors}


def test_the_store_refuses_values_no_backend_would_keep(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", [TableSpec("things", ("name",))])
    store.create_schema()
    try:

        async def attempts() -> list[str]:
            out = []
            for doc in (
                {"id": "a" * 65, "name": "x"},
                {"id": "b", "name": "n" * 256},
                {"id": "c", "name": f"n{NUL}"},
            ):
                try:
                    await store.create("things", doc)
                except BadRequest as exc:
                    out.append(exc.message)
            await store.create("things", {"id": "d", "name": "n" * 255})
            try:
                await store.update("things", "d", {"name": "m" * 256})
            except BadRequest as exc:
                out.append(exc.message)
            return out

        import asyncio

        assert asyncio.run(attempts()) == [
            "Invalid input for field/attribute id: it is longer than 64 characters.",
            "Invalid input for field/attribute name: it is longer than 255 characters.",
            "Invalid input for field/attribute name: it contains a NUL character.",
            "Invalid input for field/attribute name: it is longer than 255 characters.",
        ]

        async def rows() -> list[dict[str, Any]]:
            return await store.list("things")

        assert [(d["id"], d["name"]) for d in asyncio.run(rows())] == [("d", "n" * 255)]
    finally:
        store.close()


# --- microversions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "header", "value", "path"),
    [
        ("compute", "X-OpenStack-Nova-API-Version", "2." + "1" * 5000, "/v2.1/servers"),
        ("compute", "OpenStack-API-Version", "compute 2." + "9" * 4400, "/v2.1/flavors"),
        ("block-storage", "OpenStack-API-Version", "volume 3." + "1" * 5000, "/v3/{p}/volumes"),
    ],
)
def test_a_microversion_of_thousands_of_digits_is_a_400(
    stack: Running, api: str, header: str, value: str, path: str
) -> None:
    resp = stack.http(api, "GET", path.format(p=stack.project_id), headers={header: value})
    message = message_of(api, resp, 400)
    assert "is of invalid format" in message and len(message) < 200


# --- regular expressions ------------------------------------------------------------------------


def test_name_filters_are_re2_and_a_bad_pattern_is_a_400(stack: Running) -> None:
    record = stack.target.boot(volume=False)
    name = "a" * 28 + "!"
    resp = stack.http(
        "compute", "PUT", f"/v2.1/servers/{record.server_id}", json={"server": {"name": name}}
    )
    assert resp.status_code == 200, resp.text

    def listed(pattern: str) -> list[str]:
        # the demo user's server, seen by the admin across projects
        params = {"name": pattern, "all_tenants": "1"}
        resp = stack.http("compute", "GET", "/v2.1/servers", params=params)
        assert resp.status_code == 200, resp.text
        return [s["name"] for s in resp.json()["servers"]]

    # The catastrophic pattern of the report: a backtracking engine takes seconds here.
    assert listed("^(a+)+$") == []
    assert listed("^(a+)+!$") == [name]
    # Backreferences are not RE2 (Python's re would take them): the filter's engine is RE2.
    assert "Invalid name filter" in message_of(
        "compute", stack.http("compute", "GET", "/v2.1/servers", params={"name": r"(a)\1"}), 400
    )
    assert "Invalid name filter" in message_of(
        "compute", stack.http("compute", "GET", "/v2.1/servers", params={"name": "(("}), 400
    )
    too_long = stack.http("compute", "GET", "/v2.1/servers", params={"name": "a" * 5000})
    assert message_of("compute", too_long, 400) == "Invalid name filter [" + "a" * 32 + "]"


# --- request bodies -------------------------------------------------------------------------------


def _raw_exchange(url: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request's head (and `body`, maybe less than it announces); read the answer.

    The server must answer without waiting for the rest of the body: a server that
    waited would leave this read blocked until the socket's timeout (a failure)."""
    parsed = httpx.URL(url)
    with socket.create_connection((parsed.host, parsed.port or 80), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        status = int(head_part.split(b" ", 2)[1])
        length = re.search(rb"(?i)content-length: *(\d+)", head_part)
        want = int(length.group(1)) if length else 0
        while len(rest) < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest


def _head(method: str, path: str, port: int, headers: dict[str, str]) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def test_an_unauthenticated_body_is_refused_before_it_is_read(on_sqlite: Running) -> None:
    url = on_sqlite.urls["compute"]
    port = httpx.URL(url).port or 0
    head = _head(
        "POST",
        "/v2.1/servers",
        port,
        {"Content-Type": "application/json", "Content-Length": str(200 * 1024 * 1024)},
    )
    status, body = _raw_exchange(url, head, b'{"server": ')
    assert status == 401
    assert json.loads(body)["error"]["code"] == 401


def test_a_body_over_the_limit_is_a_413_before_it_is_read(on_sqlite: Running) -> None:
    limit = on_sqlite.target.config.max_body_bytes
    for api, path, fmt_key in (
        ("compute", "/v2.1/servers", "overLimit"),
        ("identity", "/v3/auth/tokens", "error"),  # needs no token: the limit still holds
    ):
        url = on_sqlite.urls[api]
        port = httpx.URL(url).port or 0
        head = _head(
            "POST",
            path,
            port,
            {
                "Content-Type": "application/json",
                "Content-Length": str(limit + 1),
                "X-Auth-Token": on_sqlite.token,
            },
        )
        status, body = _raw_exchange(url, head, b"{")
        assert status == 413, body
        assert json.loads(body)[fmt_key]["code"] == 413


def test_a_chunked_body_is_cut_at_the_limit(on_sqlite: Running) -> None:
    limit = on_sqlite.target.config.max_body_bytes

    def chunks() -> Iterator[bytes]:
        piece = b" " * 65536
        for _ in range(limit // len(piece) + 2):
            yield piece

    resp = on_sqlite.http(
        "network",
        "POST",
        "/v2.0/networks",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    assert "at most 1048576 bytes" in resp.json()["NeutronError"]["message"]


def test_body_limits_are_configured_per_kind_of_body() -> None:
    config = StackConfig()
    assert config.max_body_bytes == 1024 * 1024
    assert config.max_data_body_bytes > config.max_body_bytes  # image data, objects
    changed = load_config(
        environ={"SPECSTACK_MAX_BODY_BYTES": "2048", "SPECSTACK_HTTP_KEEP_ALIVE_S": "120"}
    )
    assert (changed.max_body_bytes, changed.http_keep_alive_s) == (2048, 120)


# --- keep-alive --------------------------------------------------------------------------------


def test_servers_keep_idle_connections_longer_than_client_pools(on_sqlite: Running) -> None:
    stack = on_sqlite.target.stack
    assert stack is not None
    servers = [r.server for r in stack.running if r.server is not None]
    assert len(servers) >= len(on_sqlite.urls)  # every API (and the dashboard)
    # python-requests/urllib3 and httpx keep an idle connection up to 5 s (httpx's
    # keepalive_expiry): the server must not close it first.
    assert {s.config.timeout_keep_alive for s in servers} == {75}
