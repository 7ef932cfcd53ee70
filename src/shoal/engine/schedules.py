"""Fires EventBridge schedule rules when they are due.

Each rule stores its next fire time. Whichever engine sees it due submits
its targets' jobs (with a token per rule, target and time, so the same time
fired twice makes one job) and then moves the time on compare-and-set: of
several engines sharing a store, one advances it and the others find it
moved. A crash between the two only means the time is fired again, and the
token finds the job made the first time. So each scheduled time fires once,
across restarts and engines.

Times missed while no engine ran (more than `grace_ms` late) follow the
`missed` policy:
- `once` (the default): fire once, for the latest missed time, then go on
  (as cron's anacron and Kubernetes CronJobs do: one catch-up, not a flood);
- `all`: fire every missed time, oldest first;
- `skip`: fire none of them.
"""

from __future__ import annotations

import asyncio
import logging

from shoal.domain.records import EventRule
from shoal.domain.schedules import parse_schedule
from shoal.service import events
from shoal.service.context import Context

log = logging.getLogger("shoal.engine.schedules")

MISSED_POLICIES = ("once", "all", "skip")
_POLL_SECONDS = 5.0  # rules put through another process are seen this soon
_BATCH = 100  # due rules per pass
_MAX_CATCH_UP = 1_000_000  # fire times stepped over to find the latest missed one


class Scheduler:
    def __init__(self, ctx: Context, *, missed: str = "once", grace_ms: int = 60_000) -> None:
        if missed not in MISSED_POLICIES:
            raise ValueError(f"missed must be one of {', '.join(MISSED_POLICIES)}")
        self.ctx = ctx
        self.missed = missed
        self.grace_ms = grace_ms
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False
        self._running = False

    # -- the loop ---------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self.wake()

    def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def wake(self) -> None:
        """Look at the rules soon (one changed)."""
        if self._running and not self._soon:
            self._soon = True
            asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self._soon = False
        if not self._running:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = _POLL_SECONDS
        try:
            while self.run_due(self.ctx.clock.now_ms()) == _BATCH:
                pass
            with self.ctx.store.read() as tx:
                upcoming = tx.next_rule_fire()
            if upcoming is not None:
                delay = min(delay, max(0.0, (upcoming - self.ctx.clock.now_ms()) / 1000))
        except Exception:
            log.exception("firing scheduled rules failed; trying again in 1 s")
            delay = 1.0
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    # -- one pass (synchronous: tests drive it with a manual clock) -------------
    def run_due(self, now_ms: int) -> int:
        """Fire the rules due at `now_ms`; how many were looked at."""
        with self.ctx.store.read() as tx:
            due = tx.due_rules(now_ms, _BATCH)
        for rule in due:
            self._fire(rule, now_ms)
        return len(due)

    def _fire(self, rule: EventRule, now_ms: int) -> None:
        due = rule.next_fire_ms
        assert due is not None
        if not rule.schedule_expression:
            self._advance(rule, due, None)
            return
        schedule = parse_schedule(rule.schedule_expression)
        late = now_ms - due > self.grace_ms
        fire_at: int | None = due
        if late and self.missed == "skip":
            fire_at = None
        elif late and self.missed == "once":
            fire_at = self._latest_before(rule, due, now_ms)
        if fire_at is not None:
            jobs = events.fire(self.ctx, rule, fire_at)
            log.info("rule %s fired for %d: jobs %s", rule.name, fire_at, ", ".join(jobs) or "none")
        after = due if not late or self.missed == "all" else now_ms
        if fire_at is not None and fire_at > after:
            after = fire_at
        self._advance(rule, due, schedule.next_after(after, rule.anchor_ms))

    def _latest_before(self, rule: EventRule, due: int, now_ms: int) -> int:
        schedule = parse_schedule(rule.schedule_expression or "")
        latest = due
        for _ in range(_MAX_CATCH_UP):
            following = schedule.next_after(latest, rule.anchor_ms)
            if following is None or following > now_ms:
                break
            latest = following
        return latest

    def _advance(self, rule: EventRule, due: int, following: int | None) -> None:
        with self.ctx.store.transaction() as tx:
            if not tx.advance_rule(rule.name, due, following):
                log.debug("rule %s was fired or changed elsewhere", rule.name)
