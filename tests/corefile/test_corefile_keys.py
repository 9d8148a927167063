"""Server keys and zone arguments: ports, schemes, normalization, reverse CIDR expansion."""

from __future__ import annotations

import ipaddress

import dns.name
import dns.reversename
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodelocaldns.corefile import (
    Directive,
    ServerKey,
    normalize_zone,
    normalize_zones,
    origins_from_args_or_block,
    parse_server_key,
    reverse_zones,
)
from nodelocaldns.errors import CorefileError

VALID_KEYS = [
    # text, default_port, [(zone, port), ...]
    (".", 53, [(".", 53)]),
    (".:53", 53, [(".", 53)]),
    ("dns://.:1053", 53, [(".", 1053)]),
    ("DNS://Example.ORG:053", 53, [("example.org.", 53)]),
    ("cluster.local", 53, [("cluster.local.", 53)]),
    ("cluster.local.", 53, [("cluster.local.", 53)]),
    ("cluster.local", 5353, [("cluster.local.", 5353)]),
    ("cluster.local:53", 5353, [("cluster.local.", 53)]),
    ("in-addr.arpa:53", 53, [("in-addr.arpa.", 53)]),
    ("__PILLAR__DNS__DOMAIN__:53", 53, [("__pillar__dns__domain__.", 53)]),
    ("a:65535", 53, [("a.", 65535)]),
    ("a:1", 53, [("a.", 1)]),
    # reverse CIDR keys (CoreDNS plugin/pkg/cidr)
    ("10.0.0.0/8", 53, [("10.in-addr.arpa.", 53)]),
    ("10.0.0.0/8:5300", 53, [("10.in-addr.arpa.", 5300)]),
    ("10.0.0.0/15", 53, [("0.10.in-addr.arpa.", 53), ("1.10.in-addr.arpa.", 53)]),
    ("192.168.0.0/22", 53, [(f"{i}.168.192.in-addr.arpa.", 53) for i in range(4)]),
    ("172.16.0.0/12", 53, [(f"{i}.172.in-addr.arpa.", 53) for i in range(16, 32)]),
    ("10.1.2.3/24", 53, [("2.1.10.in-addr.arpa.", 53)]),  # host bits are masked off, like net.ParseCIDR
    ("10.1.2.3/32", 53, [("3.2.1.10.in-addr.arpa.", 53)]),
    ("10.1.2.3/31", 53, [("2.2.1.10.in-addr.arpa.", 53), ("3.2.1.10.in-addr.arpa.", 53)]),
    ("0.0.0.0/0", 53, [("in-addr.arpa.", 53)]),
    ("128.0.0.0/1", 53, [(f"{i}.in-addr.arpa.", 53) for i in range(128, 256)]),
    ("fd00::/8", 53, [("d.f.ip6.arpa.", 53)]),
    ("fd00::/8:5353", 53, [("d.f.ip6.arpa.", 5353)]),
    ("2001:db8::/32", 53, [("8.b.d.0.1.0.0.2.ip6.arpa.", 53)]),
    ("2001:db8::/30", 53, [(f"{i}.b.d.0.1.0.0.2.ip6.arpa.", 53) for i in "89ab"]),
    ("fd00:1:2:3::/64", 53, [("3.0.0.0.2.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.", 53)]),
    ("2001:db8::1/128", 53, [("1." + "0." * 23 + "8.b.d.0.1.0.0.2.ip6.arpa.", 53)]),
]


@pytest.mark.parametrize(("text", "default_port", "expected"), VALID_KEYS, ids=[k[0] for k in VALID_KEYS])
def test_parse_server_key(text: str, default_port: int, expected: list[tuple[str, int]]) -> None:
    keys = parse_server_key(text, "Corefile", 1, default_port=default_port)
    assert [(k.zone, k.port) for k in keys] == expected
    assert all(k.transport == "dns" and k.original == text for k in keys)


def test_label_and_name_limits_accepted_at_the_edge() -> None:
    label63 = "a" * 63
    assert parse_server_key(f"{label63}.org", "f", 1)[0].zone == f"{label63}.org."
    # 4 labels of 62 + 1 of 1: 4*63 + 2 + 1 = 255 octets on the wire, the maximum.
    longest = ".".join(["b" * 62] * 4 + ["c"])
    assert parse_server_key(longest, "f", 1)[0].zone == longest + "."


BAD_KEYS = [
    ("tls://.", "transport tls:// not supported"),
    ("grpc://.:443", "transport grpc:// not supported"),
    ("https://example.org", "transport https:// not supported"),
    ("quic://.", "transport quic:// not supported"),
    ("foo://.", "unknown scheme 'foo'"),
    ("example.org:", "expected a port after the last ':'"),
    ("example.org:0", "port 0 out of range"),
    ("example.org:65536", "port 65536 out of range"),
    ("example.org:dns", "invalid port 'dns'"),
    ("example.org:-1", "invalid port '-1'"),
    ("a:b:53", "invalid character(s) ':'"),
    ("", "empty zone"),
    ("dns://", "empty zone"),
    (":53", "empty zone"),
    ("a..b", "empty label"),
    (".example.org", "empty label"),
    ("example.org..", "empty label"),
    ("a,b", "separate keys with spaces"),
    ("{errors}", "invalid character(s) '{}'"),
    ("exämple.org", "printable ASCII"),
    ("x" * 64 + ".org", "is 64 octets, more than 63"),
    (".".join(["b" * 62] * 4 + ["cc"]), "256 octets long, more than 255"),
    ("10.0.0.0/33", "invalid CIDR"),
    ("10/8", "invalid CIDR"),
    ("10.0.0.0/255.0.0.0", "invalid CIDR"),
    ("010.0.0.0/8", "invalid CIDR"),
    ("::/0", "invalid CIDR"),
    ("0::/8", "invalid CIDR"),
    ("example.org/24", "invalid CIDR"),
]


@pytest.mark.parametrize(("text", "message"), BAD_KEYS, ids=[k[0][:30] or "empty" for k in BAD_KEYS])
def test_bad_server_key(text: str, message: str) -> None:
    with pytest.raises(CorefileError) as exc:
        parse_server_key(text, "/etc/Corefile", 7)
    assert exc.value.filename == "/etc/Corefile"
    assert exc.value.line == 7
    assert str(exc.value).startswith("/etc/Corefile:7: server key ")
    assert message in str(exc.value)


@given(st.ip_addresses(v=4), st.integers(0, 32), st.ip_addresses(v=4))
def test_ipv4_reverse_zones_cover_exactly_the_network(addr: object, prefix: int, probe: object) -> None:
    assert isinstance(addr, ipaddress.IPv4Address) and isinstance(probe, ipaddress.IPv4Address)
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    zones = [dns.name.from_text(z) for z in reverse_zones(net)]
    assert len(zones) == 2 ** ((-prefix) % 8)
    inside = probe in net
    # Probe an address inside the network too, so both outcomes are always exercised.
    member = net.network_address + (int(probe) % net.num_addresses)
    for candidate, expected in ((probe, inside), (member, True)):
        ptr = dns.reversename.from_address(str(candidate))
        assert sum(ptr.is_subdomain(z) for z in zones) == (1 if expected else 0)


@given(st.ip_addresses(v=6), st.integers(0, 128), st.ip_addresses(v=6))
def test_ipv6_reverse_zones_cover_exactly_the_network(addr: object, prefix: int, probe: object) -> None:
    assert isinstance(addr, ipaddress.IPv6Address) and isinstance(probe, ipaddress.IPv6Address)
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    zones = [dns.name.from_text(z) for z in reverse_zones(net)]
    assert len(zones) == 2 ** ((-prefix) % 4)
    member = net.network_address + (int(probe) % net.num_addresses)
    for candidate, expected in ((probe, probe in net), (member, True)):
        # dnspython maps IPv4-mapped addresses to in-addr.arpa; the nibble form is what ip6.arpa zones hold.
        ptr = dns.name.from_text(candidate.reverse_pointer)
        assert sum(ptr.is_subdomain(z) for z in zones) == (1 if expected else 0)


ZONE_ARGS = [
    (["Example.ORG"], ["example.org."]),
    (["example.org."], ["example.org."]),
    (["."], ["."]),
    (["dns://example.org:53", "b.c"], ["example.org.", "b.c."]),
    (["10.0.0.0/15", "fd00::/8"], ["0.10.in-addr.arpa.", "1.10.in-addr.arpa.", "d.f.ip6.arpa."]),
    ([], []),
]


@pytest.mark.parametrize(("args", "expected"), ZONE_ARGS)
def test_normalize_zones(args: list[str], expected: list[str]) -> None:
    assert normalize_zones(args) == expected


def test_normalize_zone_single() -> None:
    assert normalize_zone("Cluster.Local") == "cluster.local."
    assert normalize_zone("10.0.0.0/8") == "10.in-addr.arpa."
    with pytest.raises(CorefileError, match="covers 2 reverse zones"):
        normalize_zone("10.0.0.0/15")


def test_zone_errors_name_the_directive() -> None:
    d = Directive("cache", ("30", "a..b"), filename="/etc/Corefile", line=12)
    with pytest.raises(CorefileError) as exc:
        normalize_zones(d.args[1:], d)
    assert str(exc.value).startswith("/etc/Corefile:12 (directive 'cache'): zone 'a..b': empty label")
    with pytest.raises(CorefileError, match=r"/etc/Corefile:12 \(directive 'cache'\).*covers 4"):
        normalize_zone("10.0.0.0/22", d)
    with pytest.raises(CorefileError, match="zone 'foo://x': unknown scheme 'foo'"):
        normalize_zones(["foo://x"])


def test_zone_args_strip_any_known_scheme() -> None:
    # Like CoreDNS Host.NormalizeExact: a ZONES argument names a zone, the transport does not matter.
    assert normalize_zones(["tls://x:853", "grpc://y"]) == ["x.", "y."]


def test_origins_from_args_or_block() -> None:
    keys = [ServerKey("cluster.local."), ServerKey("in-addr.arpa.", 5353)]
    assert origins_from_args_or_block([], keys) == ["cluster.local.", "in-addr.arpa."]
    assert origins_from_args_or_block(["Svc.Cluster.Local"], keys) == ["svc.cluster.local."]
