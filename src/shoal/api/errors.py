"""The one table that maps errors to AWS error responses."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.domain.errors import DomainError


@dataclass(frozen=True, slots=True)
class WireError(Exception):
    """An error response: HTTP status, AWS error code, message."""

    status: int
    code: str
    message: str


def to_wire(error: Exception) -> WireError:
    if isinstance(error, WireError):
        return error
    if isinstance(error, DomainError):
        # Batch models exactly two errors; every caller mistake is a
        # ClientException (HTTP 400), which SDKs never retry.
        return WireError(400, "ClientException", error.message)
    return WireError(500, "ServerException", "Internal server error; see the shoal server log.")
