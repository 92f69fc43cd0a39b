"""A resource's own named errors (`errors:` beyond the engine's kinds): a hook raises one by
name and the caller gets the spec's status, type and words; a named error must state its
status, so a misspelt standard one is a spec error, not a silent 400."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from generator.pipeline.validate import load_and_validate
from tests.runtime.test_resource_engine import placement_info

MARKER = '      not_found: "No resource provider with uuid {id} found."\n'


def _with(errors: str) -> Callable[[Path], None]:
    def edit(spec: Path) -> None:
        path = spec / "resources" / "placement.yaml"
        text = path.read_text()
        assert MARKER in text
        path.write_text(text.replace(MARKER, MARKER + errors))

    return edit


def test_a_named_error_answers_the_spec_status_kind_and_message(tmp_path: Path) -> None:
    named = (
        "      over_capacity:\n"
        "        status: 409\n"
        "        kind: InventoryInUse\n"
        '        message: "Inventory of {rc} on {id} is in use: {used} allocated."\n'
    )
    info = placement_info(tmp_path, _with(named))
    res = info.resources.resource("resource_provider")
    err = res.fail("over_capacity", id="cn-1", rc="VCPU", used=3)
    assert (err.status, err.kind) == (409, "InventoryInUse")
    assert err.message == "Inventory of VCPU on cn-1 is in use: 3 allocated."
    # the engine's own kinds keep their meaning beside it
    assert res.fail("not_found", id="x").message == "No resource provider with uuid x found."


def test_a_named_error_without_a_status_is_refused_by_validation(tmp_path: Path) -> None:
    placement_info(tmp_path / "ok", _with("      gone: {status: 410, message: Gone.}\n"))
    _, problems = load_and_validate(tmp_path / "ok" / "spec")
    assert not problems, problems
    placement_info(tmp_path / "bad", _with('      not_fund: "No such provider {id}."\n'))
    _, problems = load_and_validate(tmp_path / "bad" / "spec")
    assert any("placement.yaml" in str(p) and "not_fund" in str(p) for p in problems), problems
