"""forward's newer options end to end: next, failover, failfast_all_unhealthy_upstreams, max_age,
max_idle_conns, against real unbound upstreams through a real ``nodelocaldns serve``."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import dns.message
import dns.query
import dns.rcode

from support.forward_e2e import ZONES, block, metric, serve, wait_metric
from support.ports import free_port
from support.upstreams import SlowProxy, UpstreamServer, closed_port

MakeUnbound = Callable[..., UpstreamServer]

ONLY_B = {"b.example.": ["only.b.example. 30 IN A 198.18.2.2"]}
WEB = "web.default.svc.cluster.local."


def forwards(*lines: str, extra: str = "") -> str:
    body = "".join(f"    forward {line}\n" for line in lines)
    return f".:{{PORT}} {{\n    bind 127.0.0.1\n    {extra}\n{body}}}\n"


def test_next_hands_a_matching_rcode_to_the_next_forward(make_unbound: MakeUnbound) -> None:
    a = make_unbound(ZONES, unknown="nxdomain")
    b = make_unbound(ONLY_B)
    with serve(forwards(f". {a.address} {{\n        next NXDOMAIN\n    }}", f". {b.address}")) as s:
        r = s.query("only.b.example.")
        assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].address == "198.18.2.2"
        assert a.query_count("only.b.example.") == 1 and b.query_count("only.b.example.") == 1
        assert s.query(WEB).answer  # a NOERROR from the first forward stands
        assert b.query_count(WEB) == 0


def test_next_on_the_last_forward_is_ignored(make_unbound: MakeUnbound) -> None:
    a = make_unbound(ZONES, unknown="nxdomain")
    with serve(forwards(f". {a.address} {{\n        next NXDOMAIN\n    }}")) as s:
        # No forward follows: the upstream's NXDOMAIN goes to the client (not "no next plugin").
        assert s.query("only.b.example.").rcode() == dns.rcode.NXDOMAIN


def test_failover_tries_the_next_upstream_on_a_listed_rcode(make_unbound: MakeUnbound) -> None:
    refusing = make_unbound(ZONES)  # refuses every name outside its zones
    good = make_unbound(ONLY_B)
    opts = "{\n        policy sequential\n        failover SERVFAIL REFUSED\n    }"
    with serve(forwards(f". {refusing.address} {good.address} {opts}")) as s:
        r = s.query("only.b.example.")
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        assert refusing.query_count("only.b.example.") == 1
    with serve(forwards(f". {refusing.address} {good.address} {{\n        policy sequential\n    }}")) as s:
        assert s.query("only.b.example.").rcode() == dns.rcode.REFUSED  # without failover


def test_failover_returns_the_last_reply_when_every_upstream_matches(make_unbound: MakeUnbound) -> None:
    ups = [make_unbound(ZONES) for _ in range(3)]
    opts = "{\n        policy sequential\n        failover REFUSED\n    }"
    with serve(forwards(f". {' '.join(u.address for u in ups)} {opts}")) as s:
        assert s.query("only.b.example.").rcode() == dns.rcode.REFUSED
        # Each upstream asked exactly once (CoreDNS stops after len(upstreams) failovers).
        assert [u.query_count("only.b.example.") for u in ups] == [1, 1, 1]


def test_failfast_all_unhealthy_upstreams() -> None:
    fast, slow = closed_port(), closed_port()
    mport = free_port("tcp")
    hc = "max_fails 1\n        health_check 0.1s"
    text = (
        f"a.example:{{PORT}} {{\n    bind 127.0.0.1\n    errors\n    prometheus 127.0.0.1:{mport}\n"
        f"    forward . {fast.address} {{\n        {hc}\n        failfast_all_unhealthy_upstreams\n    }}\n}}\n"
        f"b.example:{{PORT}} {{\n    bind 127.0.0.1\n    errors\n"
        f"    forward . {slow.address} {{\n        {hc}\n    }}\n}}\n"
    )
    with serve(text) as s:
        assert s.query("x.a.example.").rcode() == dns.rcode.SERVFAIL  # starts the health checks
        assert s.query("x.b.example.").rcode() == dns.rcode.SERVFAIL
        for up in (fast, slow):  # fails > max_fails: down
            assert wait_metric(mport, "coredns_proxy_healthcheck_failures_total", 2, to=up.address) >= 2
        broken = metric(mport, "coredns_forward_healthcheck_broken_total")
        assert s.query("y.a.example.").rcode() == dns.rcode.SERVFAIL
        assert s.query("y.b.example.").rcode() == dns.rcode.SERVFAIL
        assert metric(mport, "coredns_forward_healthcheck_broken_total") == broken + 2
        log = s.stderr()
    # failfast: no attempt at all; without it one random upstream is still tried.
    assert re.search(r"^\[ERROR\] plugin/errors: 2 y\.a\.example\. A: no healthy proxies$", log, re.M), log
    assert re.search(
        rf"^\[ERROR\] plugin/errors: 2 y\.b\.example\. A: read udp 127\.0\.0\.1:\d+->{re.escape(slow.address)}: "
        r"read: connection refused$",
        log,
        re.M,
    ), log


def _parallel(port: int, names: list[str]) -> list[int]:
    out: list[int] = []

    def one(name: str) -> None:
        r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)
        out.append(r.rcode())

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_max_idle_conns_caps_the_pool(
    make_unbound: MakeUnbound, make_slow_proxy: Callable[..., SlowProxy]
) -> None:
    up = make_unbound(ZONES, unknown="nxdomain")
    slow = make_slow_proxy(up, 0.3)  # two queries overlap, so each needs its own connection
    mport = free_port("tcp")
    for idle, hits in ((1, 1), (0, 2)):
        opts = f"{{\n        force_tcp\n        max_idle_conns {idle}\n    }}"
        with serve(block(".", f". {slow.address} {opts}", extra=f"prometheus 127.0.0.1:{mport}")) as s:
            labels = {"to": slow.address, "proto": "tcp"}
            h0 = metric(mport, "coredns_proxy_conn_cache_hits_total", **labels)
            m0 = metric(mport, "coredns_proxy_conn_cache_misses_total", **labels)
            assert _parallel(s.port, ["n1.example.", "n2.example."]) == [dns.rcode.NXDOMAIN] * 2
            assert metric(mport, "coredns_proxy_conn_cache_misses_total", **labels) == m0 + 2
            # max_idle_conns 1 kept one of the two connections; 0 (unlimited) kept both.
            assert _parallel(s.port, ["n3.example.", "n4.example."]) == [dns.rcode.NXDOMAIN] * 2
            assert metric(mport, "coredns_proxy_conn_cache_hits_total", **labels) == h0 + hits
            assert metric(mport, "coredns_proxy_conn_cache_misses_total", **labels) == m0 + 2 + (2 - hits)


def test_max_age_closes_a_busy_connection(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES, unknown="nxdomain")
    mport = free_port("tcp")
    opts = "{\n        force_tcp\n        expire 2s\n        max_age 2s\n    }"
    with serve(block(".", f". {up.address} {opts}", extra=f"prometheus 127.0.0.1:{mport}")) as s:
        labels = {"to": up.address, "proto": "tcp"}
        h0 = metric(mport, "coredns_proxy_conn_cache_hits_total", **labels)
        m0 = metric(mport, "coredns_proxy_conn_cache_misses_total", **labels)
        s.query("n1.example.")  # dial
        time.sleep(1.2)
        s.query("n2.example.")  # reuse: idle 1.2 s < expire
        time.sleep(1.2)
        s.query("n3.example.")  # idle 1.2 s again, but opened 2.4 s ago > max_age: dial
        assert metric(mport, "coredns_proxy_conn_cache_hits_total", **labels) == h0 + 1
        assert metric(mport, "coredns_proxy_conn_cache_misses_total", **labels) == m0 + 2
