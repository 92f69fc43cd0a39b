"""Every entry point a person uses: `nox -s generate|check|run|tests|conformance|lint|bench|dev`."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

# uv where it is installed (`pip install nox uv`): the first install takes seconds, not minutes
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["check", "lint", "tests"]

PYTHON = "3.11"
#: What the first install takes on the 2-core CI machine (README, "Quickstart").
FIRST_INSTALL = "10-40 s with uv, 40 s to 3 minutes with pip"
#: uv writes no bytecode by default, and where PYTHONDONTWRITEBYTECODE is set nothing
#: ever does: every process (each service of a stack, each `openstack` command) would
#: compile its dependencies again, about 1 s of CPU. Compiled once, at install.
COMPILE = {"UV_COMPILE_BYTECODE": "1"}
PACKAGES = ("generator", "specstack_runtime", "specstack_conformance")


def _extras(extras: str) -> str:
    # libvirt-python builds from source: only where libvirt's headers are (.ci/virt.sh)
    if shutil.which("pkg-config") and not subprocess.call(
        ["pkg-config", "--exists", "libvirt"], stdout=subprocess.DEVNULL
    ):
        extras += ",libvirt"
    return extras


def _install(session: nox.Session, extras: str = "test", *, compiled: bool = True) -> None:
    """The package, editable, with `extras`; the installer's output is shown on the first run.
    `compiled=False` for sessions that start one or two processes (compiling costs ~20 s)."""
    extras = _extras(extras)
    first = not (Path(session.virtualenv.location) / "bin" / "specstack").exists()
    if first:
        session.log(
            f"installing specstack[{extras}] and its dependencies into "
            f"{session.virtualenv.location} (first run only: {FIRST_INSTALL})"
        )
    session.install("-e", f".[{extras}]", silent=not first, env=COMPILE if compiled else None)
    if compiled:  # the editable package too (uv compiles only site-packages); quick when current
        session.run("python", "-m", "compileall", "-q", *PACKAGES, silent=True)


def _uv() -> str | None:
    """uv beside nox (`pip install nox uv`) or on PATH."""
    try:
        return str(importlib.import_module("uv").find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


@nox.session(python=PYTHON)
def generate(session: nox.Session) -> None:
    """Validate spec/ and render it into generated/."""
    _install(session)
    session.run("specstack", "generate", *session.posargs)


@nox.session(python=PYTHON)
def check(session: nox.Session) -> None:
    """Fail if the spec is invalid or generated/ differs from what spec/ and templates/ give."""
    _install(session, compiled=False)
    session.run("specstack", "validate")
    session.run("specstack", "generate", "--check")


@nox.session(python=PYTHON)
def run(session: nox.Session) -> None:
    """Regenerate, start the embedded stack, seed it and boot the demo VM (`-- --once` to exit)."""
    _install(session)
    session.run("specstack", "run", *session.posargs)


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """The generated conformance suite (`-- --target URL` for a running stack)."""
    _install(session)
    session.run("specstack", "generate")
    session.run("specstack", "conform", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy --strict over the three packages and tests/."""
    # tests/ import the test tools: mypy checks them too
    _install(session, "test,dev", compiled=False)
    paths = [*PACKAGES, "tests", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite (toolkit, runtime, running stack, generated conformance)."""
    _install(session)
    # tests/distributed runs in tests_distributed; the 1,000-boot keep-alive test (marker
    # `load`, about a minute) runs here too
    session.run(
        "pytest", "--ignore=tests/distributed", "--durations=30", *_marks(), *session.posargs
    )


@nox.session(python=PYTHON)
def tests_distributed(session: nox.Session) -> None:
    """The distributed stack (RabbitMQ, PostgreSQL, 3 computes): its own tests, then the
    conformance suite and the real openstack CLI's server, volume, agent, backup, resize,
    identity, quota, zone and usage tests against it."""
    _install(session)
    env = {"SPECSTACK_TEST_MODE": "distributed", "SPECSTACK_TEST_RABBIT_RESTART": "1"}
    # the CLI against the distributed stack: a server's and a volume's whole life (the
    # whole file runs against the embedded stack in `tests`, kept out here for CI's time);
    # every API fuzzed on the distributed stack (PostgreSQL) as on the embedded one
    cli = "tests/wire/test_openstack_cli.py::test_"
    paths = session.posargs or [
        "tests/distributed",
        "tests/stack/test_conformance.py",
        "tests/wire/test_fuzz.py",
        # this stop's new API through the real CLI: agents, backups, resize and migrate
        "tests/wire/test_openstack_cli_agents.py",
        "tests/wire/test_openstack_cli_backups.py",
        "tests/wire/test_openstack_cli_resize.py",
        # issue 15 (every command in either mode): the cheaper wire files that cross this
        # stack's processes (the three computes' zones, usage and quotas in PostgreSQL).
        # Left to the embedded suite for CI's time and PostgreSQL's 100 connections (the
        # OSProfiler test starts a second distributed stack): events, OSProfiler, the rest
        "tests/wire/test_openstack_cli_identity.py",
        "tests/wire/test_openstack_cli_quotas.py",
        "tests/wire/test_openstack_cli_zones.py",
        "tests/wire/test_usage.py",
        *(
            cli + name
            for name in (  # in the file's order: each goes on from the one before
                "server_create",
                "server_add_volume",
                "server_remove_volume",
                "console_log_show",
                "server_delete_wait",
                "sdk_create_and_delete_server",
            )
        ),
    ]
    session.run("pytest", "--durations=20", *_marks(), *paths, env=env)


def _marks() -> list[str]:
    """SPECSTACK_TEST_MARKS, a marker expression: CI runs the two suites side by side with
    "not broker_restart", then the tests that restart the shared RabbitMQ alone."""
    marks = os.environ.get("SPECSTACK_TEST_MARKS")
    return ["-m", marks] if marks else []


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Measured figures (`specstack bench`); `-- --json` prints one JSON object."""
    _install(session, "test,bench")
    session.run("specstack", "bench", *session.posargs)


@nox.session(venv_backend="none")
def dev(session: nox.Session) -> None:
    """Make `.venv` with the package editable and the test and dev extras; then
    `. .venv/bin/activate` puts `specstack`, `openstack`, `pytest` and `ruff` on PATH."""
    extras = _extras("test,dev")
    uv = _uv()
    if uv:
        session.run(uv, "venv", "--allow-existing", "--python", PYTHON, ".venv", external=True)
        session.run(
            uv,
            "pip",
            "install",
            "--python",
            ".venv",
            "-e",
            f".[{extras}]",
            external=True,
            env=COMPILE,
        )
    else:
        python = shutil.which(f"python{PYTHON}") or sys.executable
        session.run(python, "-m", "venv", ".venv", external=True)
        session.run(".venv/bin/pip", "install", "-e", f".[{extras}]", external=True)
    session.run(".venv/bin/python", "-m", "compileall", "-q", *PACKAGES, external=True, silent=True)
    session.log("done: `. .venv/bin/activate` puts specstack and openstack on PATH")
