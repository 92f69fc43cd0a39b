"""Base of the generated typed clients: the transport of http steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
from pydantic import BaseModel


def plain(body: Any) -> Any:
    """A request body as JSON-ready data: a model by its aliases, without unset fields."""
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return body


if TYPE_CHECKING:
    from specstack_runtime.flow import Flow
    from specstack_runtime.services import ServiceRuntime


class BoundClient:
    """A typed client bound to a flow (its token and step label travel along) or a runtime."""

    API: ClassVar[str] = ""

    def __init__(self, source: Flow | ServiceRuntime) -> None:
        from specstack_runtime.flow import Flow

        self._flow = source if isinstance(source, Flow) else None
        self._rt = source.rt if isinstance(source, Flow) else source

    async def _call(
        self,
        operation_id: str,
        path_params: Mapping[str, Any],
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        context = self._flow.context() if self._flow is not None else None
        if token is None and self._flow is not None:
            token = self._flow.call.token
        return await self._rt.clients.call(
            self.API,
            operation_id,
            path_params,
            body=plain(body),
            query=query,
            headers=headers,
            token=token,
            context=context,
        )
