"""What the CEL runtime keeps of the Python functions' values and arguments is given back
(specstack_runtime/celcalls.py): a stack's memory does not grow with every evaluation."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable

from specstack_runtime import celcalls
from specstack_runtime.expr import compile_expr

N = 2000


def kept_per_call(evaluate: Callable[[int], object], calls: int = N) -> float:
    """Objects still allocated per call of `evaluate(i)` (i = 0, 1, ...), counting only what
    was allocated under this function: threads other tests left behind in this process
    allocate meanwhile (a CI run counted 228 such objects)."""
    tracemalloc.start(64)  # frames enough to reach this file's
    try:
        gc.collect()  # only what is kept counts, not cycles the collector has yet to free
        before = tracemalloc.take_snapshot()
        for i in range(calls):
            evaluate(i)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    own = [tracemalloc.Filter(True, __file__, all_frames=True)]
    diff = after.filter_traces(own).compare_to(before.filter_traces(own), "filename")
    return sum(s.count_diff for s in diff) / calls


def _kept_per_evaluation(text: str) -> float:
    """`kept_per_call` of evaluating `text` with new variables each time."""
    expr = compile_expr(text)
    expr.evaluate(doc={"x": 0, "y": "warm"})
    return kept_per_call(lambda i: expr.evaluate(doc={"x": i + 1000, "y": f"value-{i}"}))


def test_a_functions_value_and_arguments_are_not_kept() -> None:
    # without celcalls: 1.07 objects (the id) and 12 (two argument maps and their values,
    # the merged map) kept per evaluation; with it 0.02-0.1 (what the runtime itself keeps
    # varies: 0.1 in a CI run) and 3 (the arguments' tuple and emptied maps)
    assert _kept_per_evaluation("uuid4()") < 0.5
    assert _kept_per_evaluation("merge({'a': doc.x, 'c': [doc.y]}, {'b': doc.y})") < 6
    # the value is whole: what the function returned, converted by the runtime
    merged = compile_expr("merge({'a': doc.x, 'c': [doc.y]}, {'b': doc.y})")
    assert merged.evaluate(doc={"x": 7, "y": "q"}) == {"a": 7, "c": ["q"], "b": "q"}
    assert celcalls.probe_result() is True  # cel-expr-python 0.1.3 keeps them: compensated


def test_the_nulls_of_an_emptied_argument_keep_their_references() -> None:
    """The runtime hands an argument's nulls without their references to None (as a
    result's); emptying the argument gives them back first, or None's count would fall by
    two per evaluation here until the interpreter aborted (Python before 3.12)."""
    expr = compile_expr("merge({'a': null, 'n': doc.x}, {'b': [null]})")
    before = sys.getrefcount(None)
    for i in range(N):
        assert expr.evaluate(doc={"x": i}) == {"a": None, "n": i, "b": [None]}
    assert sys.getrefcount(None) - before > -N // 2
