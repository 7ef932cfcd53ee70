"""What every use-case needs: the store, the clock, ARNs and settings."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.config import Settings
from shoal.domain.arns import Arns
from shoal.domain.clock import Clock
from shoal.store.base import Store


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    store: Store
    clock: Clock
    settings: Settings

    @property
    def arns(self) -> Arns:
        return Arns(region=self.settings.region, account=self.settings.account_id)

    def settles_at(self, now_ms: int) -> int:
        return now_ms + self.settings.settle_delay_ms
