"""Finished jobs are kept for a while (AWS: at least 7 days), then purged.

A purge deletes a few hundred jobs per transaction and yields between
transactions, and runs a few times per retention period (at most once a
minute): however many jobs expire at once, requests are never held up.
"""

from __future__ import annotations

import asyncio
import logging

from shoal.service.context import Context

log = logging.getLogger("shoal.retention")

_BATCH = 500


def purge_once(ctx: Context, retention_ms: int) -> int:
    """Delete one batch of expired jobs; how many went."""
    cutoff = ctx.clock.now_ms() - retention_ms
    with ctx.store.transaction() as tx:
        return tx.purge_jobs(cutoff, _BATCH)


async def purge_forever(ctx: Context, retention_seconds: float) -> None:
    interval = min(60.0, max(retention_seconds / 4, 0.05))
    while True:
        await asyncio.sleep(interval)
        try:
            gone = 0
            while (n := purge_once(ctx, int(retention_seconds * 1000))) > 0:
                gone += n
                await asyncio.sleep(0)  # requests first
            if gone:
                log.info("purged %d jobs finished more than %.0f s ago", gone, retention_seconds)
        except Exception:
            log.exception("purging finished jobs failed; trying again later")
