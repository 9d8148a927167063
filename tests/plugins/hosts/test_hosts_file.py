"""The hosts-file parser and lookups: CoreDNS hostsfile_test.go / wildcard_test.go tables as facts."""

from __future__ import annotations

import ipaddress

import pytest

from nodelocaldns.plugins.hosts.hostsfile import HostsTable, parse_hosts, reverse_to_ip, wildcard_of

HOSTS = """255.255.255.255	broadcasthost
	127.0.0.2	odin
	127.0.0.3	odin  # inline comment
	::2             odin
	127.1.1.1	thor
	# aliases
	127.1.1.2	ullr ullrhost
	fe80::1%lo0	localhost
	# Bogus entries that must be ignored.
	123.123.123	loki
	321.321.321.321"""
SINGLE = "127.0.0.2  odin"
IPV4 = """# See https://tools.ietf.org/html/rfc1123.
	#

	# internet address and host name
	127.0.0.1	localhost	# inline comment separated by tab
	127.0.0.2	localhost       # inline comment separated by space

	# internet address, host name and aliases
	127.0.0.3	localhost	localhost.localdomain"""
IPV6 = """# See https://tools.ietf.org/html/rfc5952, https://tools.ietf.org/html/rfc4007.

	# internet address and host name
	::1						localhost	# inline comment separated by tab
	fe80:0000:0000:0000:0000:0000:0000:0001		localhost       # inline comment separated by space

	# internet address with zone identifier and host name
	fe80:0000:0000:0000:0000:0000:0000:0002%lo0	localhost

	# internet address, host name and aliases
	fe80::3%lo0					localhost	localhost.localdomain"""
CASE = """127.0.0.1	PreserveMe	PreserveMe.local
		::1		PreserveMe	PreserveMe.local"""


def table(text: str, origins: tuple[str, ...] = (".",), reverse: bool = True) -> HostsTable:
    return HostsTable(parse_hosts(text, origins, reverse))


def texts(ips: list[bytes]) -> list[str]:
    return [str(ipaddress.ip_address(b)) for b in ips]


LOOKUPS = [
    (HOSTS, "odin.", ["127.0.0.2", "127.0.0.3"], ["::2"]),
    (HOSTS, "thor.", ["127.1.1.1"], []),
    (HOSTS, "ullr.", ["127.1.1.2"], []),
    (HOSTS, "ullrhost.", ["127.1.1.2"], []),
    (HOSTS, "localhost.", [], ["fe80::1"]),
    (SINGLE, "odin.", ["127.0.0.2"], []),
    (IPV4, "localhost.", ["127.0.0.1", "127.0.0.2", "127.0.0.3"], []),
    (IPV4, "localhost.localdomain.", ["127.0.0.3"], []),
    (IPV6, "localhost.", [], ["::1", "fe80::1", "fe80::2", "fe80::3"]),
    (IPV6, "localhost.localdomain.", [], ["fe80::3"]),
    (CASE, "PreserveMe.", ["127.0.0.1"], ["::1"]),
    (CASE, "PreserveMe.local.", ["127.0.0.1"], ["::1"]),
]


@pytest.mark.parametrize(("text", "name", "v4", "v6"), LOOKUPS)
def test_lookup_static_host(text: str, name: str, v4: list[str], v6: list[str]) -> None:
    t = table(text)
    for variant in (name, name.lower(), name.upper(), name.rstrip(".").lower() + "."):
        assert texts(t.v4(variant)) == v4
        assert texts(t.v6(variant)) == v6


ADDRS = [
    (HOSTS, "255.255.255.255", ["broadcasthost."]),
    (HOSTS, "127.0.0.2", ["odin."]),
    (HOSTS, "127.0.0.3", ["odin."]),
    (HOSTS, "::2", ["odin."]),
    (HOSTS, "127.1.1.1", ["thor."]),
    (HOSTS, "127.1.1.2", ["ullr.", "ullrhost."]),
    (HOSTS, "fe80::1", ["localhost."]),
    (SINGLE, "127.0.0.2", ["odin."]),
    (IPV4, "127.0.0.1", ["localhost."]),
    (IPV4, "127.0.0.2", ["localhost."]),
    (IPV4, "127.0.0.3", ["localhost.", "localhost.localdomain."]),
    (IPV6, "::1", ["localhost."]),
    (IPV6, "fe80::1", ["localhost."]),
    (IPV6, "fe80::2", ["localhost."]),
    (IPV6, "fe80::3", ["localhost.", "localhost.localdomain."]),
    (CASE, "127.0.0.1", ["preserveme.", "preserveme.local."]),
    (CASE, "::1", ["preserveme.", "preserveme.local."]),
]


@pytest.mark.parametrize(("text", "addr", "names"), ADDRS)
def test_lookup_static_addr(text: str, addr: str, names: list[str]) -> None:
    assert table(text).names_of(addr) == names


def test_returned_lists_are_copies() -> None:
    t = table(IPV4)
    t.v4("localhost.").clear()
    t.names_of("127.0.0.3").clear()
    assert len(t.v4("localhost.")) == 3 and len(t.names_of("127.0.0.3")) == 2


def test_bogus_lines_are_skipped() -> None:
    t = table(HOSTS)
    assert t.v4("loki.") == [] and len(t.file.name4) == 5


@pytest.mark.parametrize(
    ("name", "pattern"),
    [(".", ""), ("example.com.", "*.com."), ("foo.example.com.", "*.example.com."),
     ("bar.intern.example.com.", "*.intern.example.com."), ("com.", "")],
)  # fmt: skip
def test_wildcard_pattern(name: str, pattern: str) -> None:
    assert wildcard_of(name) == pattern


WILD = """
127.0.0.53 *.example.org
127.0.1.52 *.intern.example.org
127.0.0.54 foo.example.org
192.168.33.10 *.example.com
192.168.33.11 a.example.com
192.168.33.12 b.example.com
"""


@pytest.mark.parametrize(
    ("name", "v4"),
    [("foo.example.org.", ["127.0.0.54"]), ("bar.example.org.", ["127.0.0.53"]),
     ("bar.intern.example.org.", ["127.0.1.52"]), ("a.example.com.", ["192.168.33.11"]),
     ("b.example.com.", ["192.168.33.12"]), ("c.example.com.", ["192.168.33.10"]),
     ("example.com.", []), ("deep.foo.example.org.", [])],
)  # fmt: skip
def test_wildcard_lookup(name: str, v4: list[str]) -> None:
    t = table(WILD)
    assert texts(t.v4(name)) == v4 and t.v6(name) == []


def test_wildcards_make_no_ptr() -> None:
    assert table(WILD).names_of("127.0.0.53") == []


def test_origins_filter_names_and_no_reverse_drops_ptr() -> None:
    t = table("10.0.0.1 a.example.org b.example.net", origins=("example.org.",))
    assert texts(t.v4("a.example.org.")) == ["10.0.0.1"] and t.v4("b.example.net.") == []
    assert t.names_of("10.0.0.1") == ["a.example.org."]
    t = table("10.0.0.1 a.example.org", reverse=False)
    assert t.names_of("10.0.0.1") == [] and t.v4("a.example.org.")


def test_ipv4_mapped_is_an_ipv4_entry() -> None:
    t = table("::FFFF:10.0.0.2 example.com")
    assert texts(t.v4("example.com.")) == ["10.0.0.2"] and t.v6("example.com.") == []
    assert t.names_of("10.0.0.2") == ["example.com."]


def test_file_entries_come_before_inline_entries_and_both_count() -> None:
    t = HostsTable(parse_hosts("10.0.0.1 a.\n10.0.0.2 b.", (".",)), parse_hosts("10.0.0.9 a.", (".",)))
    assert texts(t.v4("a.")) == ["10.0.0.1", "10.0.0.9"]
    assert t.names_of("10.0.0.9") == ["a."]
    assert len(t) == 6  # three addresses, three reverse names


@pytest.mark.parametrize(
    ("qname", "ip"),
    [("1.0.0.10.in-addr.arpa.", "10.0.0.1"), ("0.0.10.in-addr.arpa.", ""), ("5.4.3.2.1.in-addr.arpa.", ""),
     ("b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "2001:db8::567:89ab"),
     ("4.0.3.0.2.0.1.0.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.", "1.2.3.4"),
     ("8.b.d.0.1.0.0.2.ip6.arpa.", ""), ("example.org.", "")],
)  # fmt: skip
def test_reverse_names(qname: str, ip: str) -> None:
    assert reverse_to_ip(qname) == ip
