"""Bounded success and denial maps for one cache instance.

CoreDNS evicts an arbitrary entry from a full shard. We evict the oldest insertion (FIFO): a plain
dict keeps insertion order, costs less memory than an OrderedDict, and never throws out a
just-stored answer. Expired entries are not
swept in the background (like CoreDNS); they are replaced on the next miss or evicted.

Mirrors (the listeners' native indexes, server/native_udp.py) see every change as it happens:
the store stays the authority and a mirror never holds a key the store dropped. A mirror that
took an entry's bytes hands back a ``Mirrored`` (the same metadata, no bytes), which replaces the
entry here: each answer's bytes are kept once, in the index.
"""

from __future__ import annotations

from typing import Protocol

from nodelocaldns.metrics.dnsstats import STAT_SHIFT, STATS_BY_ID
from nodelocaldns.plugins.cache.classify import DENIAL, SUCCESS
from nodelocaldns.plugins.cache.entry import Cached, Mirrored

# Evictions between compactions of a full map. A dict keeps a deleted slot in its entry table until
# it next resizes, and ``next(iter(m))`` walks every slot deleted at the front: in a full map that
# resizes every ~12k inserts that walk averaged ~6k slots (12 us) per eviction. Copying the map back
# into itself every COMPACT evictions keeps the walk under COMPACT slots, for one O(n) copy.
COMPACT = 512


class Mirror(Protocol):
    """A copy of (part of) a store kept in step with it: told of every put and every removal."""

    def put(self, key: bytes, entry: Cached, route: object = None) -> Cached | None:
        """Copy ``entry``; return what the store keeps instead (a Mirrored) if this copy is now
        the one holding its bytes, else None. ``route``: how the query that brought ``entry``
        was routed (the listener's, see Store.put), which a mirror may trust instead of routing
        ``key`` again."""

    def drop(self, key: bytes, entry: Cached | None = None) -> None:
        """``key`` left the store; ``entry``: what the store held for it, when it is known."""


class Store:
    """``maps`` hold at most one entry per key, except under ``serve_stale_policy prefer_positive``.

    Under that policy (CoreDNS HEAD) a key may have a success and a denial side by side, and a
    success reply that does not answer the question keeps the last answer that did: the answer
    stays in ``maps[SUCCESS]`` (the fast path may serve it while fresh) and the newer non-answer
    waits in ``shadow``, which the fast path never sees.
    """

    __slots__ = ("maps", "caps", "evictions", "shadow", "mirrors", "_since")

    def __init__(self, success_cap: int, denial_cap: int) -> None:
        self.maps: tuple[dict[bytes, Cached], dict[bytes, Cached]] = ({}, {})
        self.caps = (success_cap, denial_cap)
        self.evictions = [0, 0]
        self.shadow: dict[bytes, Cached] = {}
        self.mirrors: list[Mirror] = []
        self._since = [0, 0]  # evictions since each map was last compacted

    def _evict(self, m: dict[bytes, Cached], kind: int) -> tuple[bytes, Cached]:
        """Remove the oldest insertion of the full map ``m`` (its ``kind``); return it."""
        old = next(iter(m))
        gone = m.pop(old)
        self.evictions[kind] += 1
        since = self._since[kind] + 1
        if since >= COMPACT:
            since = 0
            # In place: the fast path's memo routes hold these very dict objects. The copy has
            # no deleted slots; update() into the emptied map clones its table in insertion order.
            # (Without the extension a UDP thread reads the map meanwhile: between the two calls
            # it may miss, and that query takes the slow path, which runs after both.)
            packed = m.copy()
            m.clear()
            m.update(packed)
        self._since[kind] = since
        return old, gone

    def attach(self, m: Mirror) -> None:
        """Start mirroring into ``m``, beginning with everything stored now."""
        self.mirrors.append(m)
        for mp in self.maps:
            for key, e in list(mp.items()):
                r = m.put(key, e)
                if r is not None:
                    mp[key] = r

    def detach(self, m: Mirror) -> None:
        if m in self.mirrors:
            self.mirrors.remove(m)

    def get(self, key: bytes) -> Cached | None:
        """Denial first, then success, as CoreDNS looks them up."""
        e = self.maps[DENIAL].get(key)
        if e is None:
            return self.maps[SUCCESS].get(key)
        return e

    def put(self, key: bytes, entry: Cached, now: float, route: object = None) -> None:
        """Store ``entry`` under ``key``. ``route``: the router's answer for ``key``'s question
        (opaque here, passed on to the mirrors), or None when the caller has none."""
        _qtype, rcode, kind, _size = STATS_BY_ID[entry.sbase >> STAT_SHIFT]  # entry.kind and .rcode, one read
        maps = self.maps
        m = maps[kind]
        if kind == DENIAL and rcode == 2:
            # A cached SERVFAIL yields to a still-valid positive answer (CoreDNS >= 1.14.4).
            pos = maps[SUCCESS].get(key)
            if pos is not None and pos.ttl(now) > 0:
                return
        other = maps[1 - kind]
        mirrors = self.mirrors
        gone = other.pop(key, None)
        if gone is not None:
            for mi in mirrors:
                mi.drop(key, gone)
        if key in m:
            del m[key]  # re-insert at the end: a refreshed answer is the newest
            m[key] = entry
            self._publish(m, key, entry, route)
            return
        cap = self.caps[kind]
        if cap <= 0:
            return
        if len(m) >= cap:
            old, gone = self._evict(m, kind)
            for mi in mirrors:
                mi.drop(old, gone)
        m[key] = entry
        for mi in mirrors:  # _publish, inlined: every stored miss passes here
            r = mi.put(key, entry, route)
            if r is not None:
                m[key] = entry = r

    def _publish(self, m: dict[bytes, Cached], key: bytes, entry: Cached, route: object = None) -> None:
        """Tell the mirrors of ``m[key]``; the first to keep its bytes turns it into a Mirrored
        (any further mirror copies from that one)."""
        for mi in self.mirrors:
            r = mi.put(key, entry, route)
            if r is not None:
                m[key] = entry = r

    def put_preferring(self, key: bytes, entry: Cached, now: float, answering: bool) -> None:
        """CoreDNS ResponseWriter.set under prefer_positive: an answer replaces the key's success
        and removes its denial; a success non-answer is kept next to the last answer (its
        last-known-good); a denial leaves the success side alone."""
        if entry.kind == DENIAL:
            self._insert(self.maps[DENIAL], DENIAL, key, entry)
            return
        if answering:
            self.shadow.pop(key, None)
            if self.maps[DENIAL].pop(key, None) is not None:
                self._mirror(key)
            self._insert(self.maps[SUCCESS], SUCCESS, key, entry)
            return
        self._insert(self.shadow, SUCCESS, key, entry)

    def _insert(self, m: dict[bytes, Cached], kind: int, key: bytes, entry: Cached) -> None:
        mirrored = m is not self.shadow  # the shadow is never served by a fast path
        if key in m:
            del m[key]
            m[key] = entry
            if mirrored:
                self._mirror(key)
            return
        if self.caps[kind] <= 0:
            return
        if len(m) >= self.caps[kind]:
            old, _gone = self._evict(m, kind)
            if mirrored:
                self._mirror(old)
        m[key] = entry
        if mirrored:
            self._mirror(key)

    def _mirror(self, key: bytes) -> None:
        """Tell the mirrors what ``key`` holds now. A key with a success and a denial side by side
        (prefer_positive) is dropped from them: "not mine" there sends it to the chain, which picks."""
        s, d = self.maps[SUCCESS].get(key), self.maps[DENIAL].get(key)
        if (s is None) == (d is None):
            if s is not None:
                # Both stay here but leave the mirrors: whichever has its bytes there only gets
                # its own copy back first.
                for mp in self.maps:
                    e = mp[key]
                    if isinstance(e, Mirrored):
                        full = e.materialize()
                        if full is None:
                            del mp[key]
                        else:
                            mp[key] = full
            for mi in self.mirrors:
                mi.drop(key)
            return
        self._publish(self.maps[SUCCESS] if s is not None else self.maps[DENIAL], key, s or d)  # type: ignore[arg-type]

    def get_preferring(self, key: bytes, now: float, stale: float) -> Cached | None:
        """CoreDNS getIfNotStale under prefer_positive: the last answer while it is fresh or
        within the serve_stale window, then the denial, then the newest success (a non-answer)."""

        def usable(e: Cached | None) -> bool:
            return e is not None and (e.ttl(now) > 0 or -e.ttl(now) < int(stale))

        answer = self.maps[SUCCESS].get(key)
        if usable(answer):
            return answer
        denial = self.maps[DENIAL].get(key)
        latest = self.shadow.get(key) or answer
        if usable(denial):
            assert denial is not None
            # A cached SERVFAIL never shadows a usable positive reply.
            return latest if denial.rcode == 2 and usable(latest) else denial
        return latest if usable(latest) else None

    def __len__(self) -> int:
        return len(self.maps[0]) + len(self.maps[1]) + len(self.shadow)

    def sizes(self) -> tuple[int, int]:
        success = self.maps[SUCCESS]
        extra = sum(1 for k in self.shadow if k not in success) if self.shadow else 0
        return len(success) + extra, len(self.maps[DENIAL])
