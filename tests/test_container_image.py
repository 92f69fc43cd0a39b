"""The Containerfile builds an image that runs the stack's processes (opt-in: a build takes
minutes and pulls a base image, so neither CI nor the default test run does it)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import uuid

import pytest

from .conftest import REPO

OPT_IN = "SPECSTACK_TEST_PODMAN"


@pytest.fixture
def podman() -> str:
    exe = shutil.which("podman")
    if exe is None:
        pytest.skip("podman is not installed: apt-get install -y podman")
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(
            f"set {OPT_IN}=1 to build the image (minutes; SPECSTACK_TEST_PODMAN_BASE names "
            "another Debian 12 base, SPECSTACK_TEST_PODMAN_ARGS adds build options such as "
            "--isolation=chroot)"
        )
    return exe


def test_the_image_builds_with_the_project_and_a_numeric_user(podman: str) -> None:
    tag = f"localhost/specstack-test:{uuid.uuid4().hex[:8]}"
    argv = [podman, "build", "-t", tag, "-f", "Containerfile", "."]
    if base := os.environ.get("SPECSTACK_TEST_PODMAN_BASE"):
        argv[2:2] = ["--build-arg", f"BASE={base}"]
    argv[2:2] = shlex.split(os.environ.get("SPECSTACK_TEST_PODMAN_ARGS", ""))
    built = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    try:
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        inspect = subprocess.run(
            [podman, "image", "inspect", tag], capture_output=True, text=True, check=True
        )
        config = json.loads(inspect.stdout)[0]["Config"]
        assert config["User"] == "10001"  # runAsNonRoot checks a numeric user
        assert config["WorkingDir"] == "/opt/specstack"  # where `generated` is imported from
        assert any(e.startswith("PATH=/opt/venv/bin:") for e in config["Env"])
        assert config["Cmd"][:3] == ["python", "-m", "specstack_runtime.process"]
    finally:
        subprocess.run([podman, "rmi", "-f", tag], capture_output=True, check=False)
