"""The RabbitMQ that bus tests use: a throwaway vhost per test session, removed at exit.

The broker is the machine's (SPECSTACK_TEST_AMQP_URL, default guest@127.0.0.1:5672).
Without it the amqp tests skip, except under CI, where a missing broker is a failure.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

BASE_URL = os.environ.get("SPECSTACK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
_session_url: str | None = None


def reachable(url: str = BASE_URL) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return True
    except OSError:
        return False


def require_broker() -> None:
    """Skip (fail under CI) when no broker listens."""
    if reachable():
        return
    message = f"RabbitMQ is not reachable at {urlsplit(BASE_URL).netloc.split('@')[-1]}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must start it: .ci/services.sh)")
    pytest.skip(f"{message} (apt-get install rabbitmq-server, then bash .ci/services.sh)")


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=120
    )


def session_url() -> str:
    """A URL on a vhost of this test session's own (created once, deleted at exit).

    Where rabbitmqctl is absent (a remote broker), the base URL's vhost is used and
    the tests rely on their unique name prefixes alone.
    """
    global _session_url
    require_broker()
    if _session_url is not None:
        return _session_url
    if shutil.which("rabbitmqctl") is None:
        _session_url = BASE_URL
        return _session_url
    vhost = f"specstack-test-{uuid.uuid4().hex[:12]}"
    user = urlsplit(BASE_URL).username or "guest"
    rabbitmqctl("add_vhost", vhost)
    atexit.register(_delete_vhost, vhost)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    parts = urlsplit(BASE_URL)
    _session_url = urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    return _session_url


def _delete_vhost(vhost: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=120)


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"
