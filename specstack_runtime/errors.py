"""Errors a behaviour raises; each API renders them in its own service's error format."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An HTTP error answer: status, message, and an optional machine-readable type."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.kind = kind or type(self).__name__
        self.headers = headers or {}
        self.detail = detail


class BadRequest(ApiError):
    status = 400
    title = "Bad Request"


class Unauthorized(ApiError):
    status = 401
    title = "Unauthorized"


class Forbidden(ApiError):
    status = 403
    title = "Forbidden"


class NotFound(ApiError):
    status = 404
    title = "Not Found"


class Conflict(ApiError):
    status = 409
    title = "Conflict"


class PreconditionFailed(ApiError):
    status = 412
    title = "Precondition Failed"


class PayloadTooLarge(ApiError):
    status = 413
    title = "Request Entity Too Large"


class RangeNotSatisfiable(ApiError):
    status = 416
    title = "Requested Range Not Satisfiable"


class UnprocessableEntity(ApiError):
    status = 422
    title = "Unprocessable Entity"


class ServiceUnavailable(ApiError):
    status = 503
    title = "Service Unavailable"


class StepFailed(Exception):
    """A flow step could not be carried out; the flow's error behaviour decides what follows."""

    def __init__(self, message: str, *, code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Dropped(Exception):
    """A message not to be acted on: a duplicate, or one the state has moved past (a build of
    an instance already built or being built). Acknowledged and logged; its flow's error
    behaviour does not run, since there is nothing of this delivery's to undo."""
