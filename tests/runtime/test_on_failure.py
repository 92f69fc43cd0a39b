"""A consumer's `on_failure` steps (specstack_runtime/onfailure.py): declared interactions run
in order, best effort, with the failure as `vars.error`; and `validate` checks them."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from generator.cli import main
from specstack_runtime import onfailure
from specstack_runtime.context import Call
from specstack_runtime.flow import Flow, HandlerSpec
from specstack_runtime.virt import InstanceNotFound
from tests.aio import arun
from tests.conftest import SPEC
from tests.runtime.test_compute_kit import make_runtime, stack_info


class Hypervisor:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def detach_volume(self, **kw: Any) -> None:
        self.calls.append(("detach_volume", kw))
        if kw["mountpoint"] == "/dev/vdc":
            raise InstanceNotFound("gone already")  # accepted: detached

    async def destroy(self, **kw: Any) -> None:
        self.calls.append(("destroy", kw))
        raise RuntimeError("the hypervisor is away")  # not accepted: logged, the next step runs


class Retry(RuntimeError):
    pass


def _call(driver: Hypervisor) -> Call:
    rt = make_runtime(stack_info(), "nova-compute", host="compute-1", driver=driver)
    return Call(
        rt=rt,
        trigger="build_and_run_instance",
        kind="message",
        request_id="req-1",
        global_request_id="req-1",
        vars={"attached": [{"device": "/dev/vdc"}, {"device": "/dev/vdb"}], "spawned": True},
    )


def _flow(call: Call, on_failure: Callable[[Flow], Awaitable[None]] | None = None) -> Flow:
    spec = HandlerSpec(
        component="nova-compute",
        kind="message",
        trigger=call.trigger,
        behaviour=None,
        on_error=None,
        run=_nothing,
        on_failure=on_failure,
    )
    return Flow(call, spec)


async def _nothing(flow: Flow) -> None:
    return None


async def _steps(flow: Flow) -> None:
    """As the generator writes a consumer's on_failure steps."""
    driver = flow.rt.driver
    await onfailure.step(
        flow.call,
        1,
        "hypervisor",
        "native",
        "detach_volume",
        driver.detach_volume,
        bindings={
            "each": "vars.attached",
            "mountpoint": "{item.device}",
            "accept": ["InstanceNotFound"],
            "keep": {"detached": "(has(vars.detached) ? vars.detached : []) + [item.device]"},
        },
    )
    await onfailure.step(flow.call, 2, "hypervisor", "native", "destroy", driver.destroy)
    await onfailure.step(
        flow.call,
        3,
        "hypervisor",
        "native",
        "destroy",
        driver.destroy,
        bindings={"when": "!vars.spawned"},
    )
    await onfailure.step(
        flow.call,
        4,
        "hypervisor",
        "native",
        "detach_volume",
        driver.detach_volume,
        bindings={
            "when": "'Retry' in vars.error.causes && vars.config.max_build_attempts > 0",
            "mountpoint": {"expr": "vars.error.type + ' ' + string(vars.error.code)"},
        },
    )


@arun
async def test_steps_run_in_order_best_effort_with_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = Hypervisor()
    call = _call(driver)
    try:
        try:
            raise Retry("no room")
        except Retry as exc:
            raise ValueError("the build failed") from exc
    except ValueError as error:
        with caplog.at_level(logging.WARNING, "specstack.onfailure"):
            await onfailure.run(_flow(call), error, _steps)
    assert driver.calls == [
        ("detach_volume", {"mountpoint": "/dev/vdc"}),
        ("detach_volume", {"mountpoint": "/dev/vdb"}),
        ("destroy", {}),
        ("detach_volume", {"mountpoint": "ValueError 500"}),  # its cause is a Retry
    ]
    assert call.vars["detached"] == ["/dev/vdc", "/dev/vdb"]
    assert call.vars["error"]["message"] == "the build failed"
    assert call.vars["error"]["details"] == "ValueError: the build failed"
    assert "on_failure step 2 (native destroy)" in caplog.text
    assert "the hypervisor is away" in caplog.text


MADE = {"source_type": "volume", "destination_type": "volume", "uuid": "vol-made",
        "image_id": "img-1", "boot_index": 0, "delete_on_termination": True}  # fmt: skip


class Bus:
    """Records what the generated senders send; an instance_update call gets the row back."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def cast(self, topic: str, method: str, payload: dict[str, Any], **_: Any) -> None:
        self.sent.append((topic, method, payload))

    async def call(
        self, topic: str, method: str, payload: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        self.sent.append((topic, method, payload))
        return {"instance": {"uuid": payload["instance_uuid"]}}


@arun
async def test_the_generated_steps_go_through_the_flows_own_transports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nova-compute's generated build_and_run_instance_on_failure: the driver's methods and
    the generated sender (its payload checked against the message's model)."""
    from generated.services import nova_compute

    spec = nova_compute.HANDLERS["build_and_run_instance"]
    assert spec.on_failure is nova_compute.build_and_run_instance_on_failure
    driver = Hypervisor()
    bus = Bus()
    rt = make_runtime(stack_info(), "nova-compute", host="compute-1", driver=driver, bus=bus)
    uuid = "0b8f2b9e-3c1a-4f44-9c55-0d8a8c1f6a11"
    call = Call(
        rt=rt,
        trigger="build_and_run_instance",
        kind="message",
        request_id="req-1",
        global_request_id="req-1",
        vars={
            "attached": [{"device": "/dev/vdb", "connection_info": {}}],
            "spawned": True,
            "driver_instance": {"uuid": uuid},
            "attachments": [],
            "ports": [],
            "requested_networks": [],
            "instance_uuid": uuid,
            "task_state": "spawning",
            # the root volume boot-vm 12.1 made from the image: the row keeps it (deleted
            # with the server, as nova's BDM keeps its volume_id)
            "block_device_mapping": [MADE],
        },
    )
    with caplog.at_level(logging.WARNING, "specstack.onfailure"):
        await onfailure.run(_flow(call, spec.on_failure), RuntimeError("no disk"), spec.on_failure)
    assert [name for name, _ in driver.calls] == ["detach_volume", "destroy"]
    assert driver.calls[0][1]["mountpoint"] == "/dev/vdb"
    [(topic, method, payload)] = bus.sent  # not rescheduled: the instance goes to ERROR
    assert (topic, method) == ("conductor", "instance_update")
    assert payload["instance_uuid"] == uuid and payload["expected_task_state"] == "spawning"
    assert payload["updates"]["vm_state"] == "error"
    assert payload["updates"]["fault"]["details"] == "RuntimeError: no disk"
    assert payload["updates"]["block_device_mapping"] == [MADE]
    assert "on_failure step 2 (native destroy)" in caplog.text  # the driver refused


def test_causes_are_followed_ten_deep() -> None:
    error: BaseException = Retry("deepest")
    for depth in range(9):
        try:
            raise ValueError(f"level {depth}") from error
        except ValueError as exc:
            error = exc
    assert "Retry" in onfailure.describe(error)["causes"]
    try:
        raise KeyError("one more") from error
    except KeyError as exc:
        assert "Retry" not in onfailure.describe(exc)["causes"]


def test_describe_takes_an_errors_own_code() -> None:
    class Refused(Exception):
        code = 409
        message = "in use"

    assert onfailure.describe(Refused("x"))["code"] == 409
    assert onfailure.describe(Refused("x"))["message"] == "in use"
    assert onfailure.describe(RuntimeError())["message"] == "RuntimeError"


def test_validate_checks_on_failure_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    comps = spec / "components.yaml"
    text = comps.read_text("utf-8")
    for old, new in (
        ("operation: deleteAttachment\n", "operation: deleteAttachments\n"),
        ("message: schedule_and_build_instances\n", "message: schedule_and_build_instance\n"),
        ("            call: destroy\n", "            call: destroys\n"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    comps.write_text(text)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "on_failure step 3: operation 'deleteAttachments' is not in the" in err
    assert "unknown message 'schedule_and_build_instance'" in err
    assert "'destroys' is not a method of the hypervisor driver interface" in err
