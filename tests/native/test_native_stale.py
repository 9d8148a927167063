"""serve_stale answered by the native worker (server/native_stale.py, native/stale.c).

The reference is ``fastpath.answer(..., stale=(window, ttl))``, itself held to what the cache
handler's ``_serve_stale`` sends through the real chain. Then a real server in process (real
sockets, a real unbound upstream that is later blackholed, the clock injected): a stale answer
arrives while the event loop is blocked, its refresh goes through the chain and replaces the
entry, one refresh per name is in flight, the window's end is kept, and every counter reads the
same as on the pure-Python path.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_diff import packets

from nodelocaldns import native
from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.cache import metrics as cache_metrics
from nodelocaldns.plugins.prometheus import metrics as dns_metrics
from support.cachefill import STORED, TABLE, warm
from support.inproc import Harness, answer_ttls, inproc, query
from support.ports import free_port
from support.upstreams import UpstreamServer, blackhole_udp

pytestmark = pytest.mark.skipif(not native.native_available(), reason=native.native_status())

WINDOW = 4.5  # a binary fraction: the float arithmetic is exact on both sides
# From just before the entries were stored to past every TTL (1..35 s) plus the window.
times = st.integers(-128, 64 * 42).map(lambda k: STORED + k / 64)


@settings(max_examples=300, deadline=None)
@given(keepttl=st.booleans(), ttl=st.sampled_from([0, 7, 30]),
       steps=st.lists(st.tuples(packets(), times), min_size=1, max_size=6))  # fmt: skip
def test_native_stale_answers_are_the_references(
    keepttl: bool, ttl: int, steps: list[tuple[bytes, float]]
) -> None:
    w = warm(keepttl, serve_stale=WINDOW, stale_response_ttl=ttl)
    ix = native.new_index(256)
    ix.set_stale(1, WINDOW, ttl)
    assert w.mirror(ix, stale=1) == len(w.cache.store) > 0
    memo = w.router().memo
    for data, now in sorted(steps, key=lambda s: s[1]):
        hit = fastpath.answer(data, now, memo, False, stale=(WINDOW, ttl))
        fresh, stale = ix.answer(data, now), ix.stale_answer(data, now)
        assert fresh is None or stale is None  # a fresh entry is never answered stale
        assert (fresh or stale) == (None if hit is None else hit[0]), (data.hex(), now)


def _variants(name: str, rdtype: str) -> list[bytes]:
    out = []
    for do in (False, True):
        for cd in (False, True):
            for size in (None, 512, 1232):
                q = dns.message.make_query(name, rdtype, want_dnssec=do, use_edns=None if size is None else 0,
                                           payload=size or 1232)  # fmt: skip
                if cd:
                    q.flags |= dns.flags.CD
                if size is None and do:
                    continue
                out.append(q.to_wire())
    return out


@pytest.mark.parametrize("ttl", [0, 7])
def test_the_stale_reference_is_what_the_chain_sends(ttl: int) -> None:
    checked = 0
    for name, rdtype, _rttl in TABLE:
        for data in _variants(name, rdtype):
            w = warm(serve_stale=WINDOW, stale_response_ttl=ttl)
            stored = w.cache.store.get(fastpath.key_of(wire.parse_query(data)))
            assert stored is not None
            w.clock = stored.expires + 1.25  # expired, inside the window
            hit = fastpath.answer(data, w.clock, w.router().memo, False, stale=(WINDOW, ttl))
            assert fastpath.answer(data, w.clock, w.router().memo, False) is None  # not fresh
            sent: list[bytes] = []
            asyncio.run(w.listener.handle(data, ("127.0.0.1", 40000), "udp", sent.append))
            assert len(sent) == 1
            if hit is None:  # the fast path leaves truncation to the chain, stale or not
                assert len(sent[0]) > 512 or dns.message.from_wire(sent[0]).flags & dns.flags.TC
                continue
            assert hit[0] == sent[0], (name, data.hex())
            assert set(answer_ttls(sent[0])) <= {ttl}
            checked += 1
    assert checked > 40


# -- a real server ---------------------------------------------------------------------------------

NAME = "s.stale.test."


def _families(h: Harness) -> dict[tuple[str, tuple[str, ...]], float]:
    """The cache and request counters as a scrape reads them (durations aside: they are timing)."""

    def read() -> dict[tuple[str, tuple[str, ...]], float]:
        out = {}
        for fam in [*cache_metrics.collect(h.inst.host), *dns_metrics.collect(h.inst.host)]:
            if fam.name.endswith("duration_seconds") or fam.name == "coredns_plugin_enabled":
                continue
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                out[(s.name, tuple(f"{k}={v}" for k, v in sorted(s.labels.items())))] = s.value
        return out

    return h.call(read)


def _value(f: dict[tuple[str, tuple[str, ...]], float], name: str, *labels: str) -> float:
    return sum(v for (n, ls), v in f.items() if n == name and set(labels) <= set(ls))


def _scenario(
    up: UpstreamServer, side: str
) -> tuple[dict[tuple[str, tuple[str, ...]], float], dict[str, Any]]:
    text = (f".:{{PORT}} {{\n    bind 127.0.0.1\n    multisocket 1\n    prometheus 127.0.0.1:{free_port('tcp')}\n"
            f"    cache 30 {{\n        serve_stale 60s\n    }}\n    forward . {up.address}\n}}\n")  # fmt: skip
    q = query(NAME, 1)
    key = fastpath.flagged(fastpath.question_key(q, len(q)), 0, 0)
    seen: dict[str, Any] = {}
    with inproc(text, native=side == "native") as h:
        c = h.cache()

        def stored() -> float:
            return h.call(lambda: c.store.get(key).stored)  # type: ignore[union-attr]

        def worker(name: str) -> int:
            return h.call(lambda: h.lst.native.counters()[name]) if side == "native" else 0  # type: ignore[union-attr]

        t0 = h.clock()
        assert answer_ttls(h.udp(q)) == [5]  # the miss, stored at t0
        assert answer_ttls(h.udp(q)) == [5]  # a fresh hit
        h.advance(6)  # expired 1 s ago, inside the 60 s window
        if side == "native":
            # The event loop sleeps: only the native worker can answer now.
            h.loop.call_soon_threadsafe(time.sleep, 1.5)
            time.sleep(0.1)
            t = time.monotonic()
            r = h.udp(q, timeout=1.0)
            seen["blocked_answer_s"] = time.monotonic() - t
            h.call(lambda: None)  # the loop is back
        else:
            r = h.udp(q)
        assert answer_ttls(r) == [0] and dns.message.from_wire(r).rcode() == dns.rcode.NOERROR
        # The refresh went through the chain to the upstream and replaced the entry.
        assert up.wait_for_queries(2, name=NAME, timeout=5) == 2
        h.wait_until(lambda: stored() == t0 + 6)
        assert answer_ttls(h.udp(q)) == [5]  # fresh again
        h.advance(6)  # expired again; now the upstream is gone
        up.stop()
        # Dark in place: UDP swallowed, TCP (a refresh's transport) accepted by the kernel and
        # never answered, so a refresh stays in flight for forward's whole budget.
        with blackhole_udp(port=up.port), socket.socket() as tcp_hole:
            tcp_hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp_hole.bind(("127.0.0.1", up.port))
            tcp_hole.listen(16)
            for _ in range(3):
                assert answer_ttls(h.udp(q)) == [0]
            seen["refreshes_in_flight"] = worker("refreshes")
            assert select.select([tcp_hole], [], [], 5.0)[0]  # the refresh reached the dead upstream
            h.advance(58.75)  # t0 + 70.75: 59.75 s past expiry, the window's last quarter second
            assert answer_ttls(h.udp(q)) == [0]
            h.advance(0.25)  # the window's end: no stale answer any more, a miss to the dead upstream
            r = h.udp(q, timeout=8.0)
            assert dns.message.from_wire(r).rcode() == dns.rcode.SERVFAIL
            assert h.clock() == t0 + 71
        seen["worker_stale"] = worker("stale")
        seen["python_stale"] = h.call(lambda: c.counters.for_server(h.lst.server).served_stale)
        return _families(h), seen


def test_stale_answers_come_from_the_native_worker_with_the_python_paths_counters(
    make_unbound: Callable[..., UpstreamServer], caplog: pytest.LogCaptureFixture
) -> None:
    zones = {"stale.test.": [f"{NAME} 5 IN A 198.18.0.7"]}
    py, py_seen = _scenario(make_unbound(zones), "python")
    nat, nat_seen = _scenario(make_unbound(zones), "native")
    # No refresh failed on the way (a mirrored entry once made every stale refresh log a traceback).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # Answered while the loop slept: before, the answer waited for the loop (1.5 s here).
    assert nat_seen["blocked_answer_s"] < 0.5, nat_seen
    # Five stale answers, all from the worker; one refresh in flight for the three at the dead upstream.
    assert nat_seen["worker_stale"] == 5 and nat_seen["python_stale"] == 0, nat_seen
    assert nat_seen["refreshes_in_flight"] == 2, nat_seen
    assert py_seen["python_stale"] == 5, py_seen
    assert _value(py, "coredns_cache_served_stale_total") == 5
    assert _value(py, "coredns_cache_requests_total") == 9
    assert _value(py, "coredns_cache_hits_total", "type=success") == 2
    assert _value(py, "coredns_cache_misses_total") == 2
    assert _value(py, "coredns_dns_requests_total") == 9

    def norm(f: dict[tuple[str, tuple[str, ...]], float]) -> dict[tuple[str, tuple[str, ...]], float]:
        # The listener label carries each run's own port; the workers' own upstream exchanges (the
        # refresh's miss went native) have no pure-Python counterpart.
        return {
            (n, tuple(x for x in ls if not x.startswith("server="))): v
            for (n, ls), v in f.items()
            if v and n != "nodelocaldns_forward_native_exchanges_total"
        }

    assert norm(nat) == norm(py)
