"""Bounded success and denial maps for one cache instance.

CoreDNS evicts an arbitrary entry from a full shard. We evict the oldest insertion (FIFO): a plain
dict keeps insertion order, costs less memory than an OrderedDict, and never throws out a
just-stored answer. Expired entries are not
swept in the background (like CoreDNS); they are replaced on the next miss or evicted.
"""

from __future__ import annotations

from nodelocaldns.plugins.cache.classify import DENIAL, SUCCESS
from nodelocaldns.plugins.cache.entry import Entry


class Store:
    __slots__ = ("maps", "caps", "evictions")

    def __init__(self, success_cap: int, denial_cap: int) -> None:
        self.maps: tuple[dict[bytes, Entry], dict[bytes, Entry]] = ({}, {})
        self.caps = (success_cap, denial_cap)
        self.evictions = [0, 0]

    def get(self, key: bytes) -> Entry | None:
        """Denial first, then success, as CoreDNS looks them up."""
        e = self.maps[DENIAL].get(key)
        if e is None:
            return self.maps[SUCCESS].get(key)
        return e

    def put(self, key: bytes, entry: Entry, now: float) -> None:
        kind = entry.kind
        m = self.maps[kind]
        if kind == DENIAL and entry.rcode == 2:
            # A cached SERVFAIL yields to a still-valid positive answer (CoreDNS >= 1.14.4).
            pos = self.maps[SUCCESS].get(key)
            if pos is not None and pos.ttl(now) > 0:
                return
        other = self.maps[1 - kind]
        if key in other:
            del other[key]
        if key in m:
            del m[key]  # re-insert at the end: a refreshed answer is the newest
            m[key] = entry
            return
        if self.caps[kind] <= 0:
            return
        if len(m) >= self.caps[kind]:
            del m[next(iter(m))]
            self.evictions[kind] += 1
        m[key] = entry

    def __len__(self) -> int:
        return len(self.maps[0]) + len(self.maps[1])

    def sizes(self) -> tuple[int, int]:
        return len(self.maps[SUCCESS]), len(self.maps[DENIAL])
