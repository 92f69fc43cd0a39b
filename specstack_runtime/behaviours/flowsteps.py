"""Behaviours for steps the spec gives no behaviour of their own: do the interaction as bound.

`with:` in the spec gives the arguments, with `{name.path}` placeholders read from
the flow's variables (plus `payload`, `body` and `path` of the triggering call);
`as:` names the variable the result is kept in.
"""

from __future__ import annotations

from typing import Any

from specstack_runtime.bindings import bind, call_scope
from specstack_runtime.context import Interaction
from specstack_runtime.errors import StepFailed
from specstack_runtime.registry import behaviour


def _scope(ix: Interaction) -> dict[str, Any]:
    return call_scope(ix.call)


def _keep(ix: Interaction, result: Any) -> None:
    if ix.save_as:
        ix.vars[ix.save_as] = result


@behaviour("auth.validate", via=("http",))
async def validate_token(ix: Interaction) -> None:
    """Step 4 and its kind: the caller's token checked with the identity service."""
    ix.call.auth = await ix.invoke()


@behaviour("flow.user", via=("user",))
async def user(ix: Interaction) -> None:
    """A user's request: the actor acts (nothing more to do than carry it)."""
    await ix.invoke()


@behaviour("flow.sql", via=("sql",))
async def sql(ix: Interaction) -> None:
    """A database interaction: runs the behaviour of the trigger it belongs to."""
    await ix.invoke()


@behaviour("flow.http", via=("http",))
async def http(ix: Interaction) -> None:
    """Call the operation with the step's `with:` arguments; keep the answer `as:` a variable."""
    args = bind(ix.bindings, _scope(ix))
    resp = await ix.invoke(**args)
    if resp.status_code >= 400:
        raise StepFailed(
            f"{ix.name} answered {resp.status_code}: {resp.text[:200]}", code=resp.status_code
        )
    try:
        result: Any = resp.json() if resp.content else None
    except ValueError:
        result = resp.content
    _keep(ix, result)


async def _send(ix: Interaction) -> None:
    """Send the message with the step's `with:` payload; keep a call's reply `as:` a variable."""
    args = bind(ix.bindings, _scope(ix))
    payload = args.get("payload", {k: v for k, v in args.items() if k != "host"})
    reply = await ix.invoke(payload, host=args.get("host"))
    _keep(ix, reply)


behaviour("flow.amqp-cast", via=("amqp-cast",))(_send)
behaviour("flow.amqp-call", via=("amqp-call",))(_send)


@behaviour("flow.native", via=("native",))
async def native(ix: Interaction) -> None:
    """Call the driver method with the step's `with:` arguments; keep its result `as:`."""
    _keep(ix, await ix.invoke(**bind(ix.bindings, _scope(ix))))
