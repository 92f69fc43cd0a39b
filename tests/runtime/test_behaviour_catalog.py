"""The behaviour library's declarations, as validation reads them, are the code's."""

from __future__ import annotations

from pathlib import Path

from specstack_runtime import registry

ROOT = Path(__file__).resolve().parents[2]


def test_the_recorded_catalog_is_the_code() -> None:
    recorded = (ROOT / "specstack_runtime" / registry.CATALOG).read_text("utf-8")
    assert recorded == registry.catalog_text(), (
        "specstack_runtime/behaviours/catalog.json is stale: "
        "run python -m specstack_runtime.registry --write"
    )


def test_docs_list_every_behaviour() -> None:
    doc = (ROOT / "docs" / "behaviours.md").read_text("utf-8")
    assert registry.doc_table() in doc, "docs/behaviours.md's table is stale: run --write"
    for d in registry.declarations():
        assert f"| `{d.name}` | {d.kind} |" in doc


def test_kinds_follow_the_signature() -> None:
    catalog = registry.read_catalog()
    assert catalog["compute.spawn"]["kind"] == "step"
    assert catalog["compute.report_resources"]["kind"] == "startup"
    assert catalog["compute.end_build"]["kind"] == "error"
    assert catalog["conductor.instance_get"]["kind"] == "message"
    assert catalog["identity.issue_token"]["kind"] == "operation"
    assert catalog["identity.application_credential_roles"]["kind"] == "hook"
    assert catalog["flow.http"]["via"] == ["http"]
    assert catalog["image.store_data"]["needs"] == ["object-store"]


def test_a_step_behaviour_as_start_up_is_refused_before_the_stack_starts() -> None:
    # An IR that slipped past `validate` (written by hand, or stale) must not reach
    # run_startup, which would call flow.http with a ServiceRuntime (AttributeError).
    import types

    import pytest

    from specstack_runtime.embedded import EmbeddedStack, StackError

    info = types.SimpleNamespace(
        ir={"handlers": []},
        components={"keystone": {"name": "keystone", "startup": [{"behaviour": "flow.http"}]}},
    )
    stack = types.SimpleNamespace(info=info)
    with pytest.raises(StackError, match=r"flow\.http \(a step behaviour\) as keystone's start-up"):
        EmbeddedStack.check_behaviours(stack)  # type: ignore[arg-type]
