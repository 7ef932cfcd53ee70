"""What every use-case needs: the store, the clock, ARNs, settings, and a way
to tell the engine that something changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from shoal.config import Settings
from shoal.domain.arns import Arns
from shoal.domain.clock import Clock
from shoal.store.base import Store

Callable0 = Callable[[], None]
Callable2 = Callable[[str, str], None]


class Notifier:
    """Wake-ups from use-cases to the engine, after their transaction committed.

    Without an engine attached (a pure control plane, or tests of the service
    layer) the calls do nothing; the engine finds the work on its next cycle.
    """

    def __init__(self) -> None:
        self.on_wake: list[Callable0] = []
        self.on_submit: list[Callable0] = []
        self.on_terminate: list[Callable2] = []
        # The engine's: a fair-share queue's waiting jobs in dispatch order.
        self.on_front: list[Callable[[str, int], list[str] | None]] = []
        # The engine's: end running attempts as a Spot reclaim does.
        self.on_interrupt: list[Callable[[str | None, str | None], list[str]]] = []

    def wake(self) -> None:
        """Something that placement depends on changed (capacity, queues, a job's state)."""
        for fn in self.on_wake:
            fn()

    def submitted(self) -> None:
        """New jobs were stored; nothing else changed."""
        for fn in self.on_submit:
            fn()

    def interrupt(self, job_id: str | None, ce: str | None) -> list[str] | None:
        """The jobs interrupted; None when this process runs no engine."""
        if not self.on_interrupt:
            return None
        return [job for fn in self.on_interrupt for job in fn(job_id, ce)]

    def front(self, queue: str, limit: int) -> list[str] | None:
        """The engine's dispatch order for a fair-share queue, if this
        process runs the engine (None: the store's FIFO order is it)."""
        for fn in self.on_front:
            found = fn(queue, limit)
            if found is not None:
                return found
        return None

    def terminate(self, job_id: str, reason: str) -> None:
        for fn in self.on_terminate:
            fn(job_id, reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    store: Store
    clock: Clock
    settings: Settings
    notifier: Notifier = field(default_factory=Notifier)

    @property
    def arns(self) -> Arns:
        return Arns(region=self.settings.region, account=self.settings.account_id)

    def settles_at(self, now_ms: int) -> int:
        return now_ms + self.settings.settle_delay_ms
