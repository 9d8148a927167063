"""The forward plugin end to end against real unbound/dnsmasq upstreams and real failing endpoints.

Which upstream saw a query comes from the upstreams' own logs; which transport it used is proven by
upstreams that only speak one (unbound ``do-udp: no``).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest

from nodelocaldns import native
from support.forward_e2e import (
    ZONES,
    block,
    metric,
    serve,
    wait_metric,
)
from support.ports import free_port
from support.upstreams import (
    Blackhole,
    SlowProxy,
    TcpBlackhole,
    UpstreamServer,
    _running,
    closed_port,
    unbound_config,
)

MakeUnbound = Callable[..., UpstreamServer]


def count_under(up: UpstreamServer, suffix: str) -> int:
    return sum(1 for q in up.queries() if q.name.endswith(suffix))


# -- options --------------------------------------------------------------------------------------


def test_except_skips_forward_for_those_names(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    text = block(".", f". {up.address} {{\n        except svc.cluster.local\n    }}", extra="errors")
    with serve(text) as s:
        assert s.query("big.cluster.local.", "TXT", tcp=True).answer
        for name in ("web.default.svc.cluster.local.", "svc.cluster.local."):
            assert s.query(name).rcode() == dns.rcode.SERVFAIL
            assert up.query_count(name) == 0
        log = s.stderr()
    assert "[ERROR] plugin/errors: 2 web.default.svc.cluster.local. A: no next plugin found" in log


def test_force_tcp_reaches_a_tcp_only_upstream(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES, udp=False)  # unbound do-udp: no
    text = block("cluster.local", f". {up.address} {{\n        force_tcp\n    }}") + block(
        "in-addr.arpa", f". {up.address}"
    )
    with serve(text) as s:
        r = s.query("web.default.svc.cluster.local.")  # UDP client, TCP upstream
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        assert up.query_count("web.default.svc.cluster.local.") == 1
        # Without force_tcp the client's transport is used: UDP has nobody to answer it.
        t0 = time.monotonic()
        assert s.query("1.1.18.198.in-addr.arpa.", "PTR").rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - t0 < 2
        r = s.query("1.1.18.198.in-addr.arpa.", "PTR", tcp=True)
        assert r.rcode() == dns.rcode.NOERROR and r.answer


def test_prefer_udp_retries_a_truncated_reply_over_tcp(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    name = "big.cluster.local."
    with serve(block(".", f". {up.address}", extra="cache 30")) as s:
        r = s.query(name, "TXT", tcp=True)  # TCP client, TCP upstream
        assert len(r.answer[0]) == 40
    assert up.query_count(name) == 1
    up.reset_queries()
    with serve(block(".", f". {up.address} {{\n        prefer_udp\n    }}", extra="cache 30")) as s:
        r = s.query(name, "TXT", tcp=True)  # UDP upstream first: TC=1, then the same upstream over TCP
        assert not r.flags & dns.flags.TC and len(r.answer[0]) == 40
        assert up.query_count(name) == 2
        small = s.query(name, "TXT")  # from cache, truncated to this client's 512 bytes
        assert small.flags & dns.flags.TC and not small.answer
        assert up.query_count(name) == 2


def test_without_prefer_udp_a_truncated_upstream_reply_goes_to_the_client(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    with serve(block(".", f". {up.address}")) as s:
        r = s.query("big.cluster.local.", "TXT", use_edns=0, payload=1232)
        assert r.flags & dns.flags.TC and not r.answer and r.payload == 1232
        assert up.query_count("big.cluster.local.") == 1


def test_policies_distribute_queries(make_unbound: MakeUnbound) -> None:
    a = make_unbound({}, unknown="nxdomain")
    b = make_unbound({}, unknown="nxdomain")
    text = "".join(
        block(f"{p}.test", f". {a.address} {b.address} {{\n        policy {p}\n    }}", extra="cache 30")
        for p in ("sequential", "round_robin", "random")
    )
    with serve(text) as s:
        for p in ("sequential", "round_robin", "random"):
            for i in range(20):
                assert s.query(f"n{i}.{p}.test.").rcode() == dns.rcode.NXDOMAIN
        assert (count_under(a, ".sequential.test."), count_under(b, ".sequential.test.")) == (20, 0)
        rr = (count_under(a, ".round_robin.test."), count_under(b, ".round_robin.test."))
        if native.native_available():  # each native worker rotates on its own (docs/compatibility.md)
            assert sum(rr) == 20 and min(rr) >= 5
        else:
            assert rr == (10, 10)
        ra, rb = count_under(a, ".random.test."), count_under(b, ".random.test.")
        assert ra + rb == 20 and ra > 0 and rb > 0  # all on one side: p = 2**-19


def test_failover_from_a_dead_to_a_live_upstream(make_unbound: MakeUnbound) -> None:
    live = make_unbound(ZONES)
    dead = closed_port()
    with serve(block(".", f". {dead.address} {live.address} {{\n        policy sequential\n    }}")) as s:
        for name in ("web.default.svc.cluster.local.", "api.default.svc.cluster.local."):
            t0 = time.monotonic()
            r = s.query(name)
            assert r.rcode() == dns.rcode.NOERROR and r.answer
            assert time.monotonic() - t0 < 1.0
        assert live.query_count("web.default.svc.cluster.local.") == 1


def test_health_checks_mark_an_upstream_down_and_back_up(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    quiet = make_unbound(ZONES)  # max_fails 0: never checked
    mport = free_port("tcp")
    text = block(
        ".",
        f". {up.address} {{\n        max_fails 2\n        health_check 0.2s\n    }}",
        extra=f"prometheus 127.0.0.1:{mport}",
    ) + block("in-addr.arpa", f". {quiet.address} {{\n        max_fails 0\n    }}")
    with serve(text) as s:
        name = "web.default.svc.cluster.local."
        assert s.query(name).answer
        up.stop()
        quiet.stop()
        assert s.query(name).rcode() == dns.rcode.SERVFAIL
        assert s.query("1.1.18.198.in-addr.arpa.", "PTR").rcode() == dns.rcode.SERVFAIL
        # fails > max_fails: three failed probes (closed port: each fails at once, 0.2 s apart).
        assert wait_metric(mport, "coredns_proxy_healthcheck_failures_total", 3, to=up.address) >= 3
        broken = metric(mport, "coredns_forward_healthcheck_broken_total")
        assert s.query(name).rcode() == dns.rcode.SERVFAIL
        # Every upstream is down: CoreDNS counts "health checking broken" and tries one anyway.
        assert metric(mport, "coredns_forward_healthcheck_broken_total") == broken + 1
        up.start()
        quiet.start()
        deadline = time.monotonic() + 5
        while s.query(name).rcode() != dns.rcode.NOERROR and time.monotonic() < deadline:
            time.sleep(0.1)
        assert s.query(name).answer
        assert s.query("1.1.18.198.in-addr.arpa.", "PTR").answer
        failures = metric(mport, "coredns_proxy_healthcheck_failures_total", to=up.address)
        time.sleep(0.5)  # the probe loop stopped after its first success
        assert metric(mport, "coredns_proxy_healthcheck_failures_total", to=up.address) == failures
        assert metric(mport, "coredns_proxy_healthcheck_failures_total", to=quiet.address) == 0


def test_max_concurrent_refuses_the_excess(
    make_unbound: MakeUnbound, make_slow_proxy: Callable[..., SlowProxy]
) -> None:
    up = make_unbound(ZONES)
    slow = make_slow_proxy(up, 1.0)
    mport = free_port("tcp")
    text = block(
        ".", f". {slow.address} {{\n        max_concurrent 2\n    }}", extra=f"prometheus 127.0.0.1:{mport}"
    )
    with serve(text) as s:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.connect(("127.0.0.1", s.port))
            queries = [dns.message.make_query(f"n{i}.cluster.local.", "A") for i in range(6)]
            for q in queries:
                c.send(q.to_wire())
                time.sleep(0.02)  # keep arrival order: the first two take the slots
            replies = {m.id: m for m in (dns.message.from_wire(c.recv(4096)) for _ in queries)}
        rcodes = [replies[q.id].rcode() for q in queries]
        assert rcodes[:2] == [dns.rcode.NXDOMAIN] * 2
        assert rcodes[2:] == [dns.rcode.REFUSED] * 4
        assert metric(mport, "coredns_forward_max_concurrent_rejects_total") == 4
        assert s.query("n9.cluster.local.", timeout=5).rcode() == dns.rcode.NXDOMAIN  # slots freed


def test_expire_drops_idle_pooled_connections(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    mport = free_port("tcp")
    text = block(
        ".",
        f". {up.address} {{\n        force_tcp\n        expire 1s\n    }}",
        extra=f"prometheus 127.0.0.1:{mport}",
    )
    with serve(text) as s:
        labels = {"to": up.address, "proto": "tcp"}
        hits0 = metric(mport, "coredns_proxy_conn_cache_hits_total", **labels)
        miss0 = metric(mport, "coredns_proxy_conn_cache_misses_total", **labels)
        s.query("web.default.svc.cluster.local.")  # dial
        s.query("api.default.svc.cluster.local.")  # reuse
        assert metric(mport, "coredns_proxy_conn_cache_misses_total", **labels) == miss0 + 1
        assert metric(mport, "coredns_proxy_conn_cache_hits_total", **labels) == hits0 + 1
        time.sleep(1.2)
        s.query("n1.cluster.local.")  # the pooled connection is past `expire`: dial again
        assert metric(mport, "coredns_proxy_conn_cache_misses_total", **labels) == miss0 + 2
        assert metric(mport, "coredns_proxy_conn_cache_hits_total", **labels) == hits0 + 1


@pytest.fixture
def port53_unbound() -> Iterator[UpstreamServer]:
    """unbound on 127.0.0.77:53, the only port a resolv.conf nameserver line can name."""
    host = "127.0.0.77"
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, 53))
            except OSError:
                pytest.skip(f"{host}:53 is taken")
    workdir = Path(tempfile.mkdtemp(prefix="upstream-unbound53-"))
    conf = unbound_config(port=53, workdir=workdir, zones=ZONES).replace(
        "interface: 127.0.0.1@53", f"interface: {host}@53"
    )
    (workdir / "unbound.conf").write_text(conf)
    server = UpstreamServer(host=host, port=53, kind="unbound", argv=["/usr/sbin/unbound", "-d", "-c", str(workdir / "unbound.conf")],
                            workdir=workdir, log_path=workdir / "unbound.log")  # fmt: skip
    with _running(server) as running:
        yield running


def test_resolv_conf_file_as_upstream_list(port53_unbound: UpstreamServer) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".resolv.conf", delete=False) as f:
        f.write(
            "# written by a test\nsearch default.svc.cluster.local\nnameserver 127.0.0.77\noptions ndots:5\n"
        )
    try:
        with serve(block(".", f". {f.name}")) as s:
            r = s.query("web.default.svc.cluster.local.")
            assert r.rcode() == dns.rcode.NOERROR and r.answer
        assert port53_unbound.query_count("web.default.svc.cluster.local.") == 1
    finally:
        os.unlink(f.name)


# -- failure paths --------------------------------------------------------------------------------


def test_closed_port_upstream_fails_fast(make_unbound: MakeUnbound) -> None:
    dead = closed_port()
    with serve(block(".", f". {dead.address}", extra="errors")) as s:
        for _ in range(3):
            t0 = time.monotonic()
            r = s.query("web.default.svc.cluster.local.")
            assert r.rcode() == dns.rcode.SERVFAIL and not r.answer
            assert time.monotonic() - t0 < 1.0
        log = s.stderr()
    # Go's net.OpError: the upstream socket's local address, "->", the upstream; ICMP unreachable
    # surfaces on the read as the errno Go prints in lower case.
    prefix = "[ERROR] plugin/errors: 2 web.default.svc.cluster.local. A: read udp "
    assert re.search(rf"^{re.escape(prefix)}127\.0\.0\.1:\d+->{re.escape(dead.address)}: read: connection refused$",
                     log, re.M), log  # fmt: skip


def test_blackholed_upstream_gives_servfail_within_the_budget(udp_blackhole: Blackhole) -> None:
    with serve(block(".", f". {udp_blackhole.address}", extra="errors")) as s:
        results: list[tuple[int, float]] = []

        def slow_query() -> None:
            t0 = time.monotonic()
            rcode = s.query("web.default.svc.cluster.local.", timeout=10).rcode()
            results.append((rcode, time.monotonic() - t0))

        t = threading.Thread(target=slow_query)
        t.start()
        time.sleep(0.2)
        # The listener stays responsive while a query waits on a dead upstream.
        t1 = time.monotonic()
        q = dns.message.make_query("y.cluster.local.", "A")
        q.set_opcode(dns.opcode.UPDATE)  # answered by the server itself: a bare NOTIMP
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(2)
            u.sendto(q.to_wire(), ("127.0.0.1", s.port))
            assert u.recv(512)[3] & 0xF == dns.rcode.NOTIMP
        assert time.monotonic() - t1 < 0.5
        t.join(10)
        [(rcode, took)] = results
        assert rcode == dns.rcode.SERVFAIL  # never NXDOMAIN: the name may well exist
        assert 3.0 <= took <= 6.0  # two attempts x 2 s read timeout, inside CoreDNS's 5 s budget
        assert udp_blackhole.received >= 2
        log = s.stderr()
    prefix = "[ERROR] plugin/errors: 2 web.default.svc.cluster.local. A: read udp "
    assert re.search(rf"^{re.escape(prefix)}127\.0\.0\.1:\d+->{re.escape(udp_blackhole.address)}: i/o timeout$",
                     log, re.M), log  # fmt: skip


def test_slow_upstream_is_still_answered(
    make_unbound: MakeUnbound, make_slow_proxy: Callable[..., SlowProxy]
) -> None:
    up = make_unbound(ZONES)
    slow = make_slow_proxy(up, 1.0)
    with serve(block(".", f". {slow.address}", extra="cache 30")) as s:
        t0 = time.monotonic()
        r = s.query("web.default.svc.cluster.local.", timeout=5)
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        assert 0.9 <= time.monotonic() - t0 < 2.0
        t0 = time.monotonic()
        assert s.query("web.default.svc.cluster.local.").answer
        assert time.monotonic() - t0 < 0.5  # the second one is a cache hit


def test_tcp_blackhole_with_force_tcp_gives_servfail(tcp_hold: TcpBlackhole) -> None:
    with serve(block(".", f". {tcp_hold.address} {{\n        force_tcp\n    }}", extra="errors")) as s:
        t0 = time.monotonic()
        r = s.query("web.default.svc.cluster.local.", timeout=10)
        assert r.rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - t0 <= 6.0
        log = s.stderr()
    prefix = "[ERROR] plugin/errors: 2 web.default.svc.cluster.local. A: read tcp "
    assert re.search(rf"^{re.escape(prefix)}127\.0\.0\.1:\d+->{re.escape(tcp_hold.address)}: i/o timeout$",
                     log, re.M), log  # fmt: skip


def test_tcp_refused_upstream_logs_go_dial_error() -> None:
    dead = closed_port()
    with serve(block(".", f". {dead.address} {{\n        force_tcp\n    }}", extra="errors")) as s:
        assert s.query("web.default.svc.cluster.local.").rcode() == dns.rcode.SERVFAIL
        log = s.stderr()
    # A failed dial has no local address yet: Go prints only the remote one.
    line = f"[ERROR] plugin/errors: 2 web.default.svc.cluster.local. A: dial tcp {dead.address}: connect: connection refused"
    assert re.search(rf"^{re.escape(line)}$", log, re.M), log
