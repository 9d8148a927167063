"""serve_stale on the native hot path: which blocks the workers answer stale for, and the refreshes
they hand back.

A block whose cache serves stale in immediate mode (``CacheHandler.native_stale``) gets a slot in
its index (``Index.set_stale``: window and response TTL) and its entries carry it. A worker then
answers an expired entry inside the window itself, with the bytes ``fastpath.answer(stale=...)``
gives, counts it (``Worker.stale_stats``: a request and a stale answer, no hit) and, unless the
name's refresh is already pending, queues the query for Python (``Worker.refreshes``). Python
starts that refresh as ``CacheHandler._serve_stale`` would and tells the index when it is done
(``Index.refresh_done``), so at most one refresh per name is in flight. Whatever the worker cannot
do (no counter room, a full refresh queue, a pending slot taken by another name) it hands to
Python whole, which serves it stale the usual way. The refresh carries no client address (the
worker keeps none for it: 0.0.0.0:0); what runs behind the cache (forward) never reads one.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

from nodelocaldns.core.request import Request
from nodelocaldns.dns import wire
from nodelocaldns.errors import WireError
from nodelocaldns.plugins.cache import fastpath

if TYPE_CHECKING:
    from nodelocaldns._native import Index
    from nodelocaldns.server.listener import Block, Listener

SLOTS = 16  # native/nld.h NLD_STALE_CFGS: slot 0 means none


def stale_slots(index: Index, blocks: Iterable[Block]) -> dict[int, int]:
    """id(block) -> the index slot configured with its serve_stale, for the blocks that qualify."""
    out: dict[int, int] = {}
    for b in blocks:
        cache = b.cache
        # loadbalance's shuffle is the reference's transform (a stale reply passes through it too):
        # such blocks stay Python's for stale answers, as do blocks with no chain behind the cache.
        if cache is None or b.shuffle is not None or b.after_cache is None or len(out) + 1 >= SLOTS:
            continue
        cfg = cache.native_stale()
        if cfg is None:
            continue
        slot = len(out) + 1
        index.set_stale(slot, cfg[0], cfg[1])
        out[id(b)] = slot
    return out


def _key(data: bytes) -> bytes:
    """The cache key the worker used for ``data`` (its question matched an entry)."""
    qend = data.find(0, 12) + 5
    do = data[11] == 1 and len(data) >= qend + 11 and data[qend + 7] & 0x80
    return fastpath.flagged(fastpath.question_key(data, qend), do, data[3] & 0x10)


def start_refreshes(lst: Listener, index: Index, batch: list[bytes]) -> None:
    for data in batch:
        key = _key(data)
        done = partial(index.refresh_done, key)
        try:
            q = wire.parse_query(data)
            routed = lst.router.route(q.qname, q.qtype)
        except (WireError, IndexError):
            routed = None
        block = routed[1] if routed is not None else None
        if routed is None or block is None or block.cache is None or block.after_cache is None:
            done()  # a reload moved the name elsewhere: nothing of ours to refresh
            continue
        req = Request(data, q, ("0.0.0.0", 0), "udp", lst.family, lst.server, routed[0], 0.0, True)
        try:
            block.cache.refresh_stale(req, key, block.after_cache, done)
        except Exception as exc:  # the pending mark must not outlive a bug here
            done()
            lst.fast_failed(exc)
