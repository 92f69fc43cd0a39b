"""The observed events of one flow: from the running stack's admin-only trace endpoint
(logging in with the admin cloud of the `clouds.yaml` that `specstack run` wrote), or from
the trace a stopped stack left: its data directory's trace file (embedded) or the trace
store on its database server (distributed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

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


def server_store(data_dir: Path) -> str | None:
    """The trace store on the database server a distributed stack of this data directory
    wrote to (its name is the stack's, in secrets.json), or None if it was not one: an
    embedded stack leaves trace.sqlite. The server is the configuration's (as for run)."""
    from specstack_runtime.config import ConfigError, load_config

    secrets = data_dir / "secrets.json"
    if (data_dir / "trace.sqlite").is_file() or not secrets.is_file():
        return None
    try:
        stack_name = json.loads(secrets.read_text()).get("stack_name", "")
        config = load_config(data_dir=data_dir, mode="distributed")
    except (OSError, ValueError, ConfigError):
        return None
    config.stack_name = config.stack_name or stack_name
    return config.for_mode().trace_store_url()


def load_events(data_dir: Path, flow_id: str) -> dict[str, Any]:
    """The flow's events from the running stack, or, when none answers, from the trace
    file the stack left in its data directory or, for a distributed stack, from the
    store on its database server (no events: no flow has that id)."""
    try:
        return fetch_events(data_dir, flow_id)
    except TraceError:
        from specstack_runtime.trace import TraceRecorder

        stored = data_dir / "trace.sqlite"
        url = server_store(data_dir)
        if url is None:
            if not stored.is_file():
                raise
            recorder = TraceRecorder(stored)
            events = recorder.events(flow_id)
            return {"flow_id": recorder.resolve(flow_id), "events": events, "source": str(stored)}
        where = redact_url(url)
        try:
            recorder = TraceRecorder(None, url=url)
            try:
                events = recorder.events(flow_id)
                return {"flow_id": recorder.resolve(flow_id), "events": events, "source": where}
            finally:
                recorder.close()
        except SQLAlchemyError as exc:
            raise TraceError(
                f"no stack answers, and its trace store {where} cannot be read: "
                f"{type(exc).__name__}"
            ) from None


def redact_url(url: str) -> str:
    """A database URL without its password, to name it in messages."""
    return make_url(url).render_as_string(hide_password=True)


def unknown(flow_id: str, result: dict[str, Any]) -> str:
    """What to say when `load_events` found no steps: the id is what is wrong."""
    source = result.get("source")
    where = f"in {source}, the trace the stopped stack left" if source else "by the running stack"
    return f"no steps recorded for {flow_id} {where}: no flow or nova-api request has that id"
