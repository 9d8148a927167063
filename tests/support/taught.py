"""The route memo the fast-path reference (plugins/cache/fastpath.answer) is given in tests.

The listener's own memo leaves out the names its native index holds (Listener.handle: the index
answers them), so a reference over that memo alone would decline every natively served name.
This memo also routes those, as ``fastpath.remember`` would have: the reference judges them too.
"""

from __future__ import annotations

from typing import Any

from nodelocaldns.plugins.cache import fastpath
from support.inproc import Harness


def taught(h: Harness) -> dict[bytes, fastpath.Route]:
    """The listener's memo plus a route for every key its native index holds (built on its loop)."""

    def build() -> dict[bytes, fastpath.Route]:
        lst = h.lst
        memo = dict(lst.router.memo)
        nat = lst.native
        if nat is None:
            return memo
        routes: dict[str, Any] = dict(lst.router.routes)
        for block in dict.fromkeys(lst.router.zones.values()):
            cache = block.cache
            if cache is None:
                continue
            for m in cache.store.maps:
                for key in list(m):
                    qkey = key[: key.find(0) + 5]
                    routed = lst.router.route(qkey[:-4], int.from_bytes(qkey[-4:-2], "big"))
                    if routed is None or routed[1] is not block or not nat.holds(key):
                        continue
                    zone = routed[0]
                    fastpath.remember(memo, routes, qkey, zone, cache.store.maps, lst.stats.zone_acc(zone),
                                      1 << 30, block.transform, block.udp_max)  # fmt: skip
        return memo

    return h.call(build)
