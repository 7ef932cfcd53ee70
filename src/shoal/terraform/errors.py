"""The errors `shoal apply` reports, and where in the files they point."""

from __future__ import annotations

from dataclasses import dataclass


class ApplyError(Exception):
    """A problem to show the user as one message (exit status 1, no traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EvalError(ApplyError):
    """An expression cannot be evaluated. Raised without a location: whoever
    evaluates knows the block and adds it (see `Where.error`)."""


class UnknownReference(EvalError):
    """A reference to a variable, local, module or resource the files do not define."""

    def __init__(self, path: str) -> None:
        super().__init__(f"unknown reference {path}")
        self.path = path


@dataclass(frozen=True, slots=True)
class Where:
    """A place in the configuration: file, line and the block's address."""

    file: str
    line: int
    address: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.address}"

    def at(self, line: int) -> Where:
        return Where(self.file, line, self.address)

    def error(self, message: str) -> ApplyError:
        return ApplyError(f"{self}: {message}")
