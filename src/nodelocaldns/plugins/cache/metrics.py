"""Cache counters: plain ints on the hot path, read by the prometheus plugin at scrape time."""

from __future__ import annotations

# Index of each counter in a per-server list.
REQUESTS, HIT_SUCCESS, HIT_DENIAL, MISSES, PREFETCH, DROPS, SERVED_STALE = range(7)


class CacheCounters:
    __slots__ = ("by_server",)

    def __init__(self) -> None:
        self.by_server: dict[str, list[int]] = {}

    def for_server(self, server: str) -> list[int]:
        c = self.by_server.get(server)
        if c is None:
            c = self.by_server[server] = [0] * 7
        return c
