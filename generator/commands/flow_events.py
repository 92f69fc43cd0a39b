"""The observed events of one flow: from the running stack's admin-only trace endpoint
(logging in with the admin cloud of the `clouds.yaml` that `specstack run` wrote), or from
the trace file a stopped stack left in its data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from specstack_conformance.clouds import CloudError, Credentials, load_cloud


class TraceError(Exception):
    pass


def admin_cloud(data_dir: Path) -> Credentials:
    """The admin's credentials in the `clouds.yaml` that `specstack run` wrote."""
    path = data_dir / "clouds.yaml"
    if not path.is_file():
        raise TraceError(f"no {path}: start the stack with `specstack run --data-dir {data_dir}`")
    try:
        return load_cloud("specstack-admin", path)
    except CloudError as exc:
        raise TraceError(str(exc)) from None


def fetch_events(data_dir: Path, flow_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Log in as the admin of the cloud `run` wrote, then ask the admin-only trace endpoint."""
    admin = admin_cloud(data_dir)
    root = admin.identity_url
    try:
        with httpx.Client(timeout=timeout) as http:
            resp = http.post(f"{root}/v3/auth/tokens", json=admin.auth_body())
            if resp.status_code != 201:
                raise TraceError(
                    f"login as {admin.username} failed: {resp.status_code} {resp.text[:200]}"
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
    file the stack left in its data directory (no events: no flow has that id)."""
    try:
        return fetch_events(data_dir, flow_id)
    except TraceError:
        stored = data_dir / "trace.sqlite"
        if not stored.is_file():
            raise
        from specstack_runtime.trace import TraceRecorder

        recorder = TraceRecorder(stored)
        events = recorder.events(flow_id)
        return {"flow_id": recorder.resolve(flow_id), "events": events, "source": str(stored)}


def unknown(flow_id: str, result: dict[str, Any]) -> str:
    """What to say when `load_events` found no steps: the id is what is wrong."""
    source = result.get("source")
    where = f"in {source}, the trace the stopped stack left" if source else "by the running stack"
    return f"no steps recorded for {flow_id} {where}: no flow or nova-api request has that id"
