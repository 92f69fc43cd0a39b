"""`specstack conform`: run the generated conformance suite against a stack, and write
its HTML report."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from specstack_conformance.harness import (
    ADMIN_CLOUD_ENV,
    CLOUD_ENV,
    OSPROFILER_TRACES_ENV,
    TARGET_ENV,
    TargetUnusable,
    osprofiler_traces,
)

DEFAULT_REPORT = Path(".specstack/conform-report.html")


def main(
    target: str | None,
    pytest_args: list[str],
    report: Path | None = DEFAULT_REPORT,
    *,
    cloud: str | None = None,
    admin_cloud: str | None = None,
    timeout: float = 0.0,
    osprofiler: list[str] | None = None,
) -> int:
    from specstack_conformance.report_plugin import DATA_ENV

    suite = Path("generated/conformance")
    if not suite.is_dir():
        print(
            "specstack conform: no generated/conformance; run `specstack generate` first",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ)
    for name, value in ((TARGET_ENV, target), (CLOUD_ENV, cloud), (ADMIN_CLOUD_ENV, admin_cloud)):
        if value:
            env[name] = value
    if osprofiler:
        try:
            traces = osprofiler_traces(",".join(osprofiler))
        except TargetUnusable as exc:
            print(f"specstack conform: --osprofiler-trace: {exc}", file=sys.stderr)
            return 2
        absent = [str(p) for p in traces.values() if not p.is_file()]
        if absent:
            print(f"specstack conform: no such trace file: {', '.join(absent)}", file=sys.stderr)
            return 2
        env[OSPROFILER_TRACES_ENV] = ",".join(f"{s}={p.resolve()}" for s, p in traces.items())
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
        "specstack_conformance.report_plugin",
        "--rootdir",
        ".",
        *_timeout_args(timeout),
        *pytest_args,
    ]
    where = target or (f"cloud {cloud or admin_cloud}" if cloud or admin_cloud else "")
    where = where or "an embedded stack it starts"
    print(f"conformance suite against {where}", flush=True)
    try:
        code = subprocess.run(cmd, env=env, check=False).returncode
        if report is not None:
            _write_report(Path(data_path), report, where)
    finally:
        Path(data_path).unlink(missing_ok=True)
    return code


def _write_report(data_path: Path, report: Path, where: str) -> None:
    from generator.commands.flow_diagrams import load_ir, observed_diagrams
    from generator.pipeline import DEFAULT_TEMPLATES
    from specstack_conformance import report as html_report

    try:
        data = json.loads(data_path.read_text("utf-8"))
    except (OSError, ValueError):
        print("specstack conform: the suite left no results; no report written", file=sys.stderr)
        return
    try:
        html = html_report.build(
            data, load_ir(), Path("generated"), where, DEFAULT_TEMPLATES, observed_diagrams
        )
        html_report.write(report, html)
    except (OSError, ValueError, LookupError) as exc:  # the suite's verdict stands regardless
        print(f"specstack conform: no report written: {exc}", file=sys.stderr)
        return
    print(f"report: {report}", flush=True)


def _timeout_args(timeout: float) -> list[str]:
    """pytest-timeout's per-test limit: a test that hangs on a target fails, the run goes on."""
    if timeout <= 0:
        return []
    if importlib.util.find_spec("pytest_timeout") is None:
        print(
            "specstack conform: no per-test timeout without pytest-timeout "
            "(pip install 'pytest-timeout>=2.3,<3')",
            file=sys.stderr,
        )
        return []
    return [f"--timeout={timeout:g}"]  # the plugin registers itself when installed
