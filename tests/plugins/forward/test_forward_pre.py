"""forward taking a native worker's exchange as its first attempt (core.request.Exchanged):
a real server's chain (Listener.handle) with a reply fetched from real unbound, or a failure,
against the same query asked the usual way. The worker side is tests/server/test_serve_exchange.py."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable

from nodelocaldns.core.request import Exchanged
from nodelocaldns.plugins.forward import ForwardRuntime
from nodelocaldns.plugins.forward.handler import ForwardHandler
from nodelocaldns.plugins.forward.metrics import COUNTERS
from support.inproc import Harness, inproc, query
from support.upstreams import CLUSTER_ZONES, Blackhole, UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]


def _corefile(*ups: str, extra: str = "") -> str:
    lines = " ".join(ups)
    return f".:{{PORT}} {{\n    bind 127.0.0.1\n    cache 30\n    forward . {lines} {{\n        policy sequential\n{extra}    }}\n}}\n"


def _forward(h: Harness) -> ForwardHandler:
    rt = next(r for r in h.lst.router.zones["."].runtimes if isinstance(r, ForwardRuntime))
    return rt.forwarders[0]


def _ask(up: UpstreamServer, data: bytes) -> bytes:
    """The upstream's own reply to ``data`` (its ID kept), as a worker hands it back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(data, up.hostport)
        return s.recv(65535)


def _handle(h: Harness, data: bytes, pre: Exchanged | None) -> bytes:
    out: list[bytes] = []
    h.run(h.lst.handle(data, ("127.0.0.1", 5300), "udp", out.append, pre))
    assert len(out) == 1
    return out[0]


def _durations(to: str) -> dict[str, float]:
    return {rc: sum(v[:-1]) for (t, rc), v in COUNTERS.durations.items() if t == to}


def test_a_pre_exchanged_reply_is_answered_stored_and_counted_as_forwards_own(
    make_unbound: MakeUnbound,
) -> None:
    up = make_unbound(CLUSTER_ZONES)
    names = [
        ("kubernetes.default.svc.cluster.local.", 1),  # one record: unbound may rotate a set
        ("nope.cluster.local.", 1),
        ("kubernetes.default.svc.cluster.local.", 28),  # NODATA
    ]
    with inproc(_corefile(up.address)) as plain, inproc(_corefile(up.address)) as pre:
        for i, (name, qtype) in enumerate(names):
            data = query(
                name.upper() if i == 0 else name, qtype, qid=0x4000 + i, edns=True, do=i == 2, size=700
            )
            before = _durations(up.address)
            want = _handle(plain, data, None)
            mid = _durations(up.address)
            asked = up.query_count()
            reply = _ask(up, data)
            got = _handle(pre, data, Exchanged(_forward(pre).proxies[0], reply, 0.001))
            assert got == want
            assert up.query_count() == asked + 1  # only the test's own: forward asked nobody
            after = _durations(up.address)
            assert {k: after.get(k, 0) - mid.get(k, 0) for k in after} == {
                k: mid.get(k, 0) - before.get(k, 0) for k in after
            }
            key_p = [k for k in plain.cache().store.maps[0]] + [k for k in plain.cache().store.maps[1]]
            key_n = [k for k in pre.cache().store.maps[0]] + [k for k in pre.cache().store.maps[1]]
            assert key_p == key_n
        # What both stored answers the next query the same way, from the cache.
        again = query("kubernetes.default.svc.cluster.local.", 1, qid=7)
        assert _handle(plain, again, None) == _handle(pre, again, None)
        cp, cn = (x.cache().counters.for_server(x.lst.server) for x in (plain, pre))
        assert (cp.requests, cp.misses, list(cp.hits)) == (cn.requests, cn.misses, list(cn.hits))


def test_a_native_timeout_counts_against_its_upstream_and_the_next_one_answers_within_the_budget(
    make_unbound: MakeUnbound, udp_blackhole: Blackhole
) -> None:
    up = make_unbound(CLUSTER_ZONES)
    with inproc(_corefile(udp_blackhole.address, up.address)) as h:
        fwd = _forward(h)
        dark, good = fwd.proxies
        data = query("kubernetes.default.svc.cluster.local.", 1, qid=0x77)
        asked = up.query_count()
        t0 = time.monotonic()
        out = _handle(h, data, Exchanged(dark, None, 2.0, errno.ETIMEDOUT))
        # Not asked again (that would take its 2 s read_timeout): the worker's attempt was its one.
        assert time.monotonic() - t0 < 1.5
        assert out[:2] == b"\x00\x77" and out[3] & 0xF == 0 and out[7] == 1  # NOERROR, one answer
        assert up.query_count() == asked + 1
        assert dark._probe is not None  # forward's health check started, as for its own timeout


def test_a_native_failure_past_the_budget_is_servfail_at_once(udp_blackhole: Blackhole) -> None:
    with inproc(_corefile(udp_blackhole.address, extra="")) as h:
        dark = _forward(h).proxies[0]
        data = query("kubernetes.default.svc.cluster.local.", 1, qid=0x78)
        out = _handle(h, data, Exchanged(dark, None, 5.0, errno.ETIMEDOUT))  # forward's whole 5 s
        assert out[3] & 0xF == 2 and udp_blackhole.received <= 1  # at most the health check's probe


def test_a_refused_native_exchange_is_a_connection_refused_failure(make_unbound: MakeUnbound) -> None:
    up = make_unbound(CLUSTER_ZONES)
    with inproc(_corefile("127.0.0.1:9", up.address)) as h:
        first = _forward(h).proxies[0]
        out = _handle(
            h,
            query("kube-dns.kube-system.svc.cluster.local.", 1),
            Exchanged(first, None, 0.0, errno.ECONNREFUSED),
        )
        assert out[3] & 0xF == 0 and out[7] == 1
        assert first._probe is not None


def test_a_native_timeout_on_the_only_upstream_is_retried_there_with_the_rest_of_the_budget(
    make_unbound: MakeUnbound,
) -> None:
    up = make_unbound(CLUSTER_ZONES)
    with inproc(_corefile(up.address)) as h:
        only = _forward(h).proxies[0]
        asked = up.query_count()
        out = _handle(
            h, query("kubernetes.default.svc.cluster.local.", 1), Exchanged(only, None, 2.0, errno.ETIMEDOUT)
        )
        assert out[3] & 0xF == 0 and out[7] == 1  # forward's second pass asked it again
        assert up.query_count() >= asked + 1


def test_a_native_reply_with_a_failover_rcode_is_counted_and_the_next_upstream_asked(
    make_unbound: MakeUnbound,
) -> None:
    refusing = make_unbound({}, unknown="refuse")
    good = make_unbound(CLUSTER_ZONES)
    with inproc(_corefile(refusing.address, good.address, extra="        failover REFUSED\n")) as h:
        first = _forward(h).proxies[0]
        data = query("kubernetes.default.svc.cluster.local.", 1, qid=0x79)
        reply = _ask(refusing, data)
        assert reply[3] & 0xF == 5
        before_r, before_g = _durations(refusing.address), _durations(good.address)
        out = _handle(h, data, Exchanged(first, reply, 0.001))
        assert out[3] & 0xF == 0 and out[7] == 1
        assert _durations(refusing.address).get("REFUSED", 0) == before_r.get("REFUSED", 0) + 1
        assert _durations(good.address).get("NOERROR", 0) == before_g.get("NOERROR", 0) + 1
