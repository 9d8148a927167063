"""``coredns_health_request_*``: how long the health plugin's self-poll of ``/health`` takes.

Process-wide, as in CoreDNS (promauto families): every health runtime feeds the same counters, and
they survive reloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodelocaldns.core.plugin import Host
from nodelocaldns.metrics.catalog import SLIM_TIME_BUCKETS
from nodelocaldns.metrics.families import buckets, counter, histogram


@dataclass
class HealthStats:
    counts: dict[float, float] = field(default_factory=dict)  # upper bound -> observations
    total: float = 0.0
    failures: int = 0

    def observe(self, seconds: float) -> None:
        bound = next((b for b in SLIM_TIME_BUCKETS if seconds <= b), float("inf"))
        self.counts[bound] = self.counts.get(bound, 0) + 1
        self.total += seconds


STATS = HealthStats()


def collect(host: Host) -> list[Any]:
    dur = histogram("coredns_health_request_duration_seconds")
    dur.add_metric([], buckets(STATS.counts, SLIM_TIME_BUCKETS), STATS.total)
    fails = counter("coredns_health_request_failures_total")
    fails.add_metric([], STATS.failures)
    return [dur, fails]
