"""A consumer's `on_failure` steps (spec/components.yaml): what its handling undoes and records
when it fails, declared as interactions with `with:` bindings instead of written in Python.

Each step is an interaction of the component (`via` http, amqp-cast, amqp-call or native,
its `operation`, `message` or `call`, its callee `to`) carried out by the flow's own step
behaviours (behaviours/flowsteps.py): `when`, `each`, `accept` and `keep` as in a sequence.
The steps run in order, best effort: one that fails is logged and the next runs. Besides
the flow's variables they see `error` (`type`, `message`, `code`, `details`, `causes`: the
type names of the failure and its causes) and `config` (the stack's numeric and on/off
settings).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from specstack_runtime import registry
from specstack_runtime.context import Call, Interaction, Invoke
from specstack_runtime.messaging import send

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


def _invoke(call: Call, step: Mapping[str, Any]) -> Invoke:
    """The step's transport, as a generated handler binds it."""
    rt, via = call.rt, str(step["via"])
    if via == "native":
        return getattr(rt.driver, str(step["call"]))  # type: ignore[no-any-return]
    if via.startswith("amqp"):
        message = str(step["message"])

        async def post(payload: dict[str, Any], host: str | None = None) -> Any:
            return await send(call, message, payload, host=host)

        return post
    api, operation = str(rt.info.components[str(step["to"])]["api"]), str(step["operation"])

    async def request(**kw: Any) -> Any:
        parts = {k: kw.pop(k, None) for k in ("body", "query", "headers", "token")}
        return await rt.clients.call(api, operation, kw, **parts)

    return request


async def run(call: Call, error: BaseException, steps: Sequence[Mapping[str, Any]]) -> None:
    """Carry out `steps` after `error` failed the handling of `call`; never raises."""
    call.vars.update(error=describe(error), config=_settings(call))
    for number, step in enumerate(steps, 1):
        what = step.get("operation") or step.get("message") or step.get("call")
        ix = Interaction(
            call=call,
            label=None,
            source=call.rt.component,
            target=str(step.get("to") or ""),
            via=str(step["via"]),
            name=str(what),
            invoke=_invoke(call, step),
            bindings=dict(step.get("with") or {}),
        )
        try:
            await registry.get(f"flow.{step['via']}")(ix)
        except Exception as exc:
            log.warning(
                "%s: on_failure step %d (%s %s) of %s failed: %s: %s",
                call.rt.component,
                number,
                step["via"],
                what,
                call.trigger,
                type(exc).__name__,
                exc,
            )
