"""Trace events as OSProfiler trace points, and OSProfiler's trace headers honoured.

Each step becomes a `<point>-start`/`<point>-stop` pair (spec/traces.yaml names the point
and its info) in the collector of `osprofiler_connection`, under base id = the flow's
global request id without its `req-`, so every process of a distributed stack writes
one trace and `osprofiler trace show --json <base id>` reads it back. A request whose
`X-Trace-Info` is signed (`X-Trace-HMAC`) with one of `osprofiler_hmac_keys` takes the
client's base id as its flow id, as OpenStack's services join the client's trace.
Bodies and headers are never written (they may hold secrets); the keys are never logged.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import logging
import queue
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from specstack_runtime.ir import IR, Interaction
from specstack_runtime.trace import TraceEvent
from specstack_runtime.tracepoints import TraceMap, declared_items

if TYPE_CHECKING:
    from osprofiler.drivers.base import Driver

log = logging.getLogger(__name__)

INSTALL = "pip install 'specstack[osprofiler]' (osprofiler and redis)"
#: The longest X-Trace-Info read: a base id and a parent id packed are ~150 bytes.
MAX_TRACE_INFO = 1024
_NAMESPACE = uuid.UUID("5f0c5d1e-6a4b-4b8e-9a39-0d3b1c7e2f10")


def signed_base_id(data: str | None, signature: str | None, keys: Sequence[str]) -> str | None:
    """The base id of a trace header signed with one of `keys` (OSProfiler's HMAC-SHA1 over
    the base64 text), or None: unsigned, badly signed or malformed headers are ignored."""
    if not keys or not data or not signature or len(data) > MAX_TRACE_INFO:
        return None
    raw = data.encode("ascii", "replace")
    if not any(
        hmac.compare_digest(signature.strip(), hmac.new(k.encode(), raw, hashlib.sha1).hexdigest())
        for k in keys
    ):
        return None
    try:
        info = json.loads(base64.urlsafe_b64decode(raw))
        base_id = str(uuid.UUID(str(info["base_id"])))
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    return base_id


def _timestamp(epoch: float) -> str:
    at = datetime.datetime.fromtimestamp(epoch, datetime.UTC).replace(tzinfo=None)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")


class PointExport:
    """A trace listener (`TraceRecorder.listen`) writing each step as OSProfiler points.

    Writes go through a queue to one thread, so a slow collector never holds a request."""

    def __init__(self, ir: IR, connection: str) -> None:
        try:
            from oslo_config import cfg
            from osprofiler import opts
            from osprofiler.drivers import base
        except ImportError as exc:
            raise RuntimeError(f"OSProfiler trace points need its packages: {INSTALL}") from exc
        self.tmap = TraceMap(ir)
        self.connection = connection
        self.conf = cfg.ConfigOpts()
        opts.set_defaults(self.conf)
        self._get_driver = base.get_driver
        self.steps: dict[tuple[str, str], Interaction] = {
            (seq.name, label): it for seq in ir.sequences for label, _, it in declared_items(seq)
        }
        self.drivers: dict[tuple[str, str], Driver] = {}
        self.queue: queue.SimpleQueue[tuple[str, str, dict[str, Any]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._write, name="osprofiler", daemon=True)
        self.thread.start()

    def __call__(self, event: TraceEvent) -> None:
        it = self.steps.get((event.sequence, event.step))
        if it is None or event.status == "skipped":
            return
        error = str(event.detail.get("error") or "the step failed")
        point = self.tmap.point_of(it, failed=error if event.status == "error" else None)
        if point is None:
            return
        base_id = event.flow_id.removeprefix("req-")
        ids = {
            "base_id": base_id,
            "parent_id": base_id,
            "trace_id": str(
                uuid.uuid5(
                    _NAMESPACE,
                    f"{event.flow_id}/{event.step}/{event.request_id}/{event.started_at}",
                )
            ),
        }
        start_info = {k: v for k, v in point.info.items() if k not in ("etype", "message")}
        stop_info = {k: v for k, v in point.info.items() if k in ("etype", "message")}
        for edge, at, info in (
            ("start", event.started_at, start_info),
            ("stop", event.ended_at, stop_info),
        ):
            payload = {
                "name": f"{point.name}-{edge}",
                **ids,
                "timestamp": _timestamp(at),
                "info": {**info, "host": event.host},
            }
            self.queue.put((point.project, point.service, payload))

    def _write(self) -> None:
        warned = False
        while (item := self.queue.get()) is not None:
            project, service, payload = item
            try:
                driver = self.drivers.get((project, service))
                if driver is None:
                    driver = self._get_driver(
                        self.connection, project=project, service=service, conf=self.conf
                    )
                    self.drivers[(project, service)] = driver
                driver.notify(payload)
            except Exception as exc:  # the collector down must not stop the stack
                if not warned:
                    log.warning("OSProfiler collector refused a trace point: %s", type(exc))
                    warned = True

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        self.queue.put(None)
        self.thread.join(timeout=10)
