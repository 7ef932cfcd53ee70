"""The one table that maps errors to AWS error responses."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.domain.errors import (
    Conflict,
    DomainError,
    InvalidEventPattern,
    LimitExceeded,
    NotFound,
)


@dataclass(frozen=True, slots=True)
class WireError(Exception):
    """An error response: HTTP status, AWS error code, message."""

    status: int
    code: str
    message: str


def to_wire(error: Exception, service: str = "batch") -> WireError:
    if isinstance(error, WireError):
        return error
    if isinstance(error, DomainError) and service == "logs":
        if isinstance(error, NotFound):
            return WireError(400, "ResourceNotFoundException", error.message)
        if isinstance(error, Conflict):
            return WireError(400, "ResourceAlreadyExistsException", error.message)
        return WireError(400, "InvalidParameterException", error.message)
    if isinstance(error, DomainError) and service == "events":
        return WireError(400, _events_code(error), error.message)
    if isinstance(error, DomainError):
        # Batch models exactly two errors; every caller mistake is a
        # ClientException (HTTP 400), which SDKs never retry.
        return WireError(400, "ClientException", error.message)
    code = {"logs": "ServiceUnavailableException", "events": "InternalException"}.get(
        service, "ServerException"
    )
    return WireError(500, code, "Internal server error; see the shoal server log.")


def _events_code(error: DomainError) -> str:
    # EventBridge's own codes; a malformed request is a ValidationException
    # (not in the service model, but what AWS answers and botocore reads).
    if isinstance(error, NotFound):
        return "ResourceNotFoundException"
    if isinstance(error, InvalidEventPattern):
        return "InvalidEventPatternException"
    if isinstance(error, LimitExceeded):
        return "LimitExceededException"
    return "ValidationException"
