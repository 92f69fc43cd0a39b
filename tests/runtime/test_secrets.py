"""Secrets (issue 14): the spec marks them (`format: password`, token headers), and none
reaches the trace, the logs or a file another user can read."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.redact import REDACTED, Redactor, secret_names_in
from specstack_runtime.trace import TraceRecorder
from tests.runtime.test_hardening import Running
from tests.runtime.test_hardening import on_sqlite as on_sqlite  # the fixture

from ..conftest import REPO

# --- secrets -------------------------------------------------------------------------------------


def test_the_spec_marks_the_secrets() -> None:
    names = [a["name"] for a in json.loads((REPO / "generated" / "ir.json").read_text())["apis"]]
    plain, pairs = secret_names_in(REPO / "generated" / "openapi", names)
    assert {"X-Auth-Token", "X-Subject-Token"} <= plain
    assert {("user", "password"), ("token", "id"), ("server", "adminPass")} <= pairs
    redact = Redactor(plain, pairs)
    sent = {
        "auth": {
            "identity": {
                "methods": ["password", "token"],
                "password": {"user": {"id": "u1", "password": "s3cret"}},
                "token": {"id": "gAAAAtoken"},
            },
            "scope": {"project": {"id": "p1"}},
        }
    }
    assert redact(sent) == {
        "auth": {
            "identity": {
                "methods": ["password", "token"],
                "password": {"user": {"id": "u1", "password": REDACTED}},
                "token": {"id": REDACTED},
            },
            "scope": {"project": {"id": "p1"}},
        }
    }
    assert redact({"headers": {"x-subject-token": "t"}}) == {
        "headers": {"x-subject-token": REDACTED}
    }
    untouched = {"server": {"id": "s1", "name": "vm"}}
    assert redact(untouched) is untouched
    assert redact(b'{"server": {"id": "s1", "adminPass": "pw"}}') == {
        "server": {"id": "s1", "adminPass": REDACTED}
    }


def test_no_secret_reaches_the_trace_or_the_logs(on_sqlite: Running) -> None:
    record = on_sqlite.target.boot(volume=True)
    events = on_sqlite.target.run(on_sqlite.target.events(record.flow_id))
    by_step = {e["step"]: e for e in events}
    # the shape is kept, the values are not
    user = by_step["2"]["detail"]["sent"]["auth"]["identity"]["password"]["user"]
    assert user["password"] == REDACTED and user["name"] == "demo"
    assert by_step["3"]["detail"]["received"]["server"]["adminPass"] == REDACTED
    assert by_step["10"]["detail"]["sent"]["token"] == REDACTED
    assert by_step["12"]["detail"]["sent"]["token"] == REDACTED

    # nothing in clear in the trace file either (nor in SQLite's WAL beside it)
    redacted = re.compile(rb'"token":\s*"\*\*\*"')
    stored = b""
    for _ in range(50):  # the stack's events are there (steps 10, 12) once written out
        on_sqlite.target.stack.trace.flush()  # type: ignore[union-attr]
        files = sorted(on_sqlite.data_dir.glob("trace.sqlite*"))
        stored = b"".join(p.read_bytes() for p in files)
        if redacted.search(stored):
            break
        time.sleep(0.1)
    assert redacted.search(stored), "no redacted token in the trace files"
    for key in (b"password", b"adminPass", b"token", b"X-Subject-Token", b"X-Auth-Token"):
        in_clear = re.findall(rb'"' + key + rb'":\s*"(?!\*\*\*")[^"]*"', stored, flags=re.I)
        assert in_clear == [], (key, in_clear[:3])
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path

    # the admin's token and the demo password appear in no log line
    assert on_sqlite.log, "the stack logged nothing"
    assert not [line for line in on_sqlite.log if on_sqlite.token in line]
    assert not [line for line in on_sqlite.log if re.search(r"password\W+demo", line)]


def test_an_existing_trace_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "trace.sqlite"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    TraceRecorder(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    fresh = tmp_path / "new" / "trace.sqlite"
    TraceRecorder(fresh)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600


def test_a_wal_file_another_process_removes_meanwhile_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite deletes -wal and -shm when another process's last connection closes; a
    process starting then must not fail on the file that went (distributed start-up)."""
    real_chmod = os.chmod
    gone: list[str] = []

    def chmod(path: Any, mode: int) -> None:
        if str(path).endswith(("-wal", "-shm")):  # it went just before this chmod
            gone.append(str(path))
            raise FileNotFoundError(2, "No such file or directory", str(path))
        real_chmod(path, mode)

    monkeypatch.setattr(os, "chmod", chmod)
    path = tmp_path / "trace.sqlite"
    TraceRecorder(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert gone  # the vanishing files were tried, and their absence was no error


def test_what_holds_no_secret_is_kept_as_it_is_and_every_mapping_is_searched() -> None:
    """The redactor looks for secret names in a structure's JSON first: a payload with none
    comes back as the same object; a mapping JSON cannot hold is still walked."""
    from types import MappingProxyType

    redact = Redactor(["password"], [("token", "id")])
    plain = {"server": {"id": "s-1", "networks": [{"uuid": "n-1"}]}}
    assert redact(plain) is plain
    assert redact({"token": [{"id": "t", "expires": 1}]}) == {
        "token": [{"id": REDACTED, "expires": 1}]
    }
    assert redact({"headers": MappingProxyType({"Password": "p"})}) == {
        "headers": {"Password": REDACTED}
    }
