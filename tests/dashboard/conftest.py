"""A served embedded stack (`specstack run`, kept running) and its dashboard in chromium."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from specstack_conformance.clouds import Credentials
from specstack_conformance.harness import free_port_block

from ..conftest import REPO
from ..diagrams.conftest import browser

__all__ = ["Served", "browser"]

RUN = (sys.executable, "-m", "generator", "run", "--no-generate")


@dataclass
class Served:
    data_dir: Path
    dashboard: str  # the URL `specstack run` printed
    identity: str  # keystone's /v3
    clouds: dict[str, Any] = field(default_factory=dict)

    def password(self, cloud: str = "specstack") -> str:
        return str(self.clouds[cloud]["auth"]["password"])

    def token(self, cloud: str = "specstack") -> tuple[str, dict[str, Any]]:
        auth = self.clouds[cloud]["auth"]
        who = Credentials("", auth["username"], auth["password"], auth["project_name"])
        body = who.auth_body()
        resp = httpx.post(f"{self.identity}/auth/tokens", json=body)
        assert resp.status_code == 201, resp.text
        return resp.headers["X-Subject-Token"], resp.json()["token"]


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`specstack run` on free ports, serving until the session ends (SIGTERM)."""
    data = tmp_path_factory.mktemp("dashboard-stack")
    port = free_port_block(8)
    log = (data / "run.out").open("w")
    proc = subprocess.Popen(
        [*RUN, "--data-dir", str(data), "--port", str(port)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SPECSTACK_BCRYPT_ROUNDS": "4"},
    )
    out = data / "run.out"
    try:
        while "serving;" not in out.read_text():
            if proc.poll() is not None:
                pytest.fail(f"specstack run exited {proc.returncode}:\n{out.read_text()}")
            time.sleep(0.2)
        text = out.read_text()
        m = re.search(r"^dashboard: (http://\S+)", text, re.M)
        assert m, f"specstack run printed no dashboard URL:\n{text}"
        clouds = yaml.safe_load((data / "clouds.yaml").read_text())["clouds"]
        yield Served(data, m.group(1).rstrip("/"), clouds["specstack"]["auth"]["auth_url"], clouds)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests write their screenshots (also copied to SPECSTACK_DASHBOARD_SHOTS)."""
    return tmp_path_factory.mktemp("dashboard-screenshots")


def screenshot(page: Any, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("SPECSTACK_DASHBOARD_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / path.name).write_bytes(path.read_bytes())
    return path
