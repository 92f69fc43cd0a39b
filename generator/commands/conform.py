"""`specstack conform`: run the generated conformance suite against a stack, and write
its HTML report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from generator.conformance.harness import TARGET_ENV

DEFAULT_REPORT = Path(".specstack/conform-report.html")


def main(target: str | None, pytest_args: list[str], report: Path | None = DEFAULT_REPORT) -> int:
    from generator.report_plugin import DATA_ENV

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
    fd, data_path = tempfile.mkstemp(prefix="specstack-conform-", suffix=".json")
    os.close(fd)
    env[DATA_ENV] = data_path
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(suite),
        "-p",
        "no:cacheprovider",
        "-p",
        "generator.report_plugin",
        "--rootdir",
        ".",
        *pytest_args,
    ]
    where = target or "an embedded stack it starts"
    print(f"conformance suite against {where}", flush=True)
    try:
        code = subprocess.run(cmd, env=env, check=False).returncode
        if report is not None:
            _write_report(Path(data_path), report, where)
    finally:
        Path(data_path).unlink(missing_ok=True)
    return code


def _write_report(data_path: Path, report: Path, where: str) -> None:
    from generator import report as html_report
    from generator.diagram_cmd import load_ir

    try:
        data = json.loads(data_path.read_text("utf-8"))
    except (OSError, ValueError):
        print("specstack conform: the suite left no results; no report written", file=sys.stderr)
        return
    try:
        html = html_report.build(data, load_ir(), Path("generated"), where)
        html_report.write(report, html)
    except (OSError, ValueError, LookupError) as exc:  # the suite's verdict stands regardless
        print(f"specstack conform: no report written: {exc}", file=sys.stderr)
        return
    print(f"report: {report}", flush=True)
