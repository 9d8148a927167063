"""dns64 end to end: ``nodelocaldns serve`` over a real unbound, counted at the upstream and on /metrics."""

from __future__ import annotations

import socket
from collections.abc import Callable

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from support.ports import free_port
from support.server import serve
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
ZONES = {
    "cluster.local.": [
        "v4.cluster.local. 30 IN A 198.18.0.5",
        "v4.cluster.local. 30 IN A 198.18.0.6",
        "both.cluster.local. 30 IN A 198.18.0.7",
        "both.cluster.local. 30 IN AAAA fd00::7",
    ]
}


def corefile(dns64: str, up: UpstreamServer, metrics: int, bind: str = "127.0.0.1") -> str:
    return (f".:{{PORT}} {{\n    bind {bind}\n    {dns64}\n    cache 30\n    forward . {up.address}\n"
            f"    prometheus 127.0.0.1:{metrics}\n}}\n")  # fmt: skip


def aaaa(host: str, port: int, name: str) -> list[str]:
    r = dns.query.udp(dns.message.make_query(name, "AAAA"), host, port=port, timeout=3)
    return sorted(rr.address for rrs in r.answer for rr in rrs if rrs.rdtype == dns.rdatatype.AAAA)


def translated(metrics: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
        text = r.read().decode()
    return "\n".join(
        line for line in text.splitlines() if line.startswith("coredns_dns64_requests_translated_total")
    )


def test_ipv4_only_name_gets_synthesised_aaaa_and_both_answers_are_cached(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    m = free_port("tcp")
    with serve(corefile("dns64 {\n        allow_ipv4\n    }", up, m)) as s:
        for _ in range(3):
            assert aaaa("127.0.0.1", s.port, "v4.cluster.local.") == ["64:ff9b::c612:5", "64:ff9b::c612:6"]
        assert aaaa("127.0.0.1", s.port, "both.cluster.local.") == ["fd00::7"]  # has AAAA: untouched
        # The AAAA and the A lookup reached unbound once each; the repeats were cache hits.
        assert up.query_count("v4.cluster.local.", "AAAA") == 1
        assert up.query_count("v4.cluster.local.", "A") == 1
        assert (
            translated(m)
            == f'coredns_dns64_requests_translated_total{{server="dns://127.0.0.1:{s.port}"}} 3.0'
        )


def test_ipv4_clients_are_not_translated_without_allow_ipv4(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)
    m = free_port("tcp")
    with serve(corefile("dns64", up, m)) as s:
        assert aaaa("127.0.0.1", s.port, "v4.cluster.local.") == []
        assert translated(m) == ""


def test_ipv6_client_prefix_and_translate_all(make_unbound: MakeUnbound) -> None:
    if not socket.has_ipv6:
        raise AssertionError("IPv6 loopback is required")
    up = make_unbound(ZONES)
    m = free_port("tcp")
    with serve(corefile("dns64 {\n        prefix 64:1337::/96\n        translate_all\n    }", up, m, "::1"),
               wait=False) as s:  # fmt: skip
        import time

        deadline = time.monotonic() + 10
        while True:
            try:
                got = aaaa("::1", s.port, "both.cluster.local.")
                break
            except (OSError, dns.exception.Timeout):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert got == ["64:1337::c612:7"]  # translate_all: the real AAAA is replaced
