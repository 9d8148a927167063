"""Forward/proxy counters, plain ints updated per upstream exchange and expanded at scrape time."""

from __future__ import annotations

import bisect
from typing import Any

from nodelocaldns.core.plugin import Host
from nodelocaldns.metrics.catalog import TIME_BUCKETS
from nodelocaldns.metrics.families import buckets, counter, histogram, time_bound


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
        self.bad_replies: dict[str, int] = {}  # to -> replies that did not unpack (SERVFAIL, not cached)
        self.resource_errors = 0  # exchanges that failed for lack of fds/buffers/memory here

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


def collect(host: Host) -> list[Any]:
    """The coredns_proxy_* and coredns_forward_* families (process-wide, as in CoreDNS)."""
    c = COUNTERS
    pd = histogram("coredns_proxy_request_duration_seconds")
    for (to, rc), h in list(c.durations.items()):
        counts = {time_bound(i): h[i] for i in range(len(TIME_BUCKETS) + 1)}
        pd.add_metric(["forward", to, rc], buckets(counts, TIME_BUCKETS), h[-1])
    hf = counter("coredns_proxy_healthcheck_failures_total")
    for to, n in list(c.healthcheck_failures.items()):
        hf.add_metric(["forward", to], n)
    ch = counter("coredns_proxy_conn_cache_hits_total")
    for (to, proto), n in list(c.conn_hits.items()):
        ch.add_metric(["forward", to, proto], n)
    cm = counter("coredns_proxy_conn_cache_misses_total")
    for (to, proto), n in list(c.conn_misses.items()):
        cm.add_metric(["forward", to, proto], n)
    broken = counter("coredns_forward_healthcheck_broken_total")
    broken.add_metric([], c.healthcheck_broken)
    rejects = counter("coredns_forward_max_concurrent_rejects_total")
    rejects.add_metric([], c.max_concurrent_rejects)
    bad = counter("nodelocaldns_forward_bad_replies_total")
    for to, n in list(c.bad_replies.items()):
        bad.add_metric(["forward", to], n)
    exhausted = counter("nodelocaldns_forward_resource_errors_total")
    exhausted.add_metric([], c.resource_errors)
    return [pd, hf, ch, cm, broken, rejects, bad, exhausted]
