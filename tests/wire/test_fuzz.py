"""Schemathesis against every generated API of a running stack.

Each operation of generated/openapi/<api>.json gets a bounded number of generated
requests (positive and negative data, fixed seed) with an admin token; every answer
must be no 5xx, have a status the operation declares and match the declared schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from ..conftest import REPO
from .conftest import Stack, running_stack, stack_mode

OPENAPI = REPO / "generated" / "openapi"
# spec order of the API components; the stack serves them on its base port + this index
APIS = ["identity", "compute", "image", "object-store", "network", "block-storage"]
# per operation and generation mode; the distributed run (PostgreSQL, every call over the
# network) takes half as many, to keep CI within its time
MAX_EXAMPLES = 6 if stack_mode() == "distributed" else 12
SEED = 20261127
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Invalid data must get a 4xx in the service's error format; which 4xx the api-ref does not list
NEGATIVE_CHECKS = [not_a_server_error, response_schema_conformance]
# Positive data asks for the microversion the API serves (the 406 for other ones has its own
# conformance tests); negative data sends anything, which must be a 400 or 406.
MICROVERSION = {
    "compute": {"X-OpenStack-Nova-API-Version": "2.1", "OpenStack-API-Version": "compute 2.1"},
    "block-storage": {"OpenStack-API-Version": "volume 3.0"},
}

# Operations not fuzzed, with why. Everything else runs; DELETEs run last.
EXCLUDED: dict[str, str] = {}
# Operations that fail today, each with why; the test fails when one of them starts passing.
KNOWN_FAILURES: set[str] = set()

# glance's JSON-patch media type is JSON
schemathesis.serializer.alias("application/openstack-images-v2.1-json-patch", "application/json")


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: what the fuzzer creates and changes stays out of the CLI tests."""
    with running_stack(tmp_path_factory, "fuzz") as running:
        yield running


@pytest.fixture(scope="module")
def admin(fuzz_stack: Stack) -> dict[str, Any]:
    """An admin token (project admin) with the ids the stack was seeded with."""
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "domain": {"name": "Default"}, "password": "admin"}
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
        }
    }
    resp = httpx.post(f"{fuzz_stack.identity_url}/auth/tokens", json=body, timeout=30)
    assert resp.status_code == 201, resp.text
    token = resp.json()["token"]
    return {
        "token": resp.headers["X-Subject-Token"],
        "project_id": token["project"]["id"],
        "user_id": token["user"]["id"],
    }


def _fixed_path_parameters(api: str, admin: dict[str, Any]) -> dict[str, str]:
    """Path parameters that name the caller's own project: random ones would only ever get 403."""
    if api == "block-storage":
        return {"project_id": admin["project_id"]}
    if api == "object-store":
        return {"account": f"AUTH_{admin['project_id']}"}
    return {}


def _operations(api: str) -> list[Any]:
    schema = schemathesis.openapi.from_path(OPENAPI / f"{api}.json")
    ops = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # DELETEs last: they may remove what other operations of the same run look up
    return sorted(ops, key=lambda op: op.method.upper() == "DELETE")


@pytest.mark.parametrize("api", APIS)
def test_fuzz(api: str, fuzz_stack: Stack, admin: dict[str, Any]) -> None:
    base_url = f"http://127.0.0.1:{fuzz_stack.port + APIS.index(api)}"
    headers = {"X-Auth-Token": admin["token"]}
    fixed = _fixed_path_parameters(api, admin)
    failures: dict[str, str] = {}
    session = requests.Session()
    for op in _operations(api):
        op_id = op.definition.raw.get("operationId", op.label)
        if op_id in EXCLUDED:
            continue
        path_params = {k: v for k, v in fixed.items() if f"{{{k}}}" in op.path} or None
        declared = {p.get("name") for p in op.definition.raw.get("parameters", [])}
        versions = {k: v for k, v in MICROVERSION.get(api, {}).items() if k in declared} or None
        strategy = st.one_of(
            op.as_strategy(GenerationMode.POSITIVE, path_parameters=path_params, headers=versions),
            op.as_strategy(GenerationMode.NEGATIVE, path_parameters=path_params),
        )

        @seed(SEED)
        @settings(
            max_examples=2 * MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            # (before the token goes in: changing a case re-judges its mode)
            positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
            case.headers = {**(case.headers or {}), **headers}  # never a generated token
            resp = case.call(base_url=base_url, session=session, timeout=60)
            case.validate_response(resp, checks=CHECKS if positive else NEGATIVE_CHECKS)

        try:
            run()
        except (
            Exception,
            BaseExceptionGroup,
        ) as exc:  # one finding per operation, then the next operation
            failures[op_id] = f"{type(exc).__name__}: {exc}"
    session.close()
    unexpected = {k: v for k, v in failures.items() if k not in KNOWN_FAILURES}
    assert not unexpected, "\n\n".join(f"== {k}\n{v}" for k, v in unexpected.items())
    fixed_now = KNOWN_FAILURES & {op.definition.raw.get("operationId") for op in _operations(api)}
    assert not (fixed_now - failures.keys()), f"no longer failing: {fixed_now - failures.keys()}"
