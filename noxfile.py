"""Every entry point a person uses: `nox -s generate|check|run|tests|conformance|lint|bench`."""

from __future__ import annotations

import shutil
import subprocess

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["check", "lint", "tests"]

PYTHON = "3.11"


def _install(session: nox.Session, extras: str = "test") -> None:
    # libvirt-python builds from source: only where libvirt's headers are (.ci/virt.sh)
    if shutil.which("pkg-config") and not subprocess.call(
        ["pkg-config", "--exists", "libvirt"], stdout=subprocess.DEVNULL
    ):
        extras += ",libvirt"
    session.install("-e", f".[{extras}]")


@nox.session(python=PYTHON)
def generate(session: nox.Session) -> None:
    """Validate spec/ and render it into generated/."""
    _install(session)
    session.run("specstack", "generate", *session.posargs)


@nox.session(python=PYTHON)
def check(session: nox.Session) -> None:
    """Fail if the spec is invalid or generated/ differs from what spec/ and templates/ give."""
    _install(session)
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
    """ruff (lint and format check) and mypy --strict over the three packages."""
    _install(session, "dev")
    paths = ["generator", "specstack_runtime", "specstack_conformance", "tests", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite (toolkit, runtime, running stack, generated conformance)."""
    _install(session)
    # tests/distributed runs in tests_distributed (it restarts the shared RabbitMQ once).
    session.run("pytest", "--ignore=tests/distributed", *session.posargs)


@nox.session(python=PYTHON)
def tests_distributed(session: nox.Session) -> None:
    """The distributed stack (RabbitMQ, PostgreSQL, 3 computes): its own tests, then the
    conformance suite and the real openstack CLI tests against it."""
    _install(session)
    env = {"SPECSTACK_TEST_MODE": "distributed", "SPECSTACK_TEST_RABBIT_RESTART": "1"}
    paths = session.posargs or [
        "tests/distributed",
        "tests/stack/test_conformance.py",
        "tests/wire/test_openstack_cli.py",
    ]
    session.run("pytest", *paths, env=env)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Measured figures (`specstack bench`); `-- --json` prints one JSON object."""
    _install(session)
    session.run("specstack", "bench", *session.posargs)
