"""Which interactions a component performs for a trigger (the basis of generated handlers)."""

from __future__ import annotations

from generator.pipeline.segments import linearize, segments, shape

STEPS = [
    {"number": 1, "title": "a", "from": "user", "to": "cli", "via": "user"},
    {
        "number": 2,
        "title": "b",
        "from": "cli",
        "to": "api",
        "via": "http",
        "operation": "create",
        "then": [{"from": "api", "to": "db", "via": "sql", "tables": ["t"]}],
    },
    {"number": 3, "title": "c", "from": "api", "to": "worker", "via": "amqp-cast", "message": "go"},
    {"number": 4, "title": "d", "from": "worker", "to": "api", "via": "http", "operation": "show"},
    {"number": 5, "title": "e", "from": "api", "to": "db", "via": "sql", "tables": ["t"]},
    {"number": 6, "title": "f", "from": "worker", "to": "hv", "via": "native", "call": "spawn"},
]


def test_labels_follow_steps_and_their_follow_ons() -> None:
    assert [i.label for i in linearize(STEPS)] == ["1", "2", "2.1", "3", "4", "5", "6"]


def test_a_segment_runs_until_the_component_is_triggered_again() -> None:
    found = {(s.component, s.trigger): s for s in segments("seq", STEPS)}
    assert [i.label for i in found[("cli", "seq")].items] == ["1", "2"]
    # api: triggered at 2, does 2.1 and 3, then is triggered again at 4 (then does 5)
    assert [i.label for i in found[("api", "create")].items] == ["2.1", "3"]
    assert [i.label for i in found[("api", "show")].items] == ["5"]
    # worker: triggered at 3, carries on through its own later steps
    assert [i.label for i in found[("worker", "go")].items] == ["4", "6"]
    assert found[("worker", "go")].source == "api"


def test_shape_ignores_labels_but_not_what_is_done() -> None:
    by = {(s.component, s.trigger): s for s in segments("seq", STEPS)}
    assert shape(by[("api", "show")]) == (("db", "sql", None, None),)
