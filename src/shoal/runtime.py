"""The composition root: settings in, a running application out."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.api.app import ShoalApp
from shoal.config import Settings
from shoal.domain.clock import SystemClock
from shoal.service.context import Context
from shoal.store.sqlite import SqliteStore


@dataclass(frozen=True, slots=True)
class Runtime:
    ctx: Context
    app: ShoalApp


def build(settings: Settings) -> Runtime:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(settings.data_dir / "shoal.db", synchronous=settings.sqlite_synchronous)
    ctx = Context(store=store, clock=SystemClock(), settings=settings)
    return Runtime(ctx=ctx, app=ShoalApp(ctx, on_shutdown=store.close))
