"""dns64 synthesis on the wire: CoreDNS dns64_test.go (TestTo6, TestResponseShould, TestDNS64) as facts."""

from __future__ import annotations

import ipaddress
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from nodelocaldns.dns.wire import parse_query
from nodelocaldns.plugins.dns64.metrics import DNS64Counters
from nodelocaldns.plugins.dns64.setup import DNS64Config
from nodelocaldns.plugins.dns64.synth import (
    a_query,
    intercepts,
    rrsig_valid,
    should_translate,
    synthesize,
    to6,
)

CFG = DNS64Config()


@pytest.mark.parametrize(
    ("prefix", "v4", "v6"),
    [("64:ff9b::/96", "64.64.64.64", "64:ff9b::4040:4040"), ("64:ff9b::/64", "64.64.64.64", "64:ff9b::40:4040:4000:0"),
     ("64:ff9b::/56", "64.64.64.64", "64:ff9b:0:40:40:4040::"), ("64::/32", "64.64.64.64", "64:0:4040:4040::"),
     ("2001:db8:100::/40", "192.0.2.33", "2001:db8:1c0:2:21::"), ("2001:db8:122::/48", "192.0.2.33", "2001:db8:122:c000:2:2100::")],
)  # fmt: skip
def test_to6(prefix: str, v4: str, v6: str) -> None:
    got = to6(ipaddress.IPv6Network(prefix), ipaddress.IPv4Address(v4).packed)
    assert str(ipaddress.IPv6Address(got)) == v6


def msg(rcode: int = 0, answer: list[str] = (), authority: list[str] = (), qtype: str = "AAAA",  # type: ignore[assignment]
        flags: int = 0, qid: int = 42) -> bytes:  # fmt: skip
    m = dns.message.make_query("example.com.", qtype)
    m.id = qid
    m.flags = dns.flags.QR | dns.flags.RD | flags
    m.set_rcode(rcode)
    m.answer = [rrset(a) for a in answer]
    m.authority = [rrset(a) for a in authority]
    return m.to_wire()


def rrset(text: str) -> dns.rrset.RRset:
    name, ttl, cls, typ, *rest = text.split()
    return dns.rrset.from_text(name, int(ttl), cls, typ, " ".join(rest))


SOA = "example.com. 1 IN SOA foo. bar. 1 1 1 1 1"


@pytest.mark.parametrize(
    ("reply", "translate_all", "expected"),
    [(msg(answer=["example.com. 1 IN AAAA ::1"]), False, False), (msg(authority=[SOA]), False, True),
     (msg(rcode=dns.rcode.NOTIMP, authority=[SOA]), False, True), (msg(rcode=dns.rcode.NXDOMAIN, authority=[SOA]), False, False),
     (msg(answer=["example.com. 1 IN AAAA ::1"]), True, True), (msg(rcode=dns.rcode.NXDOMAIN), False, False),
     (msg(rcode=dns.rcode.NXDOMAIN, answer=["example.com. 1 IN CNAME a.example.com."]), False, True),
     (msg(rcode=dns.rcode.SERVFAIL), False, True), (msg(rcode=dns.rcode.REFUSED), False, True)],
)  # fmt: skip
def test_response_should(reply: bytes, translate_all: bool, expected: bool) -> None:
    assert should_translate(DNS64Config(translate_all=translate_all), reply, time.time()) is expected


def test_rrsig_validity_window() -> None:
    rdata = bytes(8) + (2000).to_bytes(4, "big") + (1000).to_bytes(4, "big") + bytes(2)
    assert rrsig_valid(rdata, 1500) and not rrsig_valid(rdata, 2500) and not rrsig_valid(rdata, 500)


def test_expired_rrsig_with_do_makes_nxdomain_translatable() -> None:
    m = dns.message.make_query("example.com.", "AAAA", want_dnssec=True)
    m.flags = dns.flags.QR
    m.set_rcode(dns.rcode.NXDOMAIN)
    sig = "example.com. 1 IN RRSIG SOA 8 2 1 20000101000000 19990101000000 1 example.com. AAAA"
    m.authority = [rrset(sig)]
    assert should_translate(CFG, m.to_wire(), time.time())
    m.use_edns(0, 0, 1232)  # DO clear: the signature is not looked at
    assert not should_translate(CFG, m.to_wire(), time.time())


def test_intercepts() -> None:
    aaaa = dns.message.make_query("example.com", "AAAA").to_wire()
    a = dns.message.make_query("example.com", "A").to_wire()
    ch = dns.message.make_query("example.com", "AAAA", rdclass="CH").to_wire()
    assert intercepts(DNS64Config(allow_ipv4=True), parse_query(aaaa), 2)
    assert intercepts(DNS64Config(allow_ipv4=True), parse_query(aaaa), 1)
    assert not intercepts(CFG, parse_query(aaaa), 1)
    assert not intercepts(CFG, parse_query(a), 2) and not intercepts(CFG, parse_query(ch), 2)


def query() -> bytes:
    m = dns.message.make_query("Example.COM.", "AAAA", use_edns=0, payload=1232)
    m.id = 42
    return m.to_wire()


def run(aaaa_reply: bytes, a_reply: bytes | None) -> dns.message.Message:
    data = query()
    return dns.message.from_wire(
        synthesize(CFG, data, parse_query(data), aaaa_reply, a_reply), one_rr_per_rrset=True
    )


def texts(section: list[dns.rrset.RRset]) -> list[str]:
    return [line for r in section for line in r.to_text().splitlines()]


def test_standard_flow_ttls_capped_by_soa() -> None:
    out = run(msg(authority=["example.com. 70 IN SOA foo. bar. 1 1 1 1 1"]),
              msg(qtype="A", qid=43, answer=["example.com. 60 IN A 192.0.2.42", "example.com. 5000 IN A 192.0.2.43"]))  # fmt: skip
    assert (
        out.id == 42
        and out.rcode() == 0
        and out.flags & dns.flags.RD
        and not out.flags & (dns.flags.AA | dns.flags.RA)
    )
    assert out.question[0].name.to_text() == "Example.COM." and out.question[0].rdtype == 28
    assert texts(out.answer) == [
        "example.com. 60 IN AAAA 64:ff9b::c000:22a",
        "example.com. 70 IN AAAA 64:ff9b::c000:22b",
    ]
    assert out.edns == -1  # no OPT: the server adds the client's


def test_a_empty_keeps_the_a_replys_authority() -> None:
    soa = "example.com. 3600 IN SOA foo. bar. 1 7200 900 1209600 86400"
    out = run(msg(authority=[soa]), msg(qtype="A", authority=[soa]))
    assert out.answer == [] and texts(out.authority) == [soa]


def test_error_reply_translates_with_default_ttl_600() -> None:
    aaaa = msg(rcode=dns.rcode.REFUSED)
    assert should_translate(CFG, aaaa, time.time())
    out = run(
        aaaa, msg(qtype="A", answer=["example.com. 60 IN A 192.0.2.42", "example.com. 5000 IN A 192.0.2.43"])
    )
    assert texts(out.answer) == [
        "example.com. 60 IN AAAA 64:ff9b::c000:22a",
        "example.com. 600 IN AAAA 64:ff9b::c000:22b",
    ]


def test_truncated_a_reply_sets_tc() -> None:
    out = run(msg(authority=["example.com. 70 IN SOA foo. bar. 1 1 1 1 1"]),
              msg(qtype="A", flags=dns.flags.TC, answer=["example.com. 60 IN A 192.0.2.42"]))  # fmt: skip
    assert out.flags & dns.flags.TC


def test_failed_a_lookup_gives_noerror_empty_and_cnames_are_kept() -> None:
    out = run(msg(), msg(qtype="A", rcode=dns.rcode.SERVFAIL))
    assert out.rcode() == dns.rcode.NOERROR and out.answer == []
    out = run(msg(), None)
    assert out.rcode() == dns.rcode.NOERROR and out.answer == []
    out = run(
        msg(),
        msg(
            qtype="A",
            answer=["example.com. 30 IN CNAME www.example.net.", "www.example.net. 30 IN A 10.1.2.3"],
        ),
    )
    assert texts(out.answer) == [
        "example.com. 30 IN CNAME www.example.net.",
        "www.example.net. 30 IN AAAA 64:ff9b::a01:203",
    ]


def test_a_query_keeps_id_flags_and_opt() -> None:
    data = query()
    aq = dns.message.from_wire(a_query(data, parse_query(data)))
    assert aq.id == 42 and aq.flags & dns.flags.RD and aq.payload == 1232
    assert aq.question[0].to_text() == "example.com. IN A"


def test_counter_samples() -> None:
    c = DNS64Counters()
    c.count("dns://:53")
    c.count("dns://:53")
    assert c.samples() == [("coredns_dns64_requests_translated_total", {"server": "dns://:53"}, 2.0)]
