"""Fixtures of the diagram tests: a real run of the embedded stack and its stored trace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from specstack_conformance.harness import free_port_block
from specstack_runtime.trace import TraceEvent, TraceRecorder

from ..conftest import REPO


def need(capability: str, present: bool, why: str) -> None:
    """Skip where a tool is truly absent; CI installs it (.ci/diagrams.sh), so there it fails."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{capability} is missing in CI: {why}")
    pytest.skip(f"{capability} is not installed ({why})")


def need_plantuml() -> None:
    need(
        "plantuml",
        bool(shutil.which("plantuml") and shutil.which("dot")),
        "apt-get install plantuml graphviz",
    )


@dataclass(frozen=True)
class Run:
    data_dir: Path
    flow_id: str

    def events(self) -> list[dict[str, Any]]:
        return TraceRecorder(self.data_dir / "trace.sqlite").events(self.flow_id)


def specstack(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def stack_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """`specstack run --once`: one real boot-vm through the embedded stack, trace kept on disk."""
    data = tmp_path_factory.mktemp("diagram-run")
    port = free_port_block(8)
    proc = specstack("run", "--once", "--no-generate", "--data-dir", str(data), "--port", str(port))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"specstack trace (\S+)", proc.stdout)
    assert m, proc.stdout
    yield Run(data, m.group(1))


def write_trace(data_dir: Path, events: list[dict[str, Any]]) -> None:
    """Store `events` as the trace file of a stopped stack in `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    recorder = TraceRecorder(data_dir / "trace.sqlite")
    for e in events:
        fields = {k: v for k, v in e.items() if k != "duration_ms"}
        recorder.record(TraceEvent(**fields))
    recorder.flush()


#: Debian's chromium (`apt-get install chromium`), found on PATH.
CHROMIUM = shutil.which("chromium")
#: Flags for chromium as root in a container: no sandbox, nothing fetched in the background.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where .ci/diagrams.sh puts Mermaid's browser bundle (from the npm package `mermaid`).
MERMAID_JS = Path(os.environ.get("SPECSTACK_MERMAID_JS", "/opt/specstack/mermaid/mermaid.min.js"))


@contextmanager
def browser(profile: Path) -> Iterator[Any]:
    """Debian's headless chromium driven by Playwright (no browser is downloaded)."""
    need("chromium", CHROMIUM is not None, "apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("playwright", False, "pip install -e '.[test]'")
        raise
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            chromium_sandbox=False,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1200},
        )
        try:
            yield ctx
        finally:
            ctx.close()
