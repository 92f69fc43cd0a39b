"""`specstack conform` against clouds that are not an embedded specstack: credentials from a
clouds.yaml, the identity URL as clients write it, and a target that cannot be tested."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from specstack_conformance.clouds import CloudError, api_root, identity_root, load_cloud

from .conftest import REPO
from .osprofiler_traces import openstack_boot

CLOUDS = """clouds:
  mycloud:
    auth:
      auth_url: http://keystone.example:5000/v3/
      username: alice
      password: s3cret-pw
      project_name: web
      user_domain_id: default
      project_domain_name: Default
    region_name: RegionOne
  broken:
    auth:
      auth_url: http://keystone.example:5000
      username: bob
"""


def test_identity_url_as_clients_write_it() -> None:
    assert identity_root("http://h:5000/v3") == "http://h:5000"
    assert identity_root("http://h:5000/v3/") == "http://h:5000"
    assert identity_root("http://h/identity/v3") == "http://h/identity"
    assert identity_root("http://h:5000") == "http://h:5000"


@pytest.mark.parametrize(
    ("catalog_url", "catalog_path", "root"),
    [
        ("http://cloud:8774/v2.1", "/v2.1", "http://cloud:8774"),  # a port per service
        ("http://cloud/compute/v2.1", "/v2.1", "http://cloud/compute"),  # devstack's prefixes
        ("http://cloud/compute/v2.1/2f1c", "/v2.1", "http://cloud/compute"),  # project in URL
        ("https://cloud/volume/v3/2f1c", "/v3/{project_id}", "https://cloud/volume"),
        ("http://cloud:8080/v1/AUTH_2f1c", "/v1/AUTH_{project_id}", "http://cloud:8080"),
        ("http://cloud/image", "", "http://cloud/image"),
        ("http://cloud:9696/", "", "http://cloud:9696"),
    ],
)
def test_an_apis_root_keeps_the_prefix_its_catalog_url_has(
    catalog_url: str, catalog_path: str, root: str
) -> None:
    # operation paths (/v2.1/servers, /v3/{project_id}/volumes) go after the root
    assert api_root(catalog_url, catalog_path) == root


def test_credentials_from_clouds_yaml(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS)
    creds = load_cloud("mycloud", path)
    assert creds.identity_url == "http://keystone.example:5000"
    body = creds.auth_body()["auth"]
    assert body["identity"]["password"]["user"] == {
        "name": "alice",
        "domain": {"id": "default"},
        "password": "s3cret-pw",
    }
    assert body["scope"] == {"project": {"name": "web", "domain": {"name": "Default"}}}
    assert "s3cret-pw" not in repr(creds)  # messages name the user, never the password
    with pytest.raises(CloudError, match="no cloud 'mycloude'; did you mean 'mycloud'"):
        load_cloud("mycloude", path)
    with pytest.raises(CloudError, match="cloud 'broken' lacks password, project_name"):
        load_cloud("broken", path)


def test_clouds_yaml_found_as_the_cli_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "absent.yaml"))
    with pytest.raises(CloudError, match=r"no clouds\.yaml found .*absent\.yaml"):
        load_cloud("mycloud")
    (tmp_path / "absent.yaml").write_text(CLOUDS)
    assert load_cloud("mycloud").username == "alice"


class _NotFound(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(404)
        self.send_header("Content-Length", "9")
        self.end_headers()
        self.wfile.write(b"not here\n")

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def answers_404() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_target_answering_nothing_useful_stops_with_one_clear_line(
    answers_404: int, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{answers_404}/v3"  # as clouds.yaml writes it
    proc = subprocess.run(
        [sys.executable, "-m", "generator", "conform", "--target", url, "--no-report"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    # the harness posts to the identity root's /v3/auth/tokens (never /v3/v3/...)
    expected = f"cannot log in to http://127.0.0.1:{answers_404}/v3/auth/tokens as "
    assert f"the target cannot be tested: {expected}" in out, out
    assert "admin@admin from specstack's defaults" in out and ": 404 not here" in out
    assert "PASSED" not in out and "ERROR" not in out  # no test ran: one line says why


def test_a_target_leaves_no_data_directory_behind(
    answers_404: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data directory a target makes (an embedded stack's, a remote target's scratch)
    is there while it runs and gone once it closes, or once it turns out unusable."""
    from specstack_conformance.harness import Target, TargetUnusable

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(TargetUnusable):
        Target.remote(f"http://127.0.0.1:{answers_404}/v3")
    assert list(tmp_path.iterdir()) == []
    target = Target.embedded()
    try:
        assert target.scratch is not None and target.scratch.parent == tmp_path
        assert (target.scratch / "db").is_dir()  # the stack's databases are in it
    finally:
        target.close()
    assert list(tmp_path.iterdir()) == []


def test_a_stack_under_test_takes_its_ports_below_the_ephemeral_range() -> None:
    """Ports an outgoing connection could take between the check and the stack's bind
    are never picked: every block is free and below the kernel's ephemeral range."""
    from specstack_conformance.harness import free_port_block
    from specstack_runtime.supervisor import ephemeral_range, ports_free

    low, _ = ephemeral_range()
    for _ in range(50):
        base = free_port_block(16)
        assert base >= 10000 and base + 16 <= low
        assert ports_free(base, 16)


def test_an_unknown_cloud_is_named_before_anything_runs(tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(CLOUDS)
    proc = subprocess.run(
        [sys.executable, "-m", "generator", "conform", "--cloud", "nocloud", "--no-report"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "no cloud 'nocloud'" in out and "(clouds: broken, mycloud)" in out


def test_the_sequence_tests_check_an_osprofiler_trace_of_the_target(tmp_path: Path) -> None:
    # a cloud's boot as OSProfiler recorded it, with step 12 (the image from swift) absent
    trace = tmp_path / "boot.json"
    trace.write_text(json.dumps(openstack_boot(skip="12")))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "generator", "conform", "--no-report"),
            *("--osprofiler-trace", f"boot-vm={trace}"),
            *("--", "-k", "test_boot_vm and step", "-rfs", "-p", "no:randomly"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    failed = set(re.findall(r"FAILED \S+::test_(step\d+)_", out))
    # 2: keystone's SQL names its table `user`, not the spec's `users` (2.1 not shown);
    # 12: not in the trace; 15: the boot had no volume
    assert failed == {"step02", "step12", "step15"}, out
    assert "boot-vm step 12: did not happen (no trace event)" in out
    assert re.search(r"SKIPPED .*step 1 is in no trace of .*boot\.json", out), out
    assert re.search(r"3 failed, 11 passed, 1 skipped", out), out


def test_a_malformed_osprofiler_trace_option_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    for value, said in (
        ("boot-vm", "'boot-vm' is not SEQUENCE=FILE"),
        (f"boot-vm={tmp_path / 'absent.json'}", "no such trace file"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "generator", "conform", "--osprofiler-trace", value],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr
