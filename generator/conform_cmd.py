"""`specstack conform`: run the generated conformance suite against a stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from generator.conformance.harness import TARGET_ENV


def main(target: str | None, pytest_args: list[str]) -> int:
    suite = Path("generated/conformance")
    if not suite.is_dir():
        print(
            "specstack conform: no generated/conformance; run `specstack generate` first",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ)
    if target:
        env[TARGET_ENV] = target
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(suite),
        "-p",
        "no:cacheprovider",
        "--rootdir",
        ".",
        *pytest_args,
    ]
    where = target or "an embedded stack it starts"
    print(f"conformance suite against {where}", flush=True)
    return subprocess.run(cmd, env=env, check=False).returncode
