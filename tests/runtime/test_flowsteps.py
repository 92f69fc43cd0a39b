"""The flow's own steps: a step's `with:` (`{expr}` values, `when`, `each`, `accept`, `keep`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from specstack_runtime import registry
from specstack_runtime.bindings import bind
from specstack_runtime.context import Call, Interaction
from specstack_runtime.errors import StepFailed
from specstack_runtime.virt import InstanceNotFound
from tests.aio import arun
from tests.runtime.test_compute_kit import Recorder, make_runtime, response, stack_info


def _call(tmp_path: Path, **vars_: Any) -> Call:
    rt = make_runtime(stack_info(), "nova-compute", host="compute-1", data_dir=tmp_path)
    call = Call(rt=rt, trigger="t", kind="flow", request_id="r", global_request_id="r")
    call.vars.update(vars_)
    return call


def _ix(call: Call, via: str, invoke: Any, bindings: dict[str, Any]) -> Interaction:
    return Interaction(
        call=call, label="1", source="a", target="b", via=via, name="op", invoke=invoke,
        bindings=bindings,
    )  # fmt: skip


def test_an_expr_value_is_computed_from_the_flow() -> None:
    scope = {"ports": [{"id": "p1"}, {"id": "p2"}], "host": "h"}
    got = bind({"ids": {"expr": "vars.ports.map(p, p.id)"}, "at": "{host}"}, scope)
    assert got == {"ids": ["p1", "p2"], "at": "h"}


@arun
async def test_each_runs_once_per_item_and_keep_collects(tmp_path: Path) -> None:
    call = _call(tmp_path, atts=[{"id": "a1"}, {"id": "a2"}], done=[])
    invoke = Recorder()
    bindings = {"each": "vars.atts", "att": "{item.id}", "keep": {"done": "vars.done + [item.id]"}}
    await registry.get("flow.native")(_ix(call, "native", invoke, bindings))
    assert [kw for _, kw in invoke.calls] == [{"att": "a1"}, {"att": "a2"}]
    assert call.vars["done"] == ["a1", "a2"]


@arun
async def test_when_false_does_nothing(tmp_path: Path) -> None:
    call = _call(tmp_path, go=False)
    invoke = Recorder()
    await registry.get("flow.amqp-cast")(_ix(call, "amqp-cast", invoke, {"when": "vars.go"}))
    assert invoke.calls == []


@arun
async def test_http_accept_and_keep_headers(tmp_path: Path) -> None:
    call = _call(tmp_path)
    call.token = "user-token"
    ok = Recorder(response(404, {}, headers={"X-Req": "r-1"}))
    bindings = {"accept": [204, 404], "keep": {"req": "headers['x-req']"}}
    await registry.get("flow.http")(_ix(call, "http", ok, bindings))
    assert ok.calls == [((), {"token": "user-token"})] and call.vars["req"] == "r-1"
    with pytest.raises(StepFailed, match="GET / answered 200"):  # not among those accepted
        await registry.get("flow.http")(_ix(call, "http", Recorder(response(200, {})), bindings))


@arun
async def test_http_without_a_user_token_uses_the_service_token(tmp_path: Path) -> None:
    invoke = Recorder(response(200, {"a": 1}))
    ix = _ix(_call(tmp_path), "http", invoke, {})
    ix.save_as = "answer"
    await registry.get("flow.http")(ix)
    assert invoke.calls == [((), {"token": "service-token"})]
    assert ix.vars["answer"] == {"a": 1}


@arun
async def test_native_accept_names_the_errors_that_mean_done(tmp_path: Path) -> None:
    async def gone(**kw: Any) -> None:
        raise InstanceNotFound("i1")

    call = _call(tmp_path)
    await registry.get("flow.native")(_ix(call, "native", gone, {"accept": ["InstanceNotFound"]}))
    with pytest.raises(InstanceNotFound):
        await registry.get("flow.native")(_ix(call, "native", gone, {}))
