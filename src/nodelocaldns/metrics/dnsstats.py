"""Per-listener DNS request counters, and the packed key the cache fast path counts hits under.

One dict increment per query: the key holds every label any ``coredns_dns_*`` family needs, and
the prometheus plugin folds the keys into families at scrape time. That keeps the hot path to one
tuple and one dict update instead of a dozen histogram observations.

A fast-path hit is one int: zone id | stat id | request size | tcp | do | edns, where the stat id
interns what the reply's labels need (qtype, rcode, cache kind, reply size without OPT).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

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


# (qtype, rcode, kind, size without OPT) <-> small int, shared by every cache entry with those stats.
STAT_IDS: dict[tuple[int, int, int, int], int] = {}
STATS_BY_ID: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]
SBASE_BY_ID: list[int] = [0]  # sid << STAT_SHIFT, one shared int object per id (~80k entries hold them)


def stat_base(qtype: int, rcode: int, kind: int, size: int) -> int:
    """The packed stat id (``sid << STAT_SHIFT``) for a reply with these labels."""
    k = (qtype, rcode, kind, size)
    sid = STAT_IDS.get(k)
    if sid is None:
        sid = STAT_IDS[k] = len(STATS_BY_ID)
        STATS_BY_ID.append(k)
        SBASE_BY_ID.append(sid << STAT_SHIFT)
    return SBASE_BY_ID[sid]


def stats_of(sbase: int) -> tuple[int, int, int, int]:
    return STATS_BY_ID[sbase >> STAT_SHIFT]


def duration_bucket(seconds: float) -> int:
    """Index of the first TIME_BUCKETS bound >= seconds (len(TIME_BUCKETS) means +Inf)."""
    if seconds <= TIME_BUCKETS[0]:
        return 0
    return bisect.bisect_left(TIME_BUCKETS, seconds)


class ServerStats:
    """Counters for one listener (``server`` label), shared by every block it serves."""

    __slots__ = (
        "server",
        "family",
        "counts",
        "duration_sum",
        "fast",
        "fast_tcp",
        "zones",
        "hit_kinds",
        "native",
        "native_stale",
    )

    def __init__(self, server: str, family: int) -> None:
        self.server = server
        self.family = family
        self.counts: dict[StatKey, int] = {}
        self.duration_sum: dict[str, float] = {}
        # packed key (see ZONE_SHIFT) -> count; UDP hits (written only by the UDP thread) and the hits
        # counted in the event loop (TCP, and UDP read there from a peer's socket)
        self.fast: dict[int, int] = {}
        self.fast_tcp: dict[int, int] = {}
        self.zones: dict[str, ZoneAcc] = {}
        self.hit_kinds: dict[tuple[str, int], int] = {}  # slow-recorded fast hits: (zone, kind) -> n
        # The native UDP workers' hits, summed at scrape time: (packed key, hits, nanoseconds).
        self.native: Callable[[], list[tuple[int, int, int]]] | None = None
        # Their serve_stale answers, keyed alike: requests and responses, but no cache hits.
        self.native_stale: Callable[[], list[tuple[int, int, int]]] | None = None

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

    def decode_fast(self, k: int) -> tuple[str, str, int, int, int, bool, int, int]:
        """Unpack a fast-path counter key: zone, proto, qtype, rcode, kind, do, request and reply size."""
        zone = self.zone_of(k >> ZONE_SHIFT)
        qtype, rcode, kind, size = STATS_BY_ID[(k >> STAT_SHIFT) & ((1 << (ZONE_SHIFT - STAT_SHIFT)) - 1)]
        qlen = (k >> SIZE_SHIFT) & ((1 << (STAT_SHIFT - SIZE_SHIFT)) - 1)
        edns = bool(k & 1)
        proto = "tcp" if k & 4 else "udp"
        return zone, proto, qtype, rcode, kind, bool(k & 2), qlen, size + (11 if edns else 0)

    def _hit_items(self) -> list[tuple[int, int]]:
        nat = self.native() if self.native is not None else []
        return [*list(self.fast.items()), *list(self.fast_tcp.items()), *((k, n) for k, n, _ns in nat)]

    def _stale_items(self) -> list[tuple[int, int, int]]:
        return self.native_stale() if self.native_stale is not None else []

    def fast_items(self) -> list[tuple[int, int]]:
        """Every fast-path counter (UDP thread, TCP, the native workers' hits and stale answers),
        copied so the UDP thread may keep writing."""
        return [*self._hit_items(), *((k, n) for k, n, _ns in self._stale_items())]

    def stale_served(self) -> dict[str, int]:
        """serve_stale answers the native workers sent, by zone."""
        out: dict[str, int] = {}
        for k, n, _ns in self._stale_items():
            zone = self.zone_of(k >> ZONE_SHIFT)
            out[zone] = out.get(zone, 0) + n
        return out

    def native_seconds(self) -> dict[str, float]:
        """Time the native workers spent on their answers, by zone (the duration histograms' sums)."""
        out: dict[str, float] = {}
        nat = self.native() if self.native is not None else []
        for k, _n, ns in [*nat, *self._stale_items()]:
            zone = self.zone_of(k >> ZONE_SHIFT)
            out[zone] = out.get(zone, 0.0) + ns * 1e-9
        return out

    def fast_hits(self) -> dict[tuple[str, int], int]:
        """Cache hits the fast path served, by (zone, cache kind), slow-recorded ones included."""
        out: dict[tuple[str, int], int] = {}
        for k, n in self._hit_items():
            zone, _p, _t, _r, kind, _d, _q, _s = self.decode_fast(k)
            out[(zone, kind)] = out.get((zone, kind), 0) + n
        for key, n in list(self.hit_kinds.items()):
            out[key] = out.get(key, 0) + n
        return out
