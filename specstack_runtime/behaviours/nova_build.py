"""nova-compute: building an instance (build_and_run_instance, boot-vm 8-15.4).

`compute.begin_build` keeps the request's facts, then the steps of boot-vm 8-15.5 run in
order, these behaviours or the spec's own (14.3, 15.3, 15.4: their `with:`; `rt.driver`
is the host's hypervisor driver). A failed build is undone, rescheduled or put into ERROR
by the consumer's `on_failure` steps (spec/components.yaml), then `compute.end_build` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from specstack_runtime.behaviours.conductor import (
    naive_now,
)
from specstack_runtime.behaviours.nova_common import (
    SERVER,
    driver_instance,
    flow_token,
    given_ports,
    host_availability_zone,
    instance_ports,
    is_gone,
    keep,
    match,
    update_instance,
)
from specstack_runtime.bindings import bind, call_scope
from specstack_runtime.bus import MessagingTimeout, RemoteError
from specstack_runtime.context import Call, Interaction
from specstack_runtime.errors import Dropped, StepFailed
from specstack_runtime.filewriter import atomic_write
from specstack_runtime.http import expect
from specstack_runtime.messaging import send
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.services import ServiceRuntime

#: How long a compute node trusts a network name it looked up.
NETWORK_NAME_TTL_S = 30.0


#: rt.local key: instance uuid -> request id of the build running on this host for it.
LIVE_BUILDS = "compute.live_builds"


def _live_builds(rt: ServiceRuntime) -> dict[str, str]:
    live: dict[str, str] = rt.local.setdefault(LIVE_BUILDS, {})
    return live


def end_build(call: Call) -> None:
    """This run of the build is over (built, failed or dropped): a later delivery may run."""
    live = _live_builds(call.rt)
    uuid = str(call.payload["instance"]["uuid"])
    if live.get(uuid) == call.request_id:
        del live[uuid]


@behaviour("compute.end_build")
async def build_ended(call: Call, error: BaseException) -> None:
    """A failed build's run is over: a later delivery of it may run.

    It runs after the consumer's `on_failure` steps (spec/components.yaml) undid the build."""
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


@behaviour("compute.begin_build")
async def begin_build(call: Call) -> None:
    """build_and_run_instance: keep the request's facts for the steps that follow.

    A second delivery of the build of an instance this host is building now (the scheduler
    sent it again after a crash) is dropped (errors.Dropped): nothing of it runs.
    """
    uuid = str(call.payload["instance"]["uuid"])
    live = _live_builds(call.rt)
    # no await before this: two deliveries cannot both pass
    if uuid in live:
        raise Dropped(f"the build of instance {uuid} is already under way on host {call.rt.host}")
    live[uuid] = call.request_id
    # the request's facts (the spec's `keep`), and the task state this run expects
    call.vars.update(keep(call), task_state=str(call.args["waiting"]))


@behaviour("compute.fetch_instance", via=("amqp-call",))
async def fetch_instance(ix: Interaction) -> None:
    """boot-vm 8: instance and flavor through the conductor; the instance must be building.
    The guest to build (`driver_instance`) is the step's `with:`."""
    reply = await ix.invoke({"instance_uuid": ix.vars["instance_uuid"]})
    ix.vars["instance"] = await _take(ix.call, reply["instance"])
    ix.vars["flavor"] = reply["flavor"]
    ix.vars.update(bind(ix.bindings, call_scope(ix.call)))


async def _take(call: Call, instance: Mapping[str, Any]) -> dict[str, Any]:
    """The instance, taken for this run (task state `taken` of the spec's args); Dropped when
    it is not waiting for a build on this host, or changes before it is taken."""
    uuid, args = str(instance["uuid"]), call.args
    state = (instance.get("vm_state"), instance.get("task_state"), instance.get("host"))
    # `taken` here means a run of this host that died: one alive would be in LIVE_BUILDS
    waiting = [(args["vm_state"], t, call.rt.host) for t in (args["waiting"], args["taken"])]
    if state not in waiting:
        end_build(call)
        raise Dropped(
            f"instance {uuid} is not waiting to be built on host {call.rt.host} (vm_state "
            f"{state[0]}, task_state {state[1]}, host {state[2]}): a stale build request"
        )
    taken = {"vm_state": args["vm_state"], "task_state": args["taken"], "host": call.rt.host}
    try:
        reply = await update_instance(call, uuid, {"task_state": args["taken"]}, str(state[1]))
    except RemoteError as exc:  # not a Conflict: the conductor failed, the build fails (ERROR)
        if (landed := await _landed(call, uuid, taken, exc)) is None:
            end_build(call)
            raise Dropped(f"instance {uuid} changed before its build began: {exc}") from exc
        reply = {"instance": landed}
    call.vars["task_state"] = str(args["taken"])
    return dict(reply["instance"])


async def _landed(
    call: Call, uuid: str, want: Mapping[str, Any], exc: Exception
) -> dict[str, Any] | None:
    """After the update `exc` failed (raised again unless a Conflict or no answer): the
    instance if it has `want` already (a conductor killed after it committed the update is
    asked again when restarted, and refuses: the update is done), else None."""
    if isinstance(exc, RemoteError) and exc.exc_type != "Conflict":
        raise exc
    reply = await send(call, "instance_get", {"instance_uuid": uuid})
    instance: dict[str, Any] = (reply or {}).get("instance") or {}
    return instance if all(instance.get(k) == v for k, v in want.items()) else None


class RescheduleBuild(StepFailed):
    """The hypervisor failed to build the guest: another host may succeed (nova reschedules)."""


@behaviour("compute.spawn", via=("native",))
async def spawn(ix: Interaction) -> None:
    """boot-vm 9: the driver starts building the guest.

    A driver failure raises RescheduleBuild, so that the build's `on_failure` steps try
    another host (up to config.max_build_attempts hosts in all).
    """
    instance = driver_instance(ix.vars)
    ix.vars["spawned"] = True  # a failed spawn may leave a half-made guest to clean up
    image_id = str(instance.get("image_id") or "")
    path = image_cache_path(ix.rt, image_id or "-")  # where step 12 puts the image's data
    refs, catalog = {"path": str(path), "pending": not path.is_file()}, ix.rt.info.resources
    spawn = catalog.resource(SERVER).template("spawn", item={"image_id": image_id}, refs=refs)
    args: dict[str, Any] = {"instance": instance, **spawn}
    try:
        try:
            await ix.invoke(**args)
        except Exception as exc:
            if type(exc).__name__ != "InstanceExists" or ix.rt.driver is None:
                raise
            # a build run again (redelivered after a crash): the guest its first run began goes
            await ix.rt.driver.destroy(instance)
            await ix.invoke(**args)
    except Exception as exc:
        raise RescheduleBuild(
            f"Build of instance {instance['uuid']} on host {ix.rt.host} failed in the "
            f"hypervisor: {exc}"
        ) from exc


@behaviour("compute.get_image", via=("http",))
async def get_image(ix: Interaction) -> None:
    """boot-vm 10: the image's metadata from glance (nothing to do when booting from a volume)."""
    image_id = ix.vars.get("image_id")
    if not image_id:
        return
    image = expect(await ix.invoke(image_id=image_id, token=await flow_token(ix.call)), 200).json()
    if image.get("status") != "active":
        raise StepFailed(f"Image {image_id} is not active (status {image.get('status')})", code=400)
    ix.vars["image"] = image


def _md5_of(path: Path) -> str | None:
    """The md5 of the file at `path` (None: no file), read again only when its inode, size
    or modification time changed: every boot on a host checks its cached image."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _md5_file(path, (st.st_ino, st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=256)
def _md5_file(path: Path, version: tuple[int, int, int]) -> str:  # version: the cache key
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_cache_path(rt: ServiceRuntime, image_id: str) -> Path:
    return _cached_at(rt.data_dir, rt.host, image_id)


@lru_cache(maxsize=1024)  # a Path is a dozen calls to build; a boot asks three times
def _cached_at(data_dir: Path, host: str, image_id: str) -> Path:
    return Path(data_dir) / "image-cache" / host / image_id


@behaviour("compute.download_image", via=("http",))
async def download_image(ix: Interaction) -> None:
    """boot-vm 12: the image's data from swift into this host's image cache (md5 checked)."""
    image = ix.vars.get("image")
    if not image:
        return
    ix.vars["image_path"] = str(image_cache_path(ix.rt, str(image["id"])))
    await cache_image(ix.rt, image, ix.invoke)


async def cache_image(
    rt: ServiceRuntime, image: Mapping[str, Any], get_object: Callable[..., Awaitable[Any]]
) -> Path:
    """The image's file in this host's cache, fetched with `get_object` (swift's getObject)
    unless it is there with the right checksum already."""
    image_id = str(image["id"])
    checksum = image.get("checksum")
    if not checksum:
        raise StepFailed(f"Image {image_id} has no data to boot from", code=400)
    path = image_cache_path(rt, image_id)
    if _md5_of(path) == checksum:
        return path
    where = rt.info.resources.resource(SERVER).template("swift_location", item=dict(image))
    if not where:  # the server's template: account, container and object of the image's data
        raise StepFailed(f"Image {image_id} has no location in the object store", code=400)
    data = expect(await get_object(**where, token=await rt.service_token()), 200).content
    got = hashlib.md5(data).hexdigest()
    if got != checksum:
        raise StepFailed(
            f"Image {image_id} is corrupt: its data has md5 {got}, glance says {checksum}"
        )
    atomic_write(path, data)  # the md5 is checked again before the cache is used
    return path


@behaviour("compute.create_ports", needs=("network",), via=("http",))
async def create_ports(ix: Interaction) -> None:
    """boot-vm 13: one port per requested network, bound to this host (or bind a given port).

    Idempotent: a port is keyed by the instance (its device_id) and the request (network,
    fixed IP), so a build run again (redelivered after a compute crash) takes the port it
    made the first time instead of making a second one.
    """
    networks = ix.vars.get("requested_networks") or []
    if not networks:
        return
    uuid = ix.vars["instance_uuid"]
    instance = ix.vars.get("instance") or {}
    token = await flow_token(ix.call)
    if any(net.get("auto") for net in networks):
        networks = [await auto_network(ix, instance, token)]
    server = ix.rt.info.resources.resource(SERVER)
    binding = port_binding(ix.rt, {**instance, "uuid": uuid})
    groups = await group_ids(ix.call, instance, token, ix.label)
    given = given_ports(networks)
    made = [p for p in await instance_ports(ix.rt, uuid, token) if str(p["id"]) not in given]
    for net in networks:
        if net.get("port_id"):
            ids, body = {"port_id": net["port_id"]}, {"port": binding}
            resp = await _neutron(ix.call, ix.label, "updatePort", token, ids, body=body)
            ix.vars["bound_ports"].append(expect(resp, 200).json()["port"])
            continue
        same = (p for p in made if server.template("same_request", item=p, refs={"net": net}))
        again = next(same, None)
        if again is not None:  # made by an earlier run of this build
            made.remove(again)
            ix.vars["ports"].append(again)
            continue
        refs = {"binding": binding, "groups": groups}
        body = dict(server.template("port", item=net, refs=refs))
        resp = expect(await ix.invoke(body=body, token=token), 201)
        ix.vars["ports"].append(resp.json()["port"])


async def _neutron(
    call: Call, label: str | None, operation: str, token: str, *params: dict[str, Any], **kw: Any
) -> Any:
    """neutron's `operation` with `token`, in the flow's trace."""
    api, context = call.rt.info.api_of_type("network"), call.flow_context(label)
    return await call.rt.clients.call(api, operation, *params, token=token, context=context, **kw)


async def auto_network(ix: Interaction, instance: Mapping[str, Any], token: str) -> dict[str, Any]:
    """`networks: auto` (2.37): the one network the project may use (the server's template
    `auto_networks`), as a requested network. Several: ambiguous; none: this cloud has no
    auto-allocated topology to make one."""
    resp = await _neutron(ix.call, ix.label, "listNetworks", token, query={})
    refs = {"networks": expect(resp, 200).json().get("networks") or []}
    refs["project_id"] = instance.get("project_id")
    usable = ix.rt.info.resources.resource(SERVER).template("auto_networks", refs=refs)
    if len(usable) > 1:
        raise StepFailed(
            "Multiple possible networks found, use a Network ID to be more specific.", code=409
        )
    if not usable:
        raise StepFailed("No network is available to allocate automatically.", code=400)
    return {"network_id": str(usable[0]["id"])}


def port_binding(rt: ServiceRuntime, instance: Mapping[str, Any]) -> dict[str, Any]:
    """How a port is bound to `instance` on this host: the spec's `binding` template."""
    where = {"host": rt.host, "zone": host_availability_zone(rt)}
    return dict(rt.info.resources.resource(SERVER).template("binding", doc=instance, refs=where))


async def group_ids(
    call: Call, instance: Mapping[str, Any], token: str, label: str | None = None
) -> list[str]:
    """The ids of the groups the server names (by name or id, as the request gave them),
    for the ports nova makes; only `default`: [] (neutron puts the port there itself)."""
    names = [str(n) for n in instance.get("security_groups") or []]
    if names in ([], ["default"]):
        return []  # neutron's own choice: no lookup on the boot path
    query = {"project_id": instance.get("project_id")}
    resp = await _neutron(call, label, "listSecurityGroups", token, query=query)
    found = expect(resp, 200).json().get("security_groups") or []
    return [str(g["id"]) for n in names if (g := match(call.rt, found, n)) is not None]


async def _network_names(
    call: Call, network_ids: Iterable[str], token: str | None
) -> dict[str, str]:
    """Network id -> name, asked of neutron (the id itself when neutron cannot say). Names
    change rarely: a process's compute hosts remember them for NETWORK_NAME_TTL_S."""
    cache: dict[str, tuple[float, str]] = call.rt.shared.setdefault("network_names", {})
    now, names = time.monotonic(), {}
    for net_id in dict.fromkeys(network_ids):
        hit = cache.get(net_id)
        names[net_id] = hit[1] if hit is not None and now - hit[0] < NETWORK_NAME_TTL_S else net_id
        if names[net_id] != net_id or not token:
            continue
        with contextlib.suppress(Exception):  # no network API, or it cannot say
            api, ids = call.rt.info.api_of_type("network"), {"network_id": net_id}
            resp = await call.rt.clients.call(api, "showNetwork", ids, token=token)
            if resp.status_code == 200 and (name := resp.json()["network"].get("name")):
                names[net_id] = str(name)
                cache[net_id] = (now, str(name))
    return names


def nova_addresses(
    rt: ServiceRuntime, ports: Iterable[Mapping[str, Any]], names: Mapping[str, str]
) -> dict[str, Any]:
    """nova's `addresses` of these ports (the server's spec template `fixed`)."""
    refs = {"ports": [dict(p) for p in ports], "names": dict(names)}
    return dict(rt.info.resources.resource(SERVER).template("fixed", refs=refs))


async def wait_until_running(rt: ServiceRuntime, instance: dict[str, Any]) -> None:
    """ACTIVE only once the guest runs: a real hypervisor boots it after the build's steps.

    NOSTATE means still starting; any other state than RUNNING, or no RUNNING within
    config.guest_boot_timeout_s, fails the build on this host (and may reschedule it).
    """
    if rt.driver is None:
        return
    deadline = time.monotonic() + rt.config.guest_boot_timeout_s
    delay = 0.02
    while True:
        state = int(await rt.driver.get_power_state(instance))
        if state == 1:
            return
        if state != 0:
            raise RescheduleBuild(
                f"The guest of instance {instance['uuid']} on host {rt.host} did not start "
                f"(power state {state}): {await _console_tail(rt, instance)}"
            )
        if time.monotonic() > deadline:
            raise RescheduleBuild(
                f"The guest of instance {instance['uuid']} on host {rt.host} was not running "
                f"after {rt.config.guest_boot_timeout_s:g} s"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def _console_tail(rt: ServiceRuntime, instance: dict[str, Any]) -> str:
    """The guest console's last line (no more than 300 characters)."""
    with contextlib.suppress(Exception):
        text = str(await rt.driver.get_console_output(instance))
        if lines := [line for line in text.splitlines() if line.strip()]:
            return lines[-1][-300:]
    return "no console output"


@behaviour("compute.mark_active", needs=("network",), via=("amqp-call",))
async def mark_active(ix: Interaction) -> None:
    """boot-vm 15.5: once the guest runs, the instance update the step's `with:` gives.

    The spec's update makes it ACTIVE with its ports and volumes; `addresses` (the networks
    named) and `launched_at` come from here."""
    await wait_until_running(ix.rt, driver_instance(ix.vars))
    ports = [*ix.vars.get("ports", []), *ix.vars.get("bound_ports", [])]
    token = await flow_token(ix.call) if ports else None
    names = await _network_names(ix.call, [str(p.get("network_id")) for p in ports], token)
    ix.vars.update(addresses=nova_addresses(ix.rt, ports, names), launched_at=naive_now())
    payload = bind(ix.bindings["payload"], call_scope(ix.call))
    try:
        reply = await ix.invoke(payload)
    except (RemoteError, MessagingTimeout) as exc:  # refused when asked again, or no answer
        done = {k: payload["updates"][k] for k in ("vm_state", "task_state", "ports")}
        if not (landed := await _landed(ix.call, ix.vars["instance_uuid"], done, exc)):
            raise
        reply = {"instance": landed}
    ix.vars["instance"] = reply["instance"]
    ix.vars["built"] = True
    end_build(ix.call)
