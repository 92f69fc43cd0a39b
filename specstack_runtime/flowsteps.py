"""Behaviours for steps the spec gives no behaviour of their own: do the interaction as bound.

`with:` in the spec gives the arguments, with `{name.path}` placeholders read from
the flow's variables (plus `payload`, `body` and `path` of the triggering call) and
`{expr: CEL}` values; `as:` names the variable the result is kept in. Six keys of
`with:` say how the interaction runs rather than what it is given (docs/resources.md,
"Flow steps"): `when` (CEL: skip the step when false), `require` (CEL checks: the step
fails with the message when one is false), `each` (CEL list: the interaction once per
`item`), `accept` (http: the statuses that are success; native: the error types that
mean already done), `until` (CEL over `reply`, `headers` and `item`: the interaction again,
after a growing pause, until it holds; StepFailed after the call timeout) and `keep`
(variable: CEL over `reply`, `headers` and `item`; keeping `token` makes it the token the
flow's later calls send).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from specstack_runtime.bindings import (
    CONTROL,
    bind,
    bound,
    call_scope,
    control,
    evaluate,
    evaluate_in,
)
from specstack_runtime.context import Interaction
from specstack_runtime.errors import StepFailed
from specstack_runtime.grouped import values_in
from specstack_runtime.http import expect
from specstack_runtime.registry import behaviour


async def _each(
    ix: Interaction, once: Callable[[dict[str, Any], list[Any]], Awaitable[tuple[Any, Any]]]
) -> None:
    """Run `once(args, accept)` as the step's `when`, `each` and `keep` say."""
    rules = control(ix.bindings)
    args = {k: v for k, v in ix.bindings.items() if k not in CONTROL}
    items: Any = [None]
    if rules.keys() & {"when", "require", "each"}:
        # the flow's variables bound once for the step's `when`, `require` and `each`
        given = [
            *([rules["when"]] if "when" in rules else []),
            *(r["expr"] for r in rules.get("require") or ()),
            *([rules["each"]] if "each" in rules else []),
        ]
        before = bound(call_scope(ix.call), given)
        # all in one evaluation, read in turn: `when`, each `require`, `each` (one failing:
        # each evaluated as it is read, an earlier one deciding first)
        got = values_in(tuple([str(t) for t in given]), before)
        found = iter(got) if got is not None else (evaluate_in(t, before) for t in given)
        if "when" in rules and not next(found):
            return
        for rule in rules.get("require") or ():
            if not next(found):
                raise StepFailed(str(rule["message"]), code=int(rule.get("status", 400)))
        if "each" in rules:
            items = next(found)
    for item in items:
        scope = {**call_scope(ix.call), "item": item} if "each" in rules else call_scope(ix.call)
        result, headers = await once(bind(args, scope), list(rules.get("accept") or []))
        pause, waited = 0.05, 0.0
        while "until" in rules and not evaluate(
            rules["until"], call_scope(ix.call), item=item, reply=result, headers=headers
        ):
            if waited > ix.rt.config.call_timeout_s:
                raise StepFailed(
                    f"{ix.label or ix.name}: not so after {waited:.0f} s: {rules['until']}"
                )
            await asyncio.sleep(pause)
            waited, pause = waited + pause, min(pause * 2, 1.0)
            result, headers = await once(bind(args, scope), list(rules.get("accept") or []))
        if ix.save_as:
            ix.vars[ix.save_as] = result
        for name, text in (rules.get("keep") or {}).items():
            ix.vars[name] = evaluate(
                text, call_scope(ix.call), item=item, reply=result, headers=headers
            )
        if "token" in (rules.get("keep") or {}):
            ix.call.token = str(ix.vars["token"])  # a login: the flow's later calls send it


@behaviour("auth.validate", via=("http",))
async def validate_token(ix: Interaction) -> None:
    """Step 4 and its kind: the caller's token checked with the identity service."""
    ix.call.auth = await ix.invoke()


@behaviour("flow.user", via=("user",))
async def user(ix: Interaction) -> None:
    """A user's request: the actor acts; `require` says what the request must hold."""

    async def once(args: dict[str, Any], accept: list[Any]) -> tuple[Any, Any]:
        return await ix.invoke(), None

    await _each(ix, once)


@behaviour("flow.sql", via=("sql",))
async def sql(ix: Interaction) -> None:
    """A database interaction: runs the behaviour of the trigger it belongs to."""
    await ix.invoke()


@behaviour("flow.http", via=("http",))
async def http(ix: Interaction) -> None:
    """Call the operation with the step's `with:` arguments; keep the answer `as:` a variable."""

    async def once(args: dict[str, Any], accept: list[Any]) -> tuple[Any, Any]:
        if "token" not in args:  # the flow's token; without a user's, the service's own
            own = await ix.rt.service_token() if not ix.call.token and ix.rt.auth else None
            args["token"] = ix.call.token or own
        resp = await ix.invoke(**args)
        if resp.status_code not in accept if accept else resp.status_code >= 400:
            expect(resp)  # none expected: StepFailed with the service's own message
        try:
            result: Any = resp.json() if resp.content else None
        except ValueError:
            result = resp.content
        return result, {k.lower(): v for k, v in resp.headers.items()}

    await _each(ix, once)


async def _send(ix: Interaction) -> None:
    """Send the message with the step's `with:` payload; keep a call's reply `as:` a variable."""

    async def once(args: dict[str, Any], accept: list[Any]) -> tuple[Any, Any]:
        payload = args.get("payload", {k: v for k, v in args.items() if k != "host"})
        return await ix.invoke(payload, host=args.get("host")), None

    await _each(ix, once)


behaviour("flow.amqp-cast", via=("amqp-cast",))(_send)
behaviour("flow.amqp-call", via=("amqp-call",))(_send)


@behaviour("flow.native", via=("native",))
async def native(ix: Interaction) -> None:
    """Call the driver method with the step's `with:` arguments; keep its result `as:`."""

    async def once(args: dict[str, Any], accept: list[Any]) -> tuple[Any, Any]:
        try:
            return await ix.invoke(**args), None
        except Exception as exc:
            if type(exc).__name__ not in accept:
                raise
            return None, None  # an error `accept` names: what the call was to do is done

    await _each(ix, once)
