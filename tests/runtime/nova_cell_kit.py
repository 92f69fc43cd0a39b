"""The nova cell of the runtime tests: nova-api, scheduler, conductor and computes on one
in-process bus, their generated services' handling emulated from the IR."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from generator.pipeline.segments import TRIGGERING_VIAS
from specstack_runtime import onfailure, registry
from specstack_runtime.behaviours import (  # noqa: F401  (they register the nova behaviours)
    conductor,
    nova_api,
    nova_build,
    nova_delete,
    nova_host,
    nova_keypairs,
    scheduler,
)
from specstack_runtime.bus import Envelope, InProcessBus
from specstack_runtime.config import StackConfig
from specstack_runtime.context import Call, Interaction, Reply
from specstack_runtime.errors import Dropped
from specstack_runtime.flow import Flow, HandlerSpec
from specstack_runtime.messaging import send
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.virt.fake import FakeHypervisor
from tests.runtime.fakes import serve_operation
from tests.runtime.test_compute_kit import (
    FakeServices,
    check_response,
    make_runtime,
    nova_store,
    op_call,
    stack_info,
)

# -- the nova cell: generated services' handling, emulated from the IR --------------------------


def _spec(h: dict[str, Any]) -> HandlerSpec:
    async def run(flow: Flow) -> None:
        return None

    return HandlerSpec(
        component="", kind="message", trigger=h["message"], behaviour=None, on_error=None, run=run
    )


def _steps_of(info: StackInfo, sequence: str, component: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, interaction) of every interaction `component` performs in `sequence`."""
    out = []
    for step in info.sequences[sequence]["steps"]:
        items = [(str(step["number"]), step["main"])]
        items += [(f"{step['number']}.{i}", it) for i, it in enumerate(step["then"], 1)]
        out += [(label, it) for label, it in items if it["source_component"] == component]
    return out


class NovaCell:
    """nova-api, scheduler, conductor and computes on one InProcessBus (see module doc)."""

    def __init__(self, tmp_path: Path, computes: int = 2, **config: Any) -> None:
        self.info = stack_info()
        self.bus = InProcessBus()
        self.services = FakeServices()
        self.store = nova_store(self.info)
        self.config = StackConfig(data_dir=tmp_path, computes=computes, **config)
        self.steps: list[tuple[str, str, str]] = []  # (component, sequence step label, behaviour)
        self.errors: list[tuple[str, BaseException]] = []
        self.dropped: list[tuple[str, BaseException]] = []

        def rt(component: str, host: str = "controller", driver: Any = None) -> ServiceRuntime:
            return make_runtime(
                self.info,
                component,
                host=host,
                bus=self.bus,
                clients=self.services,
                store=self.store,
                driver=driver,
                data_dir=tmp_path,
                config=self.config,
            )

        self.api = rt("nova-api")
        self.scheduler = rt("nova-scheduler")
        self.conductor = rt("nova-conductor")
        self.computes = {
            f"compute-{i}": rt(
                "nova-compute",
                f"compute-{i}",
                FakeHypervisor(tmp_path / f"fake-compute-{i}.json", hostname=f"compute-{i}"),
            )
            for i in range(1, computes + 1)
        }

    async def start(self) -> NovaCell:
        await self.bus.start()
        for rt in [self.scheduler, self.conductor, *self.computes.values()]:
            comp = self.info.components[rt.component]
            topics = {self.info.messages[h["message"]]["topic"] for h in comp["consumes"]}
            for topic in topics:
                per_host = any(
                    self.info.messages[h["message"]]["per_host"]
                    for h in comp["consumes"]
                    if self.info.messages[h["message"]]["topic"] == topic
                )
                await self.bus.subscribe(
                    topic, self._handler(rt), host=rt.host if per_host else None
                )
        for rt in self.computes.values():
            await registry.get("compute.report_resources")(rt)
        return self

    async def stop(self) -> None:
        for rt in self.computes.values():
            task = rt.local.get("compute.heartbeat")
            if task is not None:
                task.cancel()
        await self.bus.close()

    def _handler(
        self, rt: ServiceRuntime
    ) -> Callable[[Envelope], Awaitable[dict[str, Any] | None]]:
        comp = self.info.components[rt.component]
        by_method = {self.info.messages[h["message"]]["method"]: h for h in comp["consumes"]}

        async def handle(env: Envelope) -> dict[str, Any] | None:
            h = by_method[env.method]
            call = Call(
                rt=rt,
                trigger=h["message"],
                kind="message",
                request_id=env.context.get("request_id", "req-x"),
                global_request_id=env.context.get("global_request_id", "req-x"),
                sequence=env.context.get("sequence"),
                payload=env.payload,
                context=dict(env.context),
                token=env.context.get("auth_token"),
                args=dict(h.get("args") or {}),  # the consumer's `args:`, as Flow passes them
            )
            try:
                result = await registry.get(h["behaviour"])(call)
                await self.run_steps(call, h["message"])
            except Dropped as exc:  # as consumers.Dispatcher: acknowledged, nothing undone
                self.dropped.append((h["message"], exc))
                return None
            except Exception as exc:
                self.errors.append((h["message"], exc))
                if h.get("on_failure"):  # as consumers.Dispatcher: the spec's steps first
                    await onfailure.run(Flow(call, _spec(h)), exc, self._on_failure(h))
                if h["on_error"]:
                    await registry.get(h["on_error"])(call, exc)
                    return None
                raise
            return result  # type: ignore[no-any-return]

        return handle

    def _flow_steps(
        self, call: Call, trigger_message: str | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """The interactions the component performs after the one that triggered it, up to
        the next one that triggers it again (its segment, as the generator reads it)."""
        component = call.rt.component
        for name in self.info.sequences:
            items = [
                (f"{st['number']}{'.' + str(i) if i else ''}", it)
                for st in self.info.sequences[name]["steps"]
                for i, it in enumerate([st["main"], *st["then"]])
            ]
            at = next(
                (
                    n
                    for n, (_, it) in enumerate(items)
                    if it["target_component"] == component
                    and (it.get("message") if trigger_message else it.get("operation"))
                    == (trigger_message or call.trigger)
                ),
                None,
            )
            if at is None:
                continue
            out = []
            for label, it in items[at + 1 :]:
                if it["target_component"] == component and it["via"] in TRIGGERING_VIAS:
                    break
                if it["source_component"] == component:
                    out.append((label, it))
            return out
        return []

    async def run_steps(self, call: Call, trigger_message: str | None) -> None:
        for label, it in self._flow_steps(call, trigger_message):
            if it["via"] != "sql":
                await self._step(call, label, it)

    def _on_failure(self, h: dict[str, Any]) -> Callable[[Flow], Awaitable[None]]:
        """A consumer's on_failure steps, as the generated `<trigger>_on_failure` runs them
        (each transport bound as `_invoke` binds a flow's)."""

        async def steps(flow: Flow) -> None:
            for number, st in enumerate(h["on_failure"], 1):
                it = {**st, "target_component": st["to"], "source_component": flow.rt.component}
                name = st.get("operation") or st.get("message") or st.get("call")
                invoke = self._invoke(flow.call, it)
                await onfailure.step(
                    flow.call, number, st["to"], st["via"], name, invoke, bindings=st.get("with")
                )

        return steps

    def _invoke(self, call: Call, it: dict[str, Any]) -> Callable[..., Awaitable[Any]]:
        via = it["via"]
        if via == "http":
            api = self.info.components[it["target_component"]]["api"]

            async def http(**kw: Any) -> Any:
                token = kw.pop("token", None)
                body = kw.pop("body", None)
                query = kw.pop("query", None)
                headers = kw.pop("headers", None)
                return await call.rt.clients.call(
                    api, it["operation"], kw, body=body, query=query, headers=headers, token=token
                )

            return http
        if via in ("amqp-cast", "amqp-call"):

            async def amqp(payload: dict[str, Any], host: str | None = None) -> Any:
                return await send(call, it["message"], payload, host=host)

            return amqp
        if via == "native":

            async def native(**kw: Any) -> Any:
                return await getattr(call.rt.driver, it["call"])(**kw)

            return native
        raise AssertionError(via)

    async def operation(
        self, operation_id: str, *, sequence: str | None = None, **kwargs: Any
    ) -> tuple[Reply, Call]:
        """Run an operation of nova-api the way the generated app will (steps around it)."""
        call = op_call(self.api, operation_id, sequence=sequence, **kwargs)
        before: list[tuple[str, dict[str, Any]]] = []
        after: list[tuple[str, dict[str, Any]]] = []
        if sequence:
            seen_sql = False
            for label, it in _steps_of(self.info, sequence, "nova-api"):
                if it["via"] == "sql":
                    seen_sql = True
                    continue
                (after if seen_sql else before).append((label, it))
        for label, it in before:
            await self._step(call, label, it)
        reply: Reply = await serve_operation(self.info, "compute", call)
        check_response(operation_id, reply)
        for label, it in after:
            await self._step(call, label, it)
        return reply, call

    async def _step(self, call: Call, label: str, it: dict[str, Any]) -> None:
        # a step the spec gives no behaviour is the flow's own, with its `with:` (as generated)
        behaviour = it.get("behaviour") or f"flow.{it['via']}"
        if behaviour == "auth.validate":
            return
        self.steps.append((call.rt.component, label, behaviour))
        ix = Interaction(
            call=call,
            label=label,
            source=it["source_component"],
            target=it["target_component"],
            via=it["via"],
            name=it.get("operation") or it.get("message") or it.get("call"),
            invoke=self._invoke(call, it),
            bindings=it.get("bindings") or {},
            save_as=it.get("save_as"),
        )
        await registry.get(behaviour)(ix)

    async def wait_for(
        self, server_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            row = await self.store.get("instances", server_id)
            if row is not None and predicate(row):
                return row
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"timed out; instance is {row and (row['vm_state'], row['task_state'])}; errors {self.errors}"
                )
            await asyncio.sleep(0.005)
