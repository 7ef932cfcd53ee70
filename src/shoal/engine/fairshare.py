"""Fair-share scheduling: which job of a fair-share queue runs next.

A queue with a fair-share scheduling policy serves its shares (jobs'
`shareIdentifier`s) by usage, as AWS Batch does: each share's usage is the
vCPU-time its jobs ran, decayed exponentially with the policy's
`shareDecaySeconds` (0: AWS's default window, about 600 s) and multiplied by
its `weightFactor` (lower = a larger slice: a share weighted 0.25 gets four
times the capacity of one weighted 1). The share with the least weighted
usage is served next; within a share, the higher `schedulingPriority` runs
first, then the older job. `computeReservation` r keeps (r/100)^k of the
queue's vCPUs free for shares that are not active yet, k being the number of
active shares.

Usage is kept in memory by the engine that dispatches: a restarted engine
starts every share afresh, as after a quiet spell longer than the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shoal.domain.container import resources_of
from shoal.domain.records import Job, Json

DEFAULT_DECAY_SECONDS = 600


@dataclass(frozen=True, slots=True)
class SharePolicy:
    decay_ms: int
    reservation: int  # computeReservation, percent
    exact: dict[str, float] = field(default_factory=dict)
    prefixes: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, fairshare: Json | None) -> SharePolicy:
        fairshare = fairshare or {}
        decay = int(fairshare.get("shareDecaySeconds") or DEFAULT_DECAY_SECONDS) * 1000
        exact: dict[str, float] = {}
        prefixes: list[tuple[str, float]] = []
        for entry in fairshare.get("shareDistribution") or []:
            ident, weight = entry["shareIdentifier"], float(entry.get("weightFactor", 1.0))
            if ident.endswith("*"):
                prefixes.append((ident[:-1], weight))
            else:
                exact[ident] = weight
        # The longest prefix is the most specific.
        prefixes.sort(key=lambda p: -len(p[0]))
        return cls(decay, int(fairshare.get("computeReservation") or 0), exact, tuple(prefixes))

    def weight(self, share: str) -> float:
        if share in self.exact:
            return self.exact[share]
        for prefix, weight in self.prefixes:
            if share.startswith(prefix):
                return weight
        return 1.0

    def reserved_fraction(self, active_shares: int) -> float:
        """The part of the queue's vCPUs kept for shares not active yet."""
        if self.reservation <= 0 or active_shares <= 0:
            return 0.0
        return float((self.reservation / 100) ** active_shares)


class ShareUsage:
    """Decayed vCPU-milliseconds per (queue, share), with what runs now."""

    def __init__(self) -> None:
        self._value: dict[tuple[str, str], tuple[float, int]] = {}  # (usage, as of ms)
        self._running: dict[tuple[str, str], float] = {}  # vCPUs running now
        self._typical: dict[tuple[str, str], float] = {}  # recent run length, ms

    def _advance(self, key: tuple[str, str], now: int, decay_ms: int) -> float:
        value, at = self._value.get(key, (0.0, now))
        running = self._running.get(key, 0.0)
        dt = max(0, now - at)
        if dt:
            # Exact for a constant running load over dt: the integral of
            # running * e^(-(now - t)/decay) dt, plus the old value decayed.
            keep = math.exp(-dt / decay_ms)
            value = value * keep + running * decay_ms * (1 - keep)
        self._value[key] = (value, now)
        return value

    def usage(self, key: tuple[str, str], now: int, decay_ms: int) -> float:
        return self._advance(key, now, decay_ms)

    def change(self, key: tuple[str, str], vcpus: float, now: int, decay_ms: int) -> None:
        """`vcpus` more (or, negative, fewer) run for the share from `now`."""
        self._advance(key, now, decay_ms)
        self._running[key] = max(0.0, self._running.get(key, 0.0) + vcpus)

    def finished(self, key: tuple[str, str], run_ms: int) -> None:
        """A job of the share ran `run_ms`: its typical run length moves."""
        typical = self._typical.get(key)
        self._typical[key] = run_ms if typical is None else 0.8 * typical + 0.2 * run_ms

    def typical_run_ms(self, key: tuple[str, str]) -> float:
        return self._typical.get(key, 0.0)

    def running_share(self, key: tuple[str, str]) -> float:
        return self._running.get(key, 0.0)

    def running(self, queue: str) -> float:
        return sum(v for (q, _), v in self._running.items() if q == queue)


def priority_order(jobs: list[Job]) -> list[Job]:
    """A share's jobs in the order they run: higher schedulingPriority first,
    then in the order given (the queue's, oldest first)."""
    ranked = sorted(
        enumerate(jobs), key=lambda ij: (-int(ij[1].spec.get("schedulingPriority") or 0), ij[0])
    )
    return [job for _, job in ranked]


def dispatch_order(
    heads: dict[str, list[Job]],
    queue: str,
    policy: SharePolicy,
    usage: ShareUsage,
    now: int,
    limit: int,
) -> list[Job]:
    """The order the queue's waiting jobs would start in if capacity freed
    for `limit` of them now (each start counted as the engine counts it)."""
    heads = {share: list(jobs) for share, jobs in heads.items() if jobs}
    extra: dict[str, float] = {}
    order: list[Job] = []
    while heads and len(order) < limit:
        share = next_share(heads, queue, policy, usage, now, extra)
        job = heads[share].pop(0)
        order.append(job)
        vcpus = resources_of(job.spec.get("container") or {}).vcpus
        extra[share] = extra.get(share, 0.0) + (vcpus or 1.0)
        if not heads[share]:
            del heads[share]
    return order


def next_share(
    heads: dict[str, list[Job]],
    queue: str,
    policy: SharePolicy,
    usage: ShareUsage,
    now: int,
    extra_running: dict[str, float] | None = None,
) -> str:
    """The share to serve next: the least weighted usage, counting what runs
    now as half done already.

    Usage alone lags: a job just started has added nothing yet, so choices
    made before its time accrues favour its share again, the more so the
    longer its jobs run against the decay window. A running job is on
    average half way through a run as long as its share's recent runs: that
    much is counted now, which keeps the long-run split at the weights'."""

    def weighted(share: str) -> tuple[float, float, str]:
        key = (queue, share)
        used = usage.usage(key, now, policy.decay_ms)
        running = usage.running_share(key) + (extra_running or {}).get(share, 0.0)
        projected = used + running * usage.typical_run_ms(key) / 2
        # Between equals (nothing has run long enough to count yet), the
        # share with the least running goes first.
        return projected * policy.weight(share), running * policy.weight(share), share

    return min(heads, key=weighted)
