"""The domain's exception tree. The API maps each class to one wire error."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a caller can cause; never a server fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(DomainError):
    """The request breaks a rule of the API (shape, limit, pattern)."""


class NotFound(DomainError):
    """A referenced resource does not exist (or is not usable)."""


class Conflict(DomainError):
    """The resource's current state forbids the change (exists, in use, wrong state)."""


class LimitExceeded(DomainError):
    """Over a count AWS limits (targets per rule, ...)."""


class InvalidEventPattern(InvalidRequest):
    """An EventBridge event pattern that is not a JSON object."""
