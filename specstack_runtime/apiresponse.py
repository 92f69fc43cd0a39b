"""What a generated typed client answers: the HTTP response and its body as the
operation's success model."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)


class ApiResponse(Generic[T]):
    """An operation's answer: the HTTP response, and its body as the operation's success
    model (`parsed`, None for another status or an empty body), as openapi-python-client's
    `Response[T]`."""

    def __init__(self, response: httpx.Response, model: type[T] | None, success: int) -> None:
        self.response = response
        self.model = model
        self.success = success

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    @property
    def content(self) -> bytes:
        return self.response.content

    def json(self) -> Any:
        return self.response.json()

    @cached_property
    def parsed(self) -> T | None:
        """The body as the success model; a body that does not fit it raises pydantic's
        ValidationError (the service broke its own document)."""
        if self.model is None or self.status_code != self.success or not self.response.content:
            return None
        return self.model.model_validate_json(self.response.content)
