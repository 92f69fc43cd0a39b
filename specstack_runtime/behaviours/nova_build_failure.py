"""nova-compute: a failed build (`compute.build_failed`): what it made is undone, and the
instance is rescheduled to another host or goes to ERROR; and the start-up recovery of
builds a crash interrupted (`compute.discard_build`).
"""

from __future__ import annotations

import logging

from specstack_runtime.behaviours.nova_api import schedule_payload
from specstack_runtime.behaviours.nova_build import RescheduleBuild, end_build
from specstack_runtime.behaviours.nova_common import (
    driver_instance,
    fault_of,
    flow_token,
    is_gone,
    release_instance,
    update_instance,
)
from specstack_runtime.bus import RemoteError
from specstack_runtime.context import Call
from specstack_runtime.messaging import send
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent

logger = logging.getLogger(__name__)


async def _cleanup_build(call: Call) -> None:
    """Best effort: undo what a failed build made (guest, disks, attachments, ports)."""
    rt = call.rt
    vars_ = call.vars
    instance = driver_instance(vars_)
    for att in reversed(vars_.get("attached") or []):
        try:
            await rt.driver.detach_volume(instance, att["connection_info"], att["device"])
        except Exception as exc:
            logger.debug("cleanup: detach %s: %s", att.get("device"), exc)
    if vars_.get("spawned") and rt.driver is not None:
        try:
            await rt.driver.destroy(instance)
        except Exception as exc:
            if not is_gone(exc):
                logger.warning("cleanup: guest of %s not destroyed: %s", instance["uuid"], exc)
    attachments = vars_.get("attachments") or []
    ports = vars_.get("ports") or []
    if not attachments and not ports and not vars_.get("requested_networks"):
        return
    try:
        token = await flow_token(call)
    except Exception:
        logger.warning("cleanup of %s: no token to release ports and volumes", instance["uuid"])
        return
    owner = vars_.get("instance") or vars_.get("instance_ref") or {}
    made = {
        "uuid": instance["uuid"],
        "project_id": owner.get("project_id"),
        "requested_networks": vars_.get("requested_networks"),
    }
    await release_instance(rt, made, [str(p["id"]) for p in ports], attachments, token)


def _expected(call: Call) -> str:
    """The task state the instance is in if this run still owns it (begin_build, _take)."""
    return str(call.vars.get("task_state") or call.args["waiting"])


def _reschedulable(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, RescheduleBuild):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


async def _reschedule(call: Call) -> bool:
    """Send the instance back to the scheduler, this host excluded; False when it may not."""
    payload = call.payload
    uuid = str(payload["instance"]["uuid"])
    retry = payload.get("retry") or {"num_attempts": 1, "hosts": [call.rt.host]}
    if int(retry.get("num_attempts") or 1) >= call.rt.config.max_build_attempts:
        return False
    flavor = call.vars.get("flavor")
    if not flavor:
        return False
    try:
        back = {"host": None, "node": None, "task_state": call.args["waiting"]}
        await update_instance(call, uuid, back, _expected(call))
    except RemoteError:
        return False  # deleted meanwhile
    ref, instance = payload["instance"], call.vars.get("instance") or {}
    row = {
        "id": uuid,
        "project_id": ref["project_id"],
        "user_id": ref["user_id"],
        "flavor": flavor,
        "image_ref": payload.get("image_id"),
        "availability_zone": instance.get("availability_zone"),
        "requested_networks": payload.get("requested_networks"),
        "block_device_mapping": payload.get("block_device_mapping"),
    }
    away = list(dict.fromkeys([*retry.get("hosts", []), call.rt.host]))
    await send(call, "schedule_and_build_instances", schedule_payload(row, {"ignore_hosts": away}))
    logger.info("instance %s rescheduled away from %s", uuid, call.rt.host)
    return True


@behaviour(
    "compute.build_failed",
    needs=(
        "block-storage",
        "network",
    ),
)
async def build_failed(call: Call, error: BaseException) -> None:
    """The build failed: undo what was made, the instance goes to ERROR; never raises.

    A hypervisor failure (RescheduleBuild) sends the instance back to the
    scheduler instead while attempts remain. An instance that is being deleted
    meanwhile is left to its delete.
    """
    try:
        uuid = str(call.payload["instance"]["uuid"])
        try:
            await _cleanup_build(call)
        except Exception:
            logger.exception("cleanup after the failed build of %s", uuid)
        if _reschedulable(error) and await _reschedule(call):
            return
        fault = fault_of(error)
        error_state = {"vm_state": "error", "task_state": None, "power_state": 0, "fault": fault}
        try:
            await update_instance(call, uuid, error_state, _expected(call))
        except RemoteError as exc:
            logger.info("instance %s not put into ERROR (%s): it is being deleted", uuid, exc)
    except Exception:
        logger.exception("could not handle the failed build")
    finally:
        end_build(call)


@behaviour("compute.discard_build")
async def discard_build(event: ResourceEvent) -> None:
    """Start-up recovery (spec/resources/compute.yaml `recover`): the guest of a build this
    host had not finished is destroyed (its ports stay bound to the instance until delete)."""
    rt = event.call.rt
    if rt.driver is None:
        return
    try:
        await rt.driver.destroy({"uuid": str(event.doc["id"]), "name": str(event.doc["id"])})
    except Exception as exc:
        if not is_gone(exc):
            raise
