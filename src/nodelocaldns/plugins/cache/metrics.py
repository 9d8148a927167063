"""Cache counters (plain ints on the hot path) and the coredns_cache_* families at scrape time.

Hits the listener's fast path served never reach the handler; they are counted by the listener in
one packed int per label set (metrics/dnsstats.py) and added here.
"""

from __future__ import annotations

from typing import Any

from nodelocaldns.core.plugin import Host
from nodelocaldns.metrics.families import counter, gauge


class CacheCounters:
    """One server label's counters. ``hits`` is indexed by entry kind (SUCCESS, DENIAL)."""

    __slots__ = ("requests", "hits", "misses", "prefetch", "drops", "served_stale", "coalesced")

    def __init__(self) -> None:
        self.requests = 0
        self.hits = [0, 0]
        self.misses = 0
        self.prefetch = 0
        self.drops = 0
        self.served_stale = 0
        self.coalesced = 0  # misses answered from the same question's exchange in flight


class CacheStats:
    __slots__ = ("by_server",)

    def __init__(self) -> None:
        self.by_server: dict[str, CacheCounters] = {}

    def for_server(self, server: str) -> CacheCounters:
        c = self.by_server.get(server)
        if c is None:
            c = self.by_server[server] = CacheCounters()
        return c


def collect(host: Host) -> list[Any]:
    entries = gauge("coredns_cache_entries")
    creq = counter("coredns_cache_requests_total")
    hits = counter("coredns_cache_hits_total")
    misses = counter("coredns_cache_misses_total")
    prefetch = counter("coredns_cache_prefetch_total")
    drops = counter("coredns_cache_drops_total")
    stale = counter("coredns_cache_served_stale_total")
    evict = counter("coredns_cache_evictions_total")
    coalesced = counter("nodelocaldns_cache_coalesced_total")
    for lst in host.dns_listeners():
        server = lst.server
        fast = lst.stats.fast_hits()
        native_stale = lst.stats.stale_served()  # counted as the handler counts its own: request + stale
        seen: set[int] = set()
        for block in lst.blocks().values():
            if id(block) in seen:
                continue
            seen.add(id(block))
            for rt in block.runtimes:
                cache = getattr(rt, "cache", None)
                if rt.name != "cache" or cache is None:
                    continue
                zones = cache.zone_label
                s, d = cache.entries()
                es, ed = cache.evictions()
                c = cache.counters.by_server.get(server) or CacheCounters()
                fs: float = sum(fast.get((z, 0), 0) for z in block.zones)
                fd: float = sum(fast.get((z, 1), 0) for z in block.zones)
                ns: float = sum(native_stale.get(z, 0) for z in block.zones)
                entries.add_metric([server, "success", zones, ""], s)
                entries.add_metric([server, "denial", zones, ""], d)
                creq.add_metric([server, zones, ""], c.requests + fs + fd + ns)
                hits.add_metric([server, "success", zones, ""], c.hits[0] + fs)
                hits.add_metric([server, "denial", zones, ""], c.hits[1] + fd)
                misses.add_metric([server, zones, ""], c.misses)
                prefetch.add_metric([server, zones, ""], c.prefetch)
                drops.add_metric([server, zones, ""], c.drops)
                stale.add_metric([server, zones, ""], c.served_stale + ns)
                evict.add_metric([server, "success", zones, ""], es)
                evict.add_metric([server, "denial", zones, ""], ed)
                coalesced.add_metric([server, zones], c.coalesced)
    return [entries, creq, hits, misses, prefetch, drops, stale, evict, coalesced]
