"""A consumer's `on_failure` steps (spec/components.yaml): what its handling undoes and records
when it fails, declared as interactions with `with:` bindings instead of written in Python.

Each step is an interaction of the component (`via` http, amqp-cast, amqp-call or native,
its `operation`, `message` or `call`, its callee `to`) carried out by the flow's own step
behaviours (flowsteps.py): `when`, `each`, `accept` and `keep` as in a sequence.
The generator writes them as a handler of their own (`<trigger>_on_failure`), bound to
the same transports as the flow's steps (the generated clients, senders and the driver).
The steps run in order, best effort: one that fails is logged and the next runs. Besides
the flow's variables they see `error` (`type`, `message`, `code`, `details`, `causes`: the
type names of the failure and its causes) and `config` (the stack's numeric and on/off
settings).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from specstack_runtime import registry
from specstack_runtime.context import Call, Interaction, Invoke

if TYPE_CHECKING:
    from specstack_runtime.flow import Flow

log = logging.getLogger("specstack.onfailure")

#: How deep `error.causes` follows an exception's causes.
CAUSES = 10


def describe(error: BaseException) -> dict[str, Any]:
    """The failure as CEL sees it: its type, message, code (a 4xx or 5xx, else 500) and
    details (`Type: text`, as nova's instance faults keep them), and its causes' types."""
    code = getattr(error, "code", None)
    if not isinstance(code, int):
        code = getattr(error, "status", None)
    causes: list[str] = []
    seen: BaseException | None = error
    for _ in range(CAUSES):
        if seen is None:
            break
        causes += [c.__name__ for c in type(seen).__mro__ if issubclass(c, BaseException)]
        seen = seen.__cause__ or seen.__context__
    return {
        "type": type(error).__name__,
        "message": str(getattr(error, "message", None) or str(error) or type(error).__name__),
        "code": code if isinstance(code, int) and 400 <= code <= 599 else 500,
        "details": f"{type(error).__name__}: {error}",
        "causes": list(dict.fromkeys(causes)),
    }


def _settings(call: Call) -> dict[str, Any]:
    dump = call.rt.config.model_dump()
    return {k: v for k, v in dump.items() if isinstance(v, int | float | bool)}


async def run(flow: Flow, error: BaseException, steps: Callable[[Flow], Awaitable[None]]) -> None:
    """Carry out the generated on_failure `steps` after `error` failed the handling of
    `flow`'s call; never raises (each step is `step`)."""
    flow.call.vars.update(error=describe(error), config=_settings(flow.call))
    await steps(flow)


async def step(
    call: Call,
    number: int,
    target: str,
    via: str,
    name: str | None,
    invoke: Invoke,
    *,
    bindings: Mapping[str, Any] | None = None,
) -> None:
    """One on_failure step: the interaction through the transport generated code bound,
    by the flow's step behaviour of its `via`; a failure is logged and the next step runs."""
    ix = Interaction(
        call=call,
        label=None,
        source=call.rt.component,
        target=target,
        via=via,
        name=name,
        invoke=invoke,
        bindings=dict(bindings or {}),
    )
    try:
        await registry.get(f"flow.{via}")(ix)
    except Exception as exc:
        log.warning(
            "%s: on_failure step %d (%s %s) of %s failed: %s: %s",
            call.rt.component,
            number,
            via,
            name,
            call.trigger,
            type(exc).__name__,
            exc,
        )
