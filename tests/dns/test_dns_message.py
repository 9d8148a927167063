"""dns/message.py: decode/encode keeps every record, compresses names, agrees with dnspython."""

from __future__ import annotations

import dns.message
import dns.rrset
import pytest

from nodelocaldns.dns.message import decode, encode, prepend_label, reply_flags
from nodelocaldns.errors import WireError


def rrset(text: str) -> dns.rrset.RRset:
    name, ttl, cls, typ, *rest = text.split()
    return dns.rrset.from_text(name, int(ttl), cls, typ, " ".join(rest))


RECORDS = [
    "www.Example.org. 60 IN CNAME host.example.org.",
    "host.example.org. 60 IN A 10.0.0.1",
    "host.example.org. 60 IN AAAA 2001:db8::1",
    "example.org. 60 IN MX 10 mail.example.org.",
    "example.org. 60 IN SOA ns.example.org. admin.example.org. 1 2 3 4 5",
    "_x._tcp.example.org. 60 IN SRV 0 0 53 host.example.org.",
    'example.org. 60 IN TXT "hello"',
    "1.0.0.10.in-addr.arpa. 60 IN PTR host.example.org.",
]


def test_round_trip_matches_dnspython() -> None:
    m = dns.message.make_query("www.Example.org.", "A", use_edns=0, payload=1232)
    m.answer = [rrset(r) for r in RECORDS[:4]]
    m.authority = [rrset(RECORDS[4])]
    m.additional = [rrset(r) for r in RECORDS[5:]]
    wire = m.to_wire()
    parsed = decode(wire)
    assert (len(parsed.answer), len(parsed.authority), len(parsed.additional)) == (4, 1, 4)  # OPT included
    again = encode(parsed)
    back = dns.message.from_wire(again)
    assert back == m and back.answer[0].name.to_text() == "www.Example.org."
    assert len(again) <= len(wire) + 8  # compressed like dnspython's (SRV targets are not compressed)
    assert decode(again) == parsed


def test_reordering_keeps_names_valid() -> None:
    m = dns.message.make_query("example.org.", "MX")
    m.answer = [rrset(f"example.org. 60 IN MX {i} mx{i}.example.org.") for i in range(5)]
    parsed = decode(m.to_wire())
    parsed.answer.reverse()
    back = dns.message.from_wire(encode(parsed), one_rr_per_rrset=True)
    assert [r[0].exchange.to_text() for r in back.answer] == [
        f"mx{i}.example.org." for i in reversed(range(5))
    ]


def test_bad_messages() -> None:
    wire = dns.message.make_query("example.org.", "A").to_wire()
    with pytest.raises(WireError):
        decode(wire[:5])
    with pytest.raises(WireError):
        decode(wire + b"\x00")
    with pytest.raises(WireError):
        decode(wire[:-2])


def test_reply_flags_and_labels() -> None:
    assert reply_flags(0x0110) == 0x8110  # RD, CD copied, no RA
    assert reply_flags(0x2900, aa=True) == 0xAC00  # non-QUERY opcode: RD not copied
    assert prepend_label(b"_udp", b"\x00") == b"\x04_udp\x00"
    with pytest.raises(WireError):
        prepend_label(b"x" * 64, b"\x00")
