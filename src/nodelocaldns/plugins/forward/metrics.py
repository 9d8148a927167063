"""Forward/proxy counters, plain ints updated per upstream exchange and expanded at scrape time."""

from __future__ import annotations

import bisect

from nodelocaldns.metrics.catalog import TIME_BUCKETS


class ForwardCounters:
    """Process-wide, like CoreDNS's proxy metrics (labels: to, rcode, proto)."""

    def __init__(self) -> None:
        # (to, rcode name) -> [bucket counts..., sum]
        self.durations: dict[tuple[str, str], list[float]] = {}
        self.healthcheck_failures: dict[str, int] = {}
        self.conn_hits: dict[tuple[str, str], int] = {}
        self.conn_misses: dict[tuple[str, str], int] = {}
        self.healthcheck_broken = 0
        self.max_concurrent_rejects = 0

    def observe(self, to: str, rcode: str, seconds: float) -> None:
        h = self.durations.get((to, rcode))
        if h is None:
            h = self.durations[(to, rcode)] = [0.0] * (len(TIME_BUCKETS) + 2)
        h[bisect.bisect_left(TIME_BUCKETS, seconds)] += 1
        h[-1] += seconds

    def conn_cache(self, to: str, proto: str, hit: bool) -> None:
        d = self.conn_hits if hit else self.conn_misses
        d[(to, proto)] = d.get((to, proto), 0) + 1


COUNTERS = ForwardCounters()
