"""The Executor interface.

An executor runs attempts; it never sees the store. The engine hands it a
`LaunchSpec`, persists the JSON handle it returns, and later asks it to wait
for, or stop, that attempt — possibly from a restarted server process that
only has the persisted handle.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Handle = dict[str, Any]

ESSENTIAL_EXITED = "Essential container in task exited"
FAILED_TO_START = "Task failed to start"
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchSpec:
    job_id: str
    attempt: int  # 1-based
    task_id: str  # 32 hex chars, as in ECS task ids and log stream names
    command: list[str]
    environment: dict[str, str]
    image: str | None = None
    vcpus: float = 1.0
    memory_mib: int | None = None
    gpus: int = 0
    user: str | None = None
    log_group: str = "/aws/batch/job"
    log_stream: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    # The task of an attempt of this executor's that holds the slot this one
    # is placed on: launch the moment that one ends (a `Follower` only).
    after: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Exit:
    """How an attempt ended. `exit_code` is None when the process's fate is unknown."""

    exit_code: int | None
    reason: str | None = None
    status_reason: str = ESSENTIAL_EXITED
    # When it ended (epoch ms), if the executor saw it: else when it is recorded.
    ended_at: int | None = None


class LaunchError(Exception):
    """The attempt could not be started; `reason` is AWS-style (`CannotPullContainerError: ...`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Follower(Protocol):
    """An executor that can queue a launch behind one of its running
    attempts, and start it the moment that attempt ends, without the round
    trip to the engine (see `LaunchSpec.after`)."""

    def can_follow(self, task: str) -> bool:
        """Whether a launch may come `after` this attempt of this executor's
        now (one it launched, not one reattached after a restart)."""
        ...

    def withdraw(self, task: str) -> None:
        """Call off a launch with `after` that is still waiting: its
        awaitable then raises LaunchWithdrawn (the attempt never runs). A
        launch that has begun goes on as usual."""
        ...


class LaunchWithdrawn(LaunchError):
    """A launch waiting for the attempt it came after was called off: the
    attempt never ran."""

    def __init__(self) -> None:
        super().__init__("CannotStartContainerError: the attempt was called off before it started")


class Executor(Protocol):
    name: str

    def launch(self, spec: LaunchSpec) -> Awaitable[Handle]:
        """Start the attempt; the awaitable gives a JSON-able handle that
        identifies it. (`async def` does; an executor may also begin at once,
        at the call, and return what finishes the launch.)

        The awaitable raises LaunchError when the attempt cannot start.
        Launching the same task id twice is an error: an attempt runs at most
        once."""
        ...

    async def wait(self, handle: Handle) -> Exit:
        """Wait until the attempt ends and return how it ended, streaming its
        output into the log store meanwhile. Works on a handle persisted by an
        earlier server process (reattach); returns at once if it already ended."""
        ...

    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        """SIGTERM the attempt, then SIGKILL it after `grace_seconds`. Idempotent."""
        ...

    def home(self) -> dict[str, str]:
        """Where this executor keeps its attempts (JSON), recorded with each
        attempt as it is placed: an engine that takes over from another finds
        them there, or knows they are out of its reach."""
        ...

    def recover(self, spec: LaunchSpec, home: dict[str, str] | None = None) -> Handle | None:
        """For an attempt recorded as STARTING when its engine died (`home`
        as recorded then; None for this executor's own): its handle if it did
        start, else None — and then it is guaranteed never to start."""
        ...

    def release(self, handle: Handle) -> None:
        """Forget a finished attempt once its exit is recorded (files, cgroups)."""
        ...
