"""Bounded success and denial maps for one cache instance.

CoreDNS evicts an arbitrary entry from a full shard. We evict the oldest insertion (FIFO): a plain
dict keeps insertion order, costs less memory than an OrderedDict, and never throws out a
just-stored answer. Expired entries are not
swept in the background (like CoreDNS); they are replaced on the next miss or evicted.

Mirrors (the listeners' native indexes, server/native_udp.py) see every change as it happens:
the store stays the authority and a mirror never holds a key the store dropped.
"""

from __future__ import annotations

from typing import Protocol

from nodelocaldns.plugins.cache.classify import DENIAL, SUCCESS
from nodelocaldns.plugins.cache.entry import Entry


class Mirror(Protocol):
    """A copy of (part of) a store kept in step with it: told of every put and every removal."""

    def put(self, key: bytes, entry: Entry) -> None: ...

    def drop(self, key: bytes) -> None: ...


class Store:
    __slots__ = ("maps", "caps", "evictions", "mirrors")

    def __init__(self, success_cap: int, denial_cap: int) -> None:
        self.maps: tuple[dict[bytes, Entry], dict[bytes, Entry]] = ({}, {})
        self.caps = (success_cap, denial_cap)
        self.evictions = [0, 0]
        self.mirrors: list[Mirror] = []

    def attach(self, m: Mirror) -> None:
        """Start mirroring into ``m``, beginning with everything stored now."""
        self.mirrors.append(m)
        for mp in self.maps:
            for key, e in list(mp.items()):
                m.put(key, e)

    def detach(self, m: Mirror) -> None:
        if m in self.mirrors:
            self.mirrors.remove(m)

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
        mirrors = self.mirrors
        if key in other:
            del other[key]
            for mi in mirrors:
                mi.drop(key)
        if key in m:
            del m[key]  # re-insert at the end: a refreshed answer is the newest
            m[key] = entry
            for mi in mirrors:
                mi.put(key, entry)
            return
        if self.caps[kind] <= 0:
            return
        if len(m) >= self.caps[kind]:
            old = next(iter(m))
            del m[old]
            self.evictions[kind] += 1
            for mi in mirrors:
                mi.drop(old)
        m[key] = entry
        for mi in mirrors:
            mi.put(key, entry)

    def __len__(self) -> int:
        return len(self.maps[0]) + len(self.maps[1])

    def sizes(self) -> tuple[int, int]:
        return len(self.maps[SUCCESS]), len(self.maps[DENIAL])
