"""Per-listener DNS request counters.

One dict increment per query: the key holds every label any ``coredns_dns_*`` family needs, and
the prometheus plugin folds the keys into families at scrape time. That keeps the hot path to one
tuple and one dict update instead of a dozen histogram observations.
"""

from __future__ import annotations

import bisect

from nodelocaldns.metrics.catalog import TIME_BUCKETS

# (zone, proto, qtype, do, request size, response size, rcode, plugin, duration bucket)
StatKey = tuple[str, str, int, bool, int, int, int, str, int]


class ZoneAcc(list):  # type: ignore[type-arg]
    """[zone, udp duration sum, tcp duration sum] for one (listener, zone), plus its key bits."""

    __slots__ = ("bits",)
    bits: int

    @property
    def zone(self) -> str:
        return str(self[0])


# Fast-path hits are counted under one int: zone id | entry stat id | request size | tcp | do | edns.
ZONE_SHIFT = 48
STAT_SHIFT = 20
SIZE_SHIFT = 3


def duration_bucket(seconds: float) -> int:
    """Index of the first TIME_BUCKETS bound >= seconds (len(TIME_BUCKETS) means +Inf)."""
    if seconds <= TIME_BUCKETS[0]:
        return 0
    return bisect.bisect_left(TIME_BUCKETS, seconds)


class ServerStats:
    """Counters for one listener (``server`` label), shared by every block it serves."""

    __slots__ = ("server", "family", "counts", "duration_sum", "fast", "fast_tcp", "zones", "hit_kinds")

    def __init__(self, server: str, family: int) -> None:
        self.server = server
        self.family = family
        self.counts: dict[StatKey, int] = {}
        self.duration_sum: dict[str, float] = {}
        # packed key (see ZONE_SHIFT) -> count; UDP hits (written only by the UDP thread) and TCP hits
        self.fast: dict[int, int] = {}
        self.fast_tcp: dict[int, int] = {}
        self.zones: dict[str, ZoneAcc] = {}
        self.hit_kinds: dict[tuple[str, int], int] = {}  # slow-recorded fast hits: (zone, kind) -> n

    def zone_of(self, zone_id: int) -> str:
        return list(self.zones)[zone_id - 1]

    def zone_acc(self, zone: str) -> ZoneAcc:
        acc = self.zones.get(zone)
        if acc is None:
            acc = self.zones[zone] = ZoneAcc([zone, 0.0, 0.0])
            acc.bits = len(self.zones) << ZONE_SHIFT
        return acc

    def record(self, key: StatKey, seconds: float) -> None:
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        zone = key[0]
        self.duration_sum[zone] = self.duration_sum.get(zone, 0.0) + seconds
