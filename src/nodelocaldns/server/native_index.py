"""The native index of one zone table and how it mirrors the cache stores (native/README.md).

The Python cache decides what is stored, evicted and counted (plugins/cache/store.Mirror); the
index only ever holds what the store holds, for the blocks whose fast path the native code can
apply exactly. Listeners with the same zone table share one index (``signature``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodelocaldns import native
from nodelocaldns.metrics.dnsstats import ZONE_SHIFT
from nodelocaldns.native import insert_entry, new_index
from nodelocaldns.plugins.cache.entry import Cached, Entry, Mirrored
from nodelocaldns.server.native_stale import stale_slots

if TYPE_CHECKING:
    from nodelocaldns.server.listener import Block, Router

_OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # what a hit's OPT looks like (size 1232)
# Entry.heads (interned: few distinct tuples) -> their bytes as the index takes them. Keyed by
# id, with the tuple kept in the value so that id cannot be reused while it is here.
_heads_joined: dict[int, tuple[tuple[bytes, ...], bytes]] = {}


def _joined(heads: tuple[bytes, ...]) -> bytes:
    got = _heads_joined.get(id(heads))
    if got is not None and got[0] is heads:
        return got[1]
    if len(_heads_joined) > 4096:
        _heads_joined.clear()
    j = b"".join(heads)
    _heads_joined[id(heads)] = (heads, j)
    return j


class BlockMirror:
    """One block's cache store, as far as the shared index serves it (plugins/cache/store.Mirror)."""

    def __init__(self, nix: NativeIndex, block: Block) -> None:
        self.nix = nix
        self.block = block
        self.stale = nix.stale.get(id(block), 0)  # its serve_stale slot (server/native_stale.py)
        # id -> the index router's own route tuples to this block: a listener of this router
        # hands the one it routed a query with (Store.put), so the key needs no second route.
        self.routes: dict[int, tuple[str, Block]] = {
            id(r): r for r in nix.router.by_wire.values() if r[1] is block
        }

    def _zone(self, key: bytes) -> str | None:
        """The zone the listeners route ``key``'s question to, if that is this block's."""
        i = key.find(0)
        if i < 0 or len(key) < i + 5:
            return None
        qtype = (key[i + 1] << 8) | key[i + 2]
        if qtype in self.block.skips:
            return None
        try:
            routed = self.nix.router.route(key[: i + 1], qtype)
        except IndexError:  # not a name the fast path could ever look up
            return None
        if routed is None or routed[1] is not self.block:
            return None
        return routed[0]

    def put(self, key: bytes, entry: Cached, route: object = None) -> Cached | None:
        """Copy ``entry`` into the index; a full Entry comes back as a Mirrored: from now on the
        index holds the only copy of its bytes (native/README.md, Memory).

        ``route``: the listener's route for ``key``, set only with a key it built itself (a name
        with no zero byte inside a label, a qtype not in the block's skips: what ``_zone`` checks).
        One of this index's router's own tuples means ``_zone``'s answer without routing again;
        anything else (another router's, None) is routed here."""
        r = self.routes.get(id(route)) if route is not None else None
        zone = r[0] if r is not None and r is route else self._zone(key)
        if zone is None:
            return None
        nix = self.nix
        ix = nix.index
        block = self.block
        try:
            stat = nix.zone_bits[zone] | entry.sbase
            if type(entry) is Entry and block.shuffle is None:
                # insert_entry, inlined for the common put (every stored miss): a new Entry, whose
                # memo is still its body at orig (Entry.orig_body), no shuffle.
                ok = ix.insert(key, _joined(entry.heads), entry.orig_body(), entry.offs, entry.stored, entry.orig,
                               entry.fl & nix.flag_mask, entry.q, block.udp_max, stat, self.stale)  # fmt: skip
            else:
                shuffle = block.shuffle is not None
                ok = (not shuffle or self._shuffles(key, entry)) and insert_entry(
                    ix, key, entry, block.udp_max, stat, shuffle, self.stale
                )
        except ValueError:  # a key or entry the native code does not serve: Python's fast path does
            ok = False
        if not ok:  # index full: drop any older copy, so the index never serves a replaced answer
            ix.remove(key)
            return None
        return entry.mirrored(nix.mirrored, key) if isinstance(entry, Entry) else None

    def _shuffles(self, key: bytes, entry: Cached) -> bool:
        """Would loadbalance's reference send this entry's hits as the native shuffle does? Its
        replies with and without an OPT (the OPT is one more record in the additional section)."""
        check = self.block.shuffle
        assert check is not None
        question = entry.q or key[: key.find(0) + 5]
        body = entry.orig_body()
        if body is None:  # a mirrored entry its index no longer holds: nothing to insert
            return False
        return check(b"\0\0" + entry.heads[0] + question + body) and check(
            b"\0\0" + entry.heads[4] + question + body + _OPT
        )

    def drop(self, key: bytes, entry: Cached | None = None) -> None:
        # A Mirrored of this index was put here under this block's zone (a router routes a key
        # one way for good): no second route per eviction. Anything else may be another block's.
        if type(entry) is self.nix.mirrored or self._zone(key) is not None:
            self.nix.index.remove(key)


class NativeIndex:
    """The native index for one zone table (Router), mirroring every block it may answer for."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.exchange: object = None  # the forward table its workers have (server/native_exchange.py)
        self.zones = list(router.zones)  # a hit's zone id is its position here + 1
        self.zone_bits = {z: (i + 1) << ZONE_SHIFT for i, z in enumerate(self.zones)}
        seen: dict[int, Block] = {}
        for b in router.zones.values():
            # The native code applies the bufsize cap, dns64's skips and round_robin; no other
            # reply transform.
            if b.fast and b.cache is not None and (b.transform is None or b.shuffle is not None):
                seen[id(b)] = b
        cap = sum(sum(max(c, 0) for c in b.cache.store.caps) for b in seen.values() if b.cache)
        self.index = new_index(min(max(cap, 1), 1 << 26))
        self.mirrored = Mirrored.bound(self.index)  # what the stores keep for the entries it holds
        self.flag_mask = native.module().FLAG_KEEPTTL | native.module().FLAG_AA  # insert_entry's
        self.stale = stale_slots(self.index, seen.values())
        self.mirrors = [BlockMirror(self, b) for b in seen.values()]
        for m in self.mirrors:
            assert m.block.cache is not None
            m.block.cache.store.attach(m)

    def close(self) -> None:
        """Stop mirroring. The index is not cleared: the stores' Mirrored entries still read their
        bytes from it, and it is freed with the last of them (the old generation's caches)."""
        for m in self.mirrors:
            if m.block.cache is not None:
                m.block.cache.store.detach(m)
        self.mirrors = []


def signature(router: Router) -> tuple[tuple[str, int], ...]:
    """Routers with equal signatures route every name to the same block: they can share an index."""
    return tuple(sorted((z, id(b)) for z, b in router.zones.items()))
