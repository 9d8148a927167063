"""plugins/forward below the server: upstream parsing, policies, reply matching, and the handler in-process
against real sockets (unbound, a closed port, and a hand-driven UDP peer that sends spoofed replies)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest

from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire
from nodelocaldns.errors import UpstreamError
from nodelocaldns.plugins.forward.handler import ForwardHandler, health_probe
from nodelocaldns.plugins.forward.metrics import ForwardCounters
from nodelocaldns.plugins.forward.policy import Policy
from nodelocaldns.plugins.forward.proxy import Proxy, reply_matches, with_id
from nodelocaldns.plugins.forward.setup import (
    ForwardConfig,
    Upstream,
    parse_upstream,
    resolv_conf_nameservers,
)
from nodelocaldns.server.chain import NoNextPlugin
from support.upstreams import UpstreamServer, closed_port

MakeUnbound = Callable[..., UpstreamServer]
ZONES = {"cluster.local.": ["web.default.svc.cluster.local. 30 IN A 198.18.1.1"]}


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("10.0.0.10", "10.0.0.10", 53),
        ("10.0.0.10:5353", "10.0.0.10", 5353),
        ("dns://10.0.0.10", "10.0.0.10", 53),
        ("dns://10.0.0.10:54", "10.0.0.10", 54),
        ("fd00::10", "fd00::10", 53),
        ("[fd00::10]:5353", "fd00::10", 5353),
        ("dns://[fd00::10]", "fd00::10", 53),
        ("tls://10.0.0.10", "10.0.0.10", 853),
        ("tls://10.0.0.10:10853", "10.0.0.10", 10853),
        ("tls://[fd00::10]:8853", "fd00::10", 8853),
    ],
)
def test_parse_upstream(text: str, host: str, port: int) -> None:
    up = parse_upstream(text)
    assert (up.host, up.port) == (host, port)
    assert up.tls == text.startswith("tls://")
    assert up.label == (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


@pytest.mark.parametrize(
    ("text", "host", "port", "name"),
    [  # CoreDNS setup_test.go splitZone cases: the name sits between % and an optional :port
        ("tls://9.9.9.9%dns.quad9.net", "9.9.9.9", 853, "dns.quad9.net"),
        ("tls://9.9.9.9%dns.quad9.net:10853", "9.9.9.9", 10853, "dns.quad9.net"),
        ("tls://[2001:db8::1%dns.example]:8853", "2001:db8::1", 8853, "dns.example"),
        ("tls://[2001:db8::1%dns.example]", "2001:db8::1", 853, "dns.example"),
    ],
)
def test_parse_upstream_per_endpoint_servername(text: str, host: str, port: int, name: str) -> None:
    up = parse_upstream(text)
    assert (up.host, up.port, up.tls, up.server_name) == (host, port, True, name)


@pytest.mark.parametrize("text", ["https://dns.example/dns-query", "grpc://10.0.0.1", "example.org", "10.0.0.10:0",
                                  "10.0.0.10:70000", "[fd00::1]x", "10.0.0.300"])  # fmt: skip
def test_parse_upstream_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_upstream(text)


def test_resolv_conf_nameservers(tmp_path: Any) -> None:
    p = tmp_path / "resolv.conf"
    p.write_text("# comment\nsearch svc.cluster.local\nnameserver 10.0.0.10\nnameserver fe80::1%eth0\noptions ndots:5\n"
                 "nameserver\n")  # fmt: skip
    assert resolv_conf_nameservers(str(p)) == ["10.0.0.10", "fe80::1%eth0"]


def test_policies() -> None:
    items = ["a", "b", "c"]
    seq = Policy("sequential")
    assert all(seq.order(items) == items for _ in range(5))
    rr = Policy("round_robin")
    assert [rr.order(items)[0] for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    rnd = Policy("random")
    firsts = {rnd.order(items)[0] for _ in range(200)}
    assert firsts == set(items)
    assert sorted(rnd.order(items)) == items


def test_health_probe_is_root_ns_with_rd() -> None:
    m = dns.message.from_wire(health_probe(".", False))
    assert (
        str(m.question[0].name) == "." and m.question[0].rdtype == dns.rdatatype.NS and m.flags & dns.flags.RD
    )
    m = dns.message.from_wire(health_probe("example.org.", True))
    assert str(m.question[0].name) == "example.org." and not m.flags & dns.flags.RD


def test_reply_matches() -> None:
    q = dns.message.make_query("Web.Example.", "A")
    q.id = 7
    data = q.to_wire()
    question = data[12:]
    r = dns.message.make_response(q)
    assert reply_matches(r.to_wire(), 7, question)
    assert not reply_matches(r.to_wire(), 8, question)  # wrong ID
    assert not reply_matches(data, 7, question)  # not a response
    lower = dns.message.make_query("web.example.", "A")
    lower.id = 7
    assert reply_matches(dns.message.make_response(lower).to_wire(), 7, question)  # case-insensitive
    other = dns.message.make_query("web.example.", "AAAA")
    other.id = 7
    assert not reply_matches(dns.message.make_response(other).to_wire(), 7, question)
    assert not reply_matches(b"\x00\x07\x80", 7, question)
    assert with_id(data, 0xABCD)[:2] == b"\xab\xcd" and with_id(data, 0xABCD)[2:] == data[2:]


def test_down_means_more_fails_than_max_fails() -> None:
    p = Proxy(Upstream("127.0.0.1", 53), 10.0, ForwardCounters())
    p.fails = 2
    assert not p.down(2)
    p.fails = 3
    assert p.down(2)
    assert not p.down(0)  # max_fails 0: never down


# -- the handler, in-process ----------------------------------------------------------------------


def request(
    name: str = "web.default.svc.cluster.local.", rdtype: str = "A", proto: str = "udp", **kw: Any
) -> Request:
    m = dns.message.make_query(name, rdtype, **kw)
    data = m.to_wire()
    return Request(
        data, wire.parse_query(data), ("127.0.0.1", 40000), proto, 1, "dns://127.0.0.1:53", ".", 0.0
    )


async def no_next(req: Request) -> Reply:
    return Reply(None, wire.SERVFAIL, error=NoNextPlugin())


def handler(*ups: str, **cfg: Any) -> tuple[ForwardHandler, ForwardCounters]:
    counters = ForwardCounters()
    fc = ForwardConfig(".", tuple(parse_upstream(u) for u in ups), **cfg)
    return ForwardHandler(fc, counters), counters


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_exchange_restores_the_client_id(make_unbound: MakeUnbound, proto: str) -> None:
    up = make_unbound(ZONES)

    async def main() -> None:
        h, counters = handler(up.address)
        try:
            req = request(proto=proto)
            r = await h.serve(req, no_next)
            assert r.wire is not None and r.wire[:2] == req.data[:2] and r.plugin == "forward"
            m = dns.message.from_wire(r.wire)
            assert m.answer and m.rcode() == dns.rcode.NOERROR
            assert sum(v[-1] > 0 for v in counters.durations.values()) == 1
            if proto == "tcp":
                assert counters.conn_misses == {(up.address, "tcp"): 1}
                await h.serve(request(proto="tcp"), no_next)
                assert counters.conn_hits == {(up.address, "tcp"): 1}
        finally:
            h.close()

    asyncio.run(main())


def test_except_and_out_of_zone_names_go_to_the_next_plugin(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)

    async def main() -> None:
        fc = ForwardConfig(
            "cluster.local.", (parse_upstream(up.address),), except_zones=("svc.cluster.local.",)
        )
        h = ForwardHandler(fc, ForwardCounters())
        try:
            assert (await h.serve(request(), no_next)).wire is None
            assert (await h.serve(request("example.org."), no_next)).wire is None
            r = await h.serve(request("cluster.local.", "SOA"), no_next)
            assert r.wire is not None
        finally:
            h.close()
        assert up.query_count("web.default.svc.cluster.local.") == 0

    asyncio.run(main())


def test_all_upstreams_down_means_one_attempt_and_one_broken_count() -> None:
    dead = closed_port()

    async def main() -> None:
        h, counters = handler(dead.address, max_fails=2, health_check=0.05)
        try:
            r = await h.serve(request(), no_next)
            assert r.wire is None and r.rcode == wire.SERVFAIL and isinstance(r.error, UpstreamError)
            assert "read udp" in str(r.error)
            for _ in range(100):  # the probe loop fails three times, 50 ms apart
                if h.proxies[0].down(2):
                    break
                await asyncio.sleep(0.02)
            assert h.proxies[0].down(2)
            assert counters.healthcheck_failures[dead.address] >= 3
            counters.healthcheck_broken = 0
            t0 = time.monotonic()
            r = await h.serve(request(), no_next)
            assert r.rcode == wire.SERVFAIL and time.monotonic() - t0 < 1
            assert counters.healthcheck_broken == 1
        finally:
            h.close()

    asyncio.run(main())


def test_max_fails_zero_never_probes() -> None:
    dead = closed_port()

    async def main() -> None:
        h, counters = handler(dead.address, max_fails=0)
        try:
            for _ in range(3):
                assert (await h.serve(request(), no_next)).rcode == wire.SERVFAIL
            await asyncio.sleep(0.1)
            assert counters.healthcheck_failures == {} and counters.healthcheck_broken == 0
        finally:
            h.close()

    asyncio.run(main())


class SpoofingPeer:
    """A UDP 'upstream' that first answers with a wrong ID and a wrong question, then correctly."""

    def __init__(self, real: UpstreamServer) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.real = real
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with self.sock:
            data, addr = self.sock.recvfrom(4096)
            q = dns.message.from_wire(data)
            bad_id = dns.message.make_response(q)
            bad_id.id = (q.id + 1) & 0xFFFF
            self.sock.sendto(bad_id.to_wire(), addr)
            other = dns.message.make_query("evil.example.", "A")
            other.id = q.id
            self.sock.sendto(dns.message.make_response(other).to_wire(), addr)
            self.sock.sendto(data[:5], addr)  # short read
            good = _ask(data, self.real)
            self.sock.sendto(good, addr)


def _ask(data: bytes, up: UpstreamServer) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(data, up.hostport)
        return s.recv(4096)


def test_mismatched_and_short_replies_are_ignored_until_the_real_one(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    peer = SpoofingPeer(up)

    async def main() -> None:
        h, _ = handler(peer.address)
        try:
            req = request()
            r = await h.serve(req, no_next)
            assert r.wire is not None
            m = dns.message.from_wire(r.wire)
            assert (
                m.id == req.q.id and str(m.question[0].name) == "web.default.svc.cluster.local." and m.answer
            )
        finally:
            h.close()

    asyncio.run(main())
    peer.thread.join(5)


def test_upstream_sees_a_fresh_id_not_the_clients(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    seen: list[int] = []

    class Recorder(SpoofingPeer):
        def run(self) -> None:
            with self.sock:
                for _ in range(3):
                    data, addr = self.sock.recvfrom(4096)
                    seen.append(int.from_bytes(data[:2], "big"))
                    self.sock.sendto(_ask(data, self.real), addr)

    peer = Recorder(up)

    async def main() -> None:
        h, _ = handler(peer.address)
        try:
            for _ in range(3):
                req = request()
                req.data = b"\x00\x01" + req.data[2:]
                r = await h.serve(req, no_next)
                assert r.wire is not None and r.wire[:2] == b"\x00\x01"
        finally:
            h.close()

    asyncio.run(main())
    peer.thread.join(5)
    assert len(seen) == 3 and len(set(seen)) == 3  # random IDs, not the client's 1


@pytest.mark.parametrize(
    ("sans", "name", "why"),
    [  # Go's x509.VerifyHostname: wildcards only as the whole left-most label, IPs only against IP SANs
        ((("DNS", "dns.test"),), "dns.test", None),
        ((("DNS", "DNS.Test"),), "dns.test.", None),
        ((("DNS", "*.example"),), "a.example", None),
        ((("DNS", "*.example"),), "a.b.example", "x509: certificate is valid for *.example, not a.b.example"),
        ((("DNS", "a*.example"),), "ab.example", "x509: certificate is valid for a*.example, not ab.example"),
        ((("IP Address", "127.0.0.1"),), "127.0.0.1", None),
        ((("IP Address", "0:0:0:0:0:0:0:1\n"),), "::1", None),
        ((("IP Address", "127.0.0.2"),), "127.0.0.1", "x509: certificate is valid for 127.0.0.2, not 127.0.0.1"),
        ((("DNS", "dns.test"),), "127.0.0.1",
         "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"),
        ((("IP Address", "127.0.0.1"),), "dns.test",
         "x509: certificate is not valid for any names, but wanted to match dns.test"),
    ],
)  # fmt: skip
def test_tls_name_check_has_go_rules_and_wording(
    sans: tuple[tuple[str, str], ...], name: str, why: str | None
) -> None:
    from nodelocaldns.plugins.forward.tlsconfig import verify_name

    got = verify_name({"subjectAltName": sans}, name)
    assert got == (None if why is None else f"tls: failed to verify certificate: {why}")


def test_tls_name_check_has_no_common_name_fallback() -> None:
    from nodelocaldns.plugins.forward.tlsconfig import verify_name

    cert = {"subject": ((("commonName", "dns.test"),),)}
    why = "x509: certificate relies on legacy Common Name field, use SANs instead"
    assert verify_name(cert, "dns.test") == f"tls: failed to verify certificate: {why}"
