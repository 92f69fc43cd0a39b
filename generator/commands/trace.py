"""`specstack trace ID`: the observed steps of one flow, read from the running stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml


class TraceError(Exception):
    pass


def admin_cloud(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "clouds.yaml"
    if not path.is_file():
        raise TraceError(f"no {path}: start the stack with `specstack run --data-dir {data_dir}`")
    clouds = yaml.safe_load(path.read_text())["clouds"]
    cloud: dict[str, Any] = clouds.get("specstack-admin") or next(iter(clouds.values()))
    return cloud


def fetch_events(data_dir: Path, flow_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Log in as the admin of the cloud `run` wrote, then ask the admin-only trace endpoint."""
    auth = admin_cloud(data_dir)["auth"]
    base = auth["auth_url"].rstrip("/")
    root = base[: -len("/v3")] if base.endswith("/v3") else base
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": auth["username"],
                        "domain": {"name": auth.get("user_domain_name", "Default")},
                        "password": auth["password"],
                    }
                },
            },
            "scope": {
                "project": {
                    "name": auth["project_name"],
                    "domain": {"name": auth.get("project_domain_name", "Default")},
                }
            },
        }
    }
    try:
        with httpx.Client(timeout=timeout) as http:
            resp = http.post(f"{base}/auth/tokens", json=body)
            if resp.status_code != 201:
                raise TraceError(
                    f"login as {auth['username']} failed: {resp.status_code} {resp.text[:200]}"
                )
            token = resp.headers["X-Subject-Token"]
            got = http.get(f"{root}/specstack/trace/{flow_id}", headers={"X-Auth-Token": token})
    except httpx.TransportError as exc:
        raise TraceError(
            f"no stack answers at {root} ({exc}); is `specstack run` running?"
        ) from exc
    if got.status_code != 200:
        raise TraceError(f"trace endpoint answered {got.status_code}: {got.text[:200]}")
    result: dict[str, Any] = got.json()
    return result


def load_events(data_dir: Path, flow_id: str) -> dict[str, Any]:
    """The flow's events from the running stack, or, when none answers, from the trace
    file the stack left in its data directory."""
    try:
        return fetch_events(data_dir, flow_id)
    except TraceError:
        stored = data_dir / "trace.sqlite"
        if not stored.is_file():
            raise
        from generator.runtime.trace import TraceRecorder

        recorder = TraceRecorder(stored)
        events = recorder.events(flow_id)
        if not events:
            raise
        return {"flow_id": recorder.resolve(flow_id), "events": events, "source": str(stored)}


def _order(label: str) -> tuple[int, ...]:
    return tuple(int(p) for p in label.split("."))


def render_table(events: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("step", "title", "from", "to", "via", "name", "status", "ms", "host"):
        table.add_column(col, justify="right" if col in ("step", "ms") else "left")
    for e in sorted(events, key=lambda e: (_order(e["step"]), e["started_at"])):
        table.add_row(
            e["step"],
            e["title"] if "." not in e["step"] else "",
            e["source"],
            e["target"],
            e["via"],
            e.get("name") or "",
            e["status"],
            f"{e['duration_ms']:.1f}",
            e["host"],
        )
    Console(soft_wrap=True).print(table)


def main(flow_id: str, data_dir: Path, fmt: str) -> int:
    try:
        result = load_events(data_dir, flow_id)
    except TraceError as exc:
        print(f"specstack trace: {exc}", file=sys.stderr)
        return 2
    events = result["events"]
    if not events:
        print(f"specstack trace: no steps recorded for {flow_id}", file=sys.stderr)
        return 1
    if fmt == "json":
        print(json.dumps(result, indent=2))
    elif fmt in ("mermaid", "plantuml"):
        from generator.diagram_cmd import env, load_ir, observed
        from generator.render.diagrams import render_sequence

        try:
            diagram = observed(load_ir(), events)
        except (LookupError, OSError, ValueError) as exc:
            print(f"specstack trace: {exc}", file=sys.stderr)
            return 2
        print(render_sequence(env(), diagram, fmt), end="")
    else:
        render_table(events)
    return 0
