"""Which cache misses the native workers send upstream themselves (``Index.set_forward``).

A block qualifies when its miss path is exactly "cache, then one plain forward": every other
plugin of it may be skipped on such a miss (the registry's ``Plugin.miss_skippable`` and the
runtime's own narrowing, e.g. ``loop`` while it probes), its cache comes first, and the plugin
after it offers a ``native_exchange`` for the zone (``forward``: UDP upstreams only, no
``except``/``next``/``force_tcp``...). The worker then sends an index miss of that zone to one of
the upstreams the plugin considers up and hands (query, reply) back; Python still runs the
block's chain with the reply in hand (``Request.pre``), so the cache stores, forward counts and
fails over, and every metric moves exactly as on the pure-Python path.

The table covers every zone of a listener's router (an ineligible zone gets no upstreams) and is
rebuilt on every reload and whenever a runtime says its answer may have moved
(``Host.exchange_changed``: an upstream went down or came back, loop's probe ended).
``NODELOCALDNS_NATIVE_EXCHANGE=0`` turns it off (every miss goes to Python's forward, as before).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from nodelocaldns.core.plugin import NativeExchange, Runtime, lookup
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire

if TYPE_CHECKING:
    from nodelocaldns.server.listener import Block, Router

ENV = "NODELOCALDNS_NATIVE_EXCHANGE"
# Queries a worker keeps in flight upstream when the forwarding plugin sets no bound of its own.
UNBOUNDED_PENDING = 1024

Row = tuple[bytes, list[tuple[int, str, int]], int]


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip() != "0"


def block_exchange(block: Block, zone: str) -> NativeExchange | None:
    """The native exchange for ``zone``'s misses, if ``block``'s miss path is cache then one plain
    forwarding plugin and everything else in it may be skipped on such a miss."""
    exchanger = _exchanger(block, narrowed=True)
    return exchanger.native_exchange(zone) if exchanger is not None else None


def _exchanger(block: Block, narrowed: bool) -> Runtime | None:
    """The one plugin after the cache that may answer a miss when all others are skipped;
    ``narrowed``: as the runtimes allow now (else as the registry allows)."""
    cache = block.cache
    if cache is None or block.after_cache is None:  # no cache in the chain: nothing to store
        return None
    exchanger = None
    past_cache = False
    for rt in block.runtimes:
        if rt.fast_path is cache:
            past_cache = True
            continue
        p = lookup(rt.name)
        if p is not None and p.miss_skippable and (rt.miss_skippable or not narrowed):
            continue
        if exchanger is not None or not past_cache:
            return None
        exchanger = rt
    return exchanger


def settler(block: Block) -> Callable[[Request], Reply | None] | None:
    """``block``'s answer to a native exchange's result without its chain (Listener.settle):
    the cache's ``settle`` around the forwarding plugin's ``settle_exchanged``, while every
    skipped plugin with a handler still allows it (loop narrows it while it probes). The others
    pass such a reply on untouched (core.plugin.Plugin.miss_skippable). None: never; the chain."""
    cache = block.cache
    exchanger = _exchanger(block, narrowed=False)
    if cache is None or exchanger is None:
        return None
    answer = exchanger.settle_exchanged
    store = cache.settle
    cache_rt = next(rt for rt in block.runtimes if rt.fast_path is cache)
    watching = tuple(rt for rt in block.runtimes if rt.handlers and rt not in (exchanger, cache_rt))
    if not watching:
        return lambda req: store(req, answer)

    def settle(req: Request) -> Reply | None:
        for rt in watching:
            if not rt.miss_skippable:
                return None
        return store(req, answer)

    return settle


class ExchangeTables:
    """The upstream ids (``uid``) the tables use, stable while an upstream lives: a result that
    arrives after a reload still names the upstream it went to (or one no block has any more)."""

    def __init__(self) -> None:
        self.keys: dict[int, object] = {}  # uid -> the plugin's key (forward's Proxy)
        self._uid: dict[int, int] = {}  # id(key) -> uid
        self._prev: set[int] = set()  # uids of the last build but one: results may still come
        self._used: set[int] = set()
        self._next = 0

    def uid(self, key: object) -> int:
        u = self._uid.get(id(key))
        if u is None or self.keys.get(u) is not key:
            for _ in range(1 << 16):
                u, self._next = self._next, (self._next + 1) & 0xFFFF
                if u not in self.keys:
                    break
            else:
                raise RuntimeError("no free upstream id")
            self.keys[u] = key
            self._uid[id(key)] = u
        self._used.add(u)
        return u

    def begin(self) -> None:
        self._used = set()

    def end(self) -> None:
        """Forget the upstreams neither this build nor the one before used."""
        keep = self._used | self._prev
        for u in [u for u in self.keys if u not in keep]:
            self._uid.pop(id(self.keys.pop(u)), None)
        self._prev = self._used

    def table(
        self, router: Router, workers: int, mirrored: Collection[Block] | None = None
    ) -> tuple[list[Row], float, float, int] | None:
        """``set_forward``'s arguments for one router's index (None: no zone is exchanged). One
        timeout and expire per table: a zone whose forward differs from the first is left out.

        ``mirrored``: the blocks whose cache the index mirrors. Only their zones qualify: the
        worker forwards what its index does not hold, and a cache the index does not mirror
        (prefetch, a reply transform) would have its every hit sent upstream first. None: the
        caller checks that itself (no index yet)."""
        rows: list[Row] = []
        chosen: tuple[float, float] | None = None
        bound = 0
        on = enabled()
        for zone, block in router.zones.items():
            held = mirrored is None or any(b is block for b in mirrored)
            ex = block_exchange(block, zone) if on and held else None
            if ex is not None and chosen is not None and (ex.timeout, ex.expire) != chosen:
                ex = None
            if ex is None:
                rows.append((wire.text_to_wire(zone).lower(), [], 0))
                continue
            chosen = chosen or (ex.timeout, ex.expire)
            pending = ex.max_pending or UNBOUNDED_PENDING
            bound = pending if not bound else min(bound, pending)
            ups = [(self.uid(k), host, port) for k, host, port in ex.upstreams]
            rows.append((wire.text_to_wire(zone).lower(), ups, ex.policy))
        if chosen is None:
            return None
        return rows, chosen[0], chosen[1], max(1, bound // max(workers, 1))


def apply(index: Any, table: tuple[list[Row], float, float, int] | None) -> bool:
    """Give ``index`` its table; False when this build of the extension has no native exchange."""
    set_forward = getattr(index, "set_forward", None)
    if set_forward is None:
        return False
    if table is None:
        set_forward(None, timeout=2.0, expire=10.0, max_pending=0)
        return True
    rows, timeout, expire, max_pending = table
    set_forward(rows, timeout=timeout, expire=expire, max_pending=max_pending)
    return True
