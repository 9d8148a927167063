"""The cache in a running server on a fake clock: TTLs, expiry, serve_stale and prefetch.

Each test moves the injected clock (support.inproc) past a boundary and checks the answer on every
path a query can take (the UDP thread, TCP and the plugin chain) and what reached the upstream. A
server that read the real clock would never see these boundaries within a test, so each would fail.
Clock steps are binary fractions so the sums land exactly on the boundary.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.cache.metrics import CacheCounters
from support.inproc import Harness, answer_ttls, inproc, query
from support.upstreams import UpstreamServer, unbound_server

NAMES = ("a.cluster.local.", "b.cluster.local.", "c.cluster.local.")
ZONES = {"cluster.local.": [f"{n} 30 IN A 198.18.0.{i + 1}" for i, n in enumerate(NAMES)]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with unbound_server(ZONES) as up:
        yield up


def _server(up: UpstreamServer, cache_block: str = "") -> str:
    return (f".:{{PORT}} {{\n    bind 127.0.0.1\n    cache 30 {{\n{cache_block}\n    }}\n"
            f"    forward . {up.address}\n}}\n")  # fmt: skip


def _counters(h: Harness) -> CacheCounters:
    return h.call(lambda: h.cache().counters.for_server(h.lst.server))


def _stored_at(h: Harness, q: bytes) -> float | None:
    """When the cache stored ``q``'s current entry (None: not held)."""
    key = fastpath.flagged(fastpath.question_key(q, q.find(0, 12) + 5), 0, 0)
    e = h.call(lambda: h.cache().store.get(key))
    return None if e is None else float(e.stored)


def _all_paths(h: Harness, q: bytes) -> tuple[list[int], list[int], list[int]]:
    return answer_ttls(h.udp(q)), answer_ttls(h.tcp(q)), answer_ttls(h.slow(q))


def test_ttl_counts_down_with_the_clock_and_expires_at_the_boundary(upstream: UpstreamServer) -> None:
    upstream.reset_queries()
    name = NAMES[0]
    q = query(name, 1)
    with inproc(_server(upstream)) as h:
        t0 = h.clock()
        assert answer_ttls(h.udp(q)) == [30]  # the miss, stored at t0
        assert upstream.wait_for_queries(1, name=name) == 1
        h.advance(0.75)
        assert _all_paths(h, q) == ([30], [30], [30])
        h.advance(0.25)  # one whole second gone
        assert _all_paths(h, q) == ([29], [29], [29])
        h.advance(28.75)  # t0 + 29.75: the last fresh quarter-second
        assert _all_paths(h, q) == ([1], [1], [1])
        assert fastpath.answer(q, h.clock(), h.lst.router.memo, tcp=False) is not None
        assert upstream.query_count(name) == 1
        misses = _counters(h).misses
        h.advance(0.25)  # t0 + 30: expired, on every path
        assert h.clock() == t0 + 30
        assert fastpath.answer(q, h.clock(), h.lst.router.memo, tcp=False) is None
        assert h.call(lambda: h.lst.fast(q, True)) is None
        assert answer_ttls(h.udp(q)) == [30]  # fetched again, stored now
        assert upstream.wait_for_queries(2, name=name) == 2
        assert _counters(h).misses == misses + 1
        assert _all_paths(h, q) == ([30], [30], [30])


def test_serve_stale_answers_inside_the_window_and_not_at_its_end(upstream: UpstreamServer) -> None:
    upstream.reset_queries()
    a, b = query(NAMES[0], 1), query(NAMES[1], 1)
    with inproc(_server(upstream, "        serve_stale 60s immediate 7s")) as h:
        t0 = h.clock()
        h.udp(a), h.udp(b)
        assert upstream.wait_for_queries(2) == 2
        h.advance(89.75)  # 59.75 s past expiry: stale, still servable
        before = _counters(h)
        stale_before, misses_before = before.served_stale, before.misses
        assert answer_ttls(h.udp(a)) == [7]  # the stale entry, with the configured response TTL
        assert _counters(h).served_stale == stale_before + 1
        assert upstream.wait_for_queries(1, name=NAMES[0]) >= 1 and upstream.wait_for_queries(3) == 3
        # The background refresh lands: the entry is stored again at the fake now. Waiting on the
        # store, not on answers: a query before the refresh lands would be served stale again.
        h.wait_until(lambda: _stored_at(h, a) == h.clock())
        assert answer_ttls(h.slow(a)) == [30]
        assert _counters(h).misses == misses_before
        h.advance(0.25)  # t0 + 90: b is 60 s past expiry, the end of the window
        assert h.clock() == t0 + 90
        assert answer_ttls(h.udp(b)) == [30]  # not stale: a miss answered by the upstream
        c = _counters(h)
        assert c.served_stale == stale_before + 1 and c.misses == misses_before + 1
        assert upstream.query_count(NAMES[1]) == 2


def test_prefetch_fires_when_the_ttl_reaches_the_percentage(upstream: UpstreamServer) -> None:
    upstream.reset_queries()
    name = NAMES[2]
    q = query(name, 1)
    # Two hits inside a minute, at most 10% (ceil: 3 s) of the 30 s TTL left.
    with inproc(_server(upstream, "        prefetch 2 1m 10%")) as h:
        t0 = h.clock()
        h.udp(q)
        assert upstream.wait_for_queries(1, name=name) == 1
        h.advance(20)
        assert answer_ttls(h.udp(q)) == [10]  # hit 1
        h.advance(6.75)
        assert answer_ttls(h.udp(q)) == [4]  # hit 2, 4 s left: above the threshold
        assert _counters(h).prefetch == 0
        assert upstream.query_count(name) == 1
        h.advance(0.25)  # t0 + 27: 3 s left
        assert h.clock() == t0 + 27
        assert answer_ttls(h.udp(q)) == [3]  # hit 3 answers from cache and starts the prefetch
        assert _counters(h).prefetch == 1
        assert upstream.wait_for_queries(2, name=name) == 2
        h.wait_until(lambda: answer_ttls(h.slow(q)) == [30])  # the refreshed entry, stored at t0 + 27
        c = _counters(h)
        assert c.prefetch == 1 and c.misses == 1
