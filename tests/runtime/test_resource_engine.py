"""The resource engine on a service the spec alone declares (placement, tests/stack/placement_spec.py).

Each test drives operations as generated code does (the operation's policy rule, then the
engine) against a real store, and checks what a client relies on: status codes, bodies,
what is kept, what another project sees, what the policy file allows.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from generator.pipeline.build_ir import build_ir
from generator.pipeline.load import load_spec
from specstack_runtime.config import StackConfig
from specstack_runtime.context import AuthContext, Call, Reply
from specstack_runtime.errors import ApiError, Conflict, Forbidden, NotFound
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo
from tests.runtime.fakes import NullBus, NullTrace, make_store, serve_operation
from tests.stack.test_add_component import extended_spec

ADMIN = AuthContext(
    "t-a", "u-admin", "admin", "p-admin", "admin", "default", ("admin", "member", "reader"), ""
)
SERVICE = AuthContext("t-s", "u-nova", "nova", "p-svc", "service", "default", ("service",), "")
ALICE = AuthContext("t-1", "u-1", "alice", "p-1", "one", "default", ("member", "reader"), "")
BOB = AuthContext("t-2", "u-2", "bob", "p-2", "two", "default", ("member", "reader"), "")


def placement_info(root: Path, edit: Callable[[Path], None] | None = None) -> StackInfo:
    extended_spec(root)
    if edit is not None:
        edit(root / "spec")
    spec, problems = load_spec(root / "spec")
    assert not problems, problems
    return StackInfo(json.loads(build_ir(spec).to_json()))


class Placement:
    def __init__(self, info: StackInfo, tmp: Path, **config: Any) -> None:
        self.info = info
        self.store = make_store(info, "placement-api")
        self.rt = ServiceRuntime(
            component="placement-api",
            project="placement",
            host="controller",
            info=info,
            config=StackConfig(data_dir=tmp, **config),
            bus=NullBus(),  # type: ignore[arg-type]
            trace=NullTrace(),  # type: ignore[arg-type]
            clients=None,  # type: ignore[arg-type]
            store=self.store,
            data_dir=tmp,
            shared={},
        )

    async def op(
        self,
        operation_id: str,
        who: AuthContext = ADMIN,
        *,
        path: dict[str, str] | None = None,
        body: Any = None,
        query: dict[str, str] | None = None,
        version: tuple[int, int] | None = None,
    ) -> Reply:
        call = Call(
            rt=self.rt,
            trigger=operation_id,
            kind="operation",
            request_id="req-1",
            global_request_id="req-1",
            path_params=dict(path or {}),
            query={k: [v] for k, v in (query or {}).items()},
            headers={"host": "placement.test"},
            body=body,
            auth=who,
            token=who.token,
            microversion=version,  # as the app negotiated it
        )
        return await serve_operation(self.info, "placement", call)

    async def provider(self, name: str, vcpus: int = 8, ram: int = 4096) -> Reply:
        inventories = {"VCPU": {"total": vcpus}, "MEMORY_MB": {"total": ram}}
        return await self.op(
            "putResourceProvider",
            SERVICE,
            path={"uuid": name},
            body={"name": name, "inventories": inventories},
        )

    async def allocate(self, who: AuthContext, host: str, vcpus: int) -> Reply:
        body = {"allocations": {host: {"resources": {"VCPU": vcpus}}}}
        return await self.op(
            "putAllocations", who, path={"consumer_uuid": str(uuid.uuid4())}, body=body
        )


@pytest.fixture(scope="module")
def info(tmp_path_factory: pytest.TempPathFactory) -> StackInfo:
    return placement_info(tmp_path_factory.mktemp("placement"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_upsert_creates_then_replaces_with_the_declared_statuses(
    info: StackInfo, tmp_path: Path
) -> None:
    async def go() -> None:
        p = Placement(info, tmp_path)
        first = await p.provider("cn-1")
        assert first.status == 201
        assert first.body == {
            "uuid": "cn-1",
            "name": "cn-1",
            "generation": 0,
            "status": "enabled",
            "inventories": {"VCPU": {"total": 8}, "MEMORY_MB": {"total": 4096}},
        }
        again = await p.provider("cn-1", vcpus=16)
        assert again.status == 200 and again.body["inventories"]["VCPU"] == {"total": 16}
        shown = await p.op("showResourceProvider", path={"uuid": "cn-1"})
        assert shown.body["inventories"]["VCPU"]["total"] == 16
        # server-set fields cannot be given, on create or later
        with pytest.raises(ApiError) as bad:
            await p.op(
                "putResourceProvider",
                SERVICE,
                path={"uuid": "cn-2"},
                body={"name": "x", "generation": 5},
            )
        assert bad.value.status == 400 and "generation" in bad.value.message
        assert await p.store.get("resource_providers", "cn-2") is None  # nothing written
        with pytest.raises(NotFound, match=r"No resource provider with uuid nope found\."):
            await p.op("showResourceProvider", path={"uuid": "nope"})

    run(go())


def test_actions_follow_the_state_machine(info: StackInfo, tmp_path: Path) -> None:
    async def go() -> None:
        p = Placement(info, tmp_path)
        await p.provider("cn-1")
        act = await p.op("resourceProviderAction", path={"uuid": "cn-1"}, body={"disable": None})
        assert act.status == 204
        assert (await p.store.get("resource_providers", "cn-1") or {})["status"] == "disabled"
        with pytest.raises(Conflict, match="is disabled: it cannot disable"):
            await p.op("resourceProviderAction", path={"uuid": "cn-1"}, body={"disable": None})
        with pytest.raises(ApiError) as unknown:
            await p.op("resourceProviderAction", path={"uuid": "cn-1"}, body={"reboot": None})
        assert unknown.value.status == 400
        await p.op("resourceProviderAction", path={"uuid": "cn-1"}, body={"enable": None})
        assert (await p.store.get("resource_providers", "cn-1") or {})["status"] == "enabled"
        with pytest.raises(Forbidden):  # the operation's rule (spec/policy.yaml): admins only
            await p.op(
                "resourceProviderAction", SERVICE, path={"uuid": "cn-1"}, body={"disable": None}
            )

    run(go())


def test_the_computed_query_subtracts_allocations(info: StackInfo, tmp_path: Path) -> None:
    async def go() -> None:
        p = Placement(info, tmp_path)
        await p.provider("cn-1", vcpus=4)
        await p.provider("cn-2", vcpus=8)
        assert (await p.allocate(ALICE, "cn-1", 3)).status == 204
        answer = (await p.op("listAllocationCandidates", ALICE, query={"resources": "VCPU:2"})).body
        assert sorted(answer["provider_summaries"]) == ["cn-2"]  # cn-1 has 1 VCPU left
        assert answer["provider_summaries"]["cn-2"]["resources"]["VCPU"] == {
            "capacity": 8,
            "used": 0,
        }
        one = (await p.op("listAllocationCandidates", ALICE, query={"resources": "VCPU:1"})).body
        assert one["provider_summaries"]["cn-1"]["resources"]["VCPU"] == {"capacity": 4, "used": 3}
        none = (await p.op("listAllocationCandidates", ALICE, query={"resources": "GPU:1"})).body
        assert none == {"allocation_requests": [], "provider_summaries": {}}
        for bad in ("VCPU", "VCPU:x", "VCPU:1,"):
            with pytest.raises(ApiError) as err:
                await p.op("listAllocationCandidates", ALICE, query={"resources": bad})
            assert err.value.status == 400

    run(go())


def test_owner_scope_hides_other_projects(info: StackInfo, tmp_path: Path) -> None:
    async def go() -> None:
        p = Placement(info, tmp_path)
        await p.provider("cn-1")
        consumer = str(uuid.uuid4())
        body = {"allocations": {"cn-1": {"resources": {"VCPU": 1}}}}
        put = await p.op("putAllocations", ALICE, path={"consumer_uuid": consumer}, body=body)
        assert put.status == 204
        row = await p.store.get("allocations", consumer)
        assert row is not None and row["project_id"] == "p-1"  # stamped from the token
        mine = await p.op("showAllocations", ALICE, path={"consumer_uuid": consumer})
        assert mine.body["allocations"] == body["allocations"]
        with pytest.raises(NotFound):  # another project: as if it did not exist
            await p.op("showAllocations", BOB, path={"consumer_uuid": consumer})
        with pytest.raises(NotFound):
            await p.op("deleteAllocations", BOB, path={"consumer_uuid": consumer})
        # a service may act for the instance's project (see_all: rule:admin_or_service)
        other = str(uuid.uuid4())
        body_for = {**body, "project_id": "p-2"}
        await p.op("putAllocations", SERVICE, path={"consumer_uuid": other}, body=body_for)
        assert (await p.store.get("allocations", other) or {})["project_id"] == "p-2"
        with pytest.raises(Forbidden):  # a member may not (the owner rule)
            await p.op(
                "putAllocations", ALICE, path={"consumer_uuid": str(uuid.uuid4())}, body=body_for
            )

    run(go())


def test_quota_holds_under_concurrent_creates(info: StackInfo, tmp_path: Path) -> None:
    async def go() -> None:
        p = Placement(info, tmp_path, quotas={"consumers": 3})
        await p.provider("cn-1", vcpus=64)
        results = await asyncio.gather(
            *(p.allocate(ALICE, "cn-1", 1) for _ in range(10)), return_exceptions=True
        )
        ok = [r for r in results if isinstance(r, Reply)]
        refused = [r for r in results if isinstance(r, ApiError)]
        assert len(ok) == 3 and len(refused) == 7
        assert all(r.status == 403 and "consumers" in r.message for r in refused)
        assert len(await p.store.list("allocations", {"project_id": "p-1"})) == 3
        assert (await p.allocate(BOB, "cn-1", 1)).status == 204  # per project

    run(go())


def test_editing_a_policy_rule_changes_what_the_api_allows(tmp_path: Path) -> None:
    def services_may_not(spec: Path) -> None:
        policy = spec / "policy.yaml"
        text = policy.read_text()
        old = "    admin_or_service: 'rule:admin or rule:service'\n"
        assert old in text
        policy.write_text(text.replace(old, "    admin_or_service: 'rule:admin'\n"))

    async def go() -> None:
        before = Placement(placement_info(tmp_path / "a"), tmp_path)
        assert (await before.provider("cn-1")).status == 201
        after = Placement(placement_info(tmp_path / "b", services_may_not), tmp_path)
        with pytest.raises(Forbidden, match="putResourceProvider"):
            await after.provider("cn-1")
        assert await after.store.get("resource_providers", "cn-1") is None

    run(go())
