"""The upstream helpers are real: each is checked with dig and dnspython over loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from support.ports import free_port, is_free
from support.upstreams import (
    CLUSTER_ZONES,
    PROBE_NAME,
    Blackhole,
    SlowProxy,
    TcpBlackhole,
    UpstreamServer,
    bad_reply_server,
    blackhole_udp,
    closed_port,
    dnsmasq_server,
    probe,
    slow_proxy,
    tcp_accept_close,
    tcp_blackhole,
    unbound_server,
)


def dig(server: str, port: int, *args: str) -> str:
    out = subprocess.run(
        ["dig", f"@{server}", "-p", str(port), "+tries=1", "+timeout=1", *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return out.stdout


def ask(
    server: UpstreamServer | tuple[str, int],
    name: str,
    rdtype: str = "A",
    tcp: bool = False,
    timeout: float = 2,
) -> dns.message.Message:
    host, port = server.hostport if isinstance(server, UpstreamServer) else server
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, host, port=port, timeout=timeout)
    return dns.query.udp(q, host, port=port, timeout=timeout)


def test_free_port_is_free_for_udp_and_tcp_and_never_repeats() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for port in ports[:5]:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", ports[5]))
        assert not is_free(ports[5], "udp")
        assert not is_free(ports[5], "both")
        assert is_free(ports[5], "tcp")


def test_unbound_serves_local_data() -> None:
    with unbound_server(CLUSTER_ZONES) as up:
        assert up.address == f"127.0.0.1:{up.port}"
        assert dig("127.0.0.1", up.port, "+short", "kubernetes.default.svc.cluster.local").split() == [
            "198.18.0.1"
        ]
        assert sorted(dig("127.0.0.1", up.port, "+short", "web.default.svc.cluster.local").split()) == [
            "198.18.1.1",
            "198.18.1.2",
        ]
        srv = ask(up, "_http._tcp.web.default.svc.cluster.local", "SRV")
        assert srv.answer[0].rdtype == dns.rdatatype.SRV
        assert [r.target.to_text() for r in srv.answer[0]] == ["web.default.svc.cluster.local."]
        ptr = dig("127.0.0.1", up.port, "+short", "-x", "198.18.0.1")
        assert ptr.strip() == "kubernetes.default.svc.cluster.local."


def test_unbound_negative_answers_carry_the_zone_soa() -> None:
    with unbound_server(CLUSTER_ZONES, negative_ttl=7) as up:
        nx = ask(up, "nope.svc.cluster.local")
        assert nx.rcode() == dns.rcode.NXDOMAIN
        assert [(rr.name.to_text(), rr.rdtype, rr.ttl) for rr in nx.authority] == [
            ("cluster.local.", dns.rdatatype.SOA, 7)
        ]
        nodata = ask(up, "kubernetes.default.svc.cluster.local", "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR
        assert nodata.answer == []
        assert nodata.authority[0].rdtype == dns.rdatatype.SOA
        assert nodata.authority[0][0].minimum == 7


def test_unbound_answers_unknown_names_locally_and_never_recurses() -> None:
    with unbound_server(CLUSTER_ZONES, local_data=["only-a.example. 30 IN A 198.18.9.9"]) as up:
        start = time.monotonic()
        assert ask(up, "www.example.com").rcode() == dns.rcode.REFUSED
        # A name that has local data but not this type falls through its implicit transparent
        # zone: still answered here without recursion.
        assert ask(up, "only-a.example", "AAAA").rcode() == dns.rcode.REFUSED
        assert "status: REFUSED" in dig("127.0.0.1", up.port, "kubernetes.io")
        assert time.monotonic() - start < 2.0  # local answers: no resolution timeouts
        up.stop()
        assert up.recursions() == 0
    with unbound_server(CLUSTER_ZONES, unknown="nxdomain") as up:
        reply = ask(up, "www.example.com")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.authority[0].name.to_text() == "."
        up.stop()
        assert up.recursions() == 0


def test_unbound_query_log_is_complete_as_soon_as_the_reply_arrives() -> None:
    with unbound_server(CLUSTER_ZONES) as up:
        assert up.query_count() == 0  # the readiness probe is not counted
        for _ in range(5):
            ask(up, "kubernetes.default.svc.cluster.local")
            # No waiting: unbound flushes the line before it answers.
        assert up.query_count() == 5
        ask(up, "KUBERNETES.default.svc.cluster.local", "AAAA", tcp=True)
        assert up.query_count("kubernetes.default.svc.cluster.local.") == 6
        assert up.query_count("kubernetes.default.svc.cluster.local", "AAAA") == 1
        assert up.queries()[0].name == "kubernetes.default.svc.cluster.local."
        assert all(q.client == "127.0.0.1" for q in up.queries())
        up.reset_queries()
        assert up.query_count() == 0
        ask(up, "web.default.svc.cluster.local")
        assert up.wait_for_queries(1) == 1
        assert probe(up.host, up.port)
        assert PROBE_NAME not in {q.name for q in up.queries()}


def test_unbound_tcp_only_and_udp_only() -> None:
    with unbound_server(CLUSTER_ZONES, udp=False) as up:
        assert not probe(up.host, up.port, tcp=False)
        assert "198.18.0.1" in dig(
            "127.0.0.1", up.port, "+tcp", "+short", "kubernetes.default.svc.cluster.local"
        )
        assert ask(up, "kubernetes.default.svc.cluster.local", tcp=True).answer
        assert up.query_count() == 2
    with unbound_server(CLUSTER_ZONES, tcp=False) as up:
        assert probe(up.host, up.port, tcp=False)
        assert not probe(up.host, up.port, tcp=True)


def test_unbound_can_be_stopped_and_restarted_on_the_same_port() -> None:
    with unbound_server(CLUSTER_ZONES) as up:
        port, pid = up.port, up.pid
        assert pid is not None
        up.stop()
        assert not up.running
        assert not probe("127.0.0.1", port)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        up.start()
        assert up.port == port and up.pid != pid
        assert ask(up, "kubernetes.default.svc.cluster.local").answer


def test_unbound_is_killed_and_cleaned_up_when_the_block_raises() -> None:
    with pytest.raises(KeyError), unbound_server(CLUSTER_ZONES) as up:
        pid, workdir = up.pid, up.workdir
        raise KeyError("boom")
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not workdir.exists()


def test_unbound_rejects_a_bad_record() -> None:
    with (
        pytest.raises(ValueError, match="bad unbound config"),
        unbound_server({"x.": ["x. 30 IN A not-an-ip"]}),
    ):
        pass


def test_unbound_on_ipv6_loopback() -> None:
    with unbound_server(CLUSTER_ZONES, ipv6=True) as up:
        assert dig("::1", up.port, "+short", "kubernetes.default.svc.cluster.local").split() == ["198.18.0.1"]
        assert up.address6 == f"[::1]:{up.port}"
        assert up.queries()[-1].client == "::1"


def test_unbound_redirect_zone_answers_every_name_under_it() -> None:
    with unbound_server(
        {"miss.test.": ["miss.test. 60 IN A 198.18.5.5"]}, zone_types={"miss.test.": "redirect"}
    ) as up:
        for name in ("a.miss.test", "x.y.z.miss.test"):
            reply = ask(up, name)
            assert reply.answer[0].name.to_text() == name + "."
            assert reply.answer[0][0].address == "198.18.5.5"


def test_dnsmasq_serves_records_and_counts_queries() -> None:
    records = [
        ("a.cluster.local", "A", "198.18.0.7"),
        ("a.cluster.local", "AAAA", "fd00::7"),
        ("t.cluster.local", "TXT", "hello"),
    ]
    with dnsmasq_server(records) as up:
        assert up.query_count() == 0
        assert dig("127.0.0.1", up.port, "+short", "a.cluster.local").split() == ["198.18.0.7"]
        assert dig("127.0.0.1", up.port, "+short", "a.cluster.local", "AAAA").split() == ["fd00::7"]
        txt = ask(up, "t.cluster.local", "TXT")
        assert txt.answer[0].ttl == 30
        assert [s for r in txt.answer[0] for s in r.strings] == [b"hello"]
        nx = ask(up, "missing.cluster.local")
        assert nx.rcode() == dns.rcode.NXDOMAIN
        assert nx.authority == []  # dnsmasq never adds an SOA: such NXDOMAINs are uncacheable
        assert ask(up, "example.com").rcode() == dns.rcode.REFUSED
        assert ask(up, "a.cluster.local", tcp=True).answer
        assert up.query_count() == 6
        assert up.query_count("a.cluster.local", "A") == 2
        assert up.query_count("example.com.") == 1


def test_blackhole_udp_swallows_queries() -> None:
    with blackhole_udp() as hole:
        with pytest.raises(dns.exception.Timeout):
            ask((hole.host, hole.port), "kubernetes.default.svc.cluster.local", timeout=0.3)
        assert "timed out" in dig(hole.host, hole.port, "x.cluster.local")
        deadline = time.monotonic() + 2
        while hole.received < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hole.received == 2


def test_closed_port_refuses_udp_and_tcp() -> None:
    end = closed_port()
    assert "connection refused" in dig(end.host, end.port, "x.cluster.local")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(end.hostport)
        s.send(dns.message.make_query("x.", "A").to_wire())
        s.settimeout(1)
        with pytest.raises(ConnectionRefusedError):
            s.recv(512)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(end.hostport, timeout=1).close()


def test_slow_proxy_delays_udp_and_tcp_in_front_of_a_real_server() -> None:
    with unbound_server(CLUSTER_ZONES) as up, slow_proxy(up, 0.5) as proxy:
        for tcp in (False, True):
            start = time.monotonic()
            reply = ask((proxy.host, proxy.port), "kubernetes.default.svc.cluster.local", tcp=tcp)
            assert time.monotonic() - start >= 0.5
            assert reply.answer[0][0].address == "198.18.0.1"
        assert "198.18.0.1" in dig(proxy.host, proxy.port, "+short", "kubernetes.default.svc.cluster.local")
        proxy.delay_s = 0.0
        start = time.monotonic()
        ask((proxy.host, proxy.port), "web.default.svc.cluster.local")
        assert time.monotonic() - start < 0.5
        assert up.query_count() == 4
        assert (proxy.udp_relayed, proxy.tcp_connections) == (3, 1)


def test_tcp_blackhole_holds_and_tcp_accept_close_closes() -> None:
    with tcp_blackhole() as hole:
        with pytest.raises(dns.exception.Timeout):
            ask((hole.host, hole.port), "x.cluster.local", tcp=True, timeout=0.3)
        assert hole.accepted == 1
        assert not probe(hole.host, hole.port, tcp=False)  # nothing on UDP
    with tcp_accept_close() as closer:
        with pytest.raises((EOFError, ConnectionResetError)):
            ask((closer.host, closer.port), "x.cluster.local", tcp=True, timeout=1)
        # RST if dig's query reached the socket before the close, a plain FIN (EOF) if not: both
        # are "the server hung up", which is all the fixture promises.
        out = dig(closer.host, closer.port, "+tcp", "x.cluster.local")
        assert "connection reset" in out or "end of file" in out, out
        assert closer.accepted >= 2


def test_fixtures_start_and_stop_servers(
    make_unbound: Callable[..., UpstreamServer],
    make_slow_proxy: Callable[..., SlowProxy],
) -> None:
    a = make_unbound(CLUSTER_ZONES)
    b = make_unbound({"other.test.": ["x.other.test. 5 IN A 198.18.7.7"]}, udp=False)
    proxy = make_slow_proxy(a, 0.0)
    assert a.port != b.port
    assert ask(b, "x.other.test", tcp=True).answer[0][0].address == "198.18.7.7"
    assert ask((proxy.host, proxy.port), "kubernetes.default.svc.cluster.local").answer
    assert a.query_count() == 1 and b.query_count() == 1


def test_fixture_servers_and_endpoints(
    unbound_upstream: UpstreamServer,
    make_dnsmasq: Callable[..., UpstreamServer],
    udp_blackhole: Blackhole,
    tcp_hold: TcpBlackhole,
    tcp_close: TcpBlackhole,
) -> None:
    assert ask(unbound_upstream, "kubernetes.default.svc.cluster.local").answer[0][0].address == "198.18.0.1"
    dm = make_dnsmasq([("a.cluster.local", "A", "198.18.0.7")])
    assert ask(dm, "a.cluster.local").answer[0][0].address == "198.18.0.7"
    assert not probe(udp_blackhole.host, udp_blackhole.port)
    assert not probe(tcp_hold.host, tcp_hold.port, tcp=True)
    assert not probe(tcp_close.host, tcp_close.port, tcp=True)
    assert (tcp_hold.accepted, tcp_close.accepted) == (1, 1)


@pytest.mark.parametrize("mode", ["truncated", "bad_pointer", "wrong_counts", "rdata_pointer"])
def test_bad_reply_server_sends_what_a_parser_rejects(mode: str) -> None:
    with bad_reply_server("good") as srv:
        for tcp in (False, True):
            assert ask(srv.hostport, "x.example.", tcp=tcp).answer  # the control: intact replies parse
        srv.mode = mode
        for tcp in (False, True):
            with pytest.raises(dns.exception.FormError):
                ask(srv.hostport, "x.example.", tcp=tcp)
        assert srv.answered == 4
