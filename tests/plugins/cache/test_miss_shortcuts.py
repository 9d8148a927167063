"""The miss path's shortcuts (a reply that repeats the question, one answer owned by the question
name, an owner pointing at the question) give what the full name decoding gives."""

from __future__ import annotations

import struct

import dns.message
import dns.name
import dns.rrset
import pytest

from nodelocaldns.dns import wire
from nodelocaldns.errors import WireError
from nodelocaldns.plugins.cache.classify import SUCCESS, RType, classify
from nodelocaldns.plugins.cache.handler import _matches
from nodelocaldns.plugins.cache.setup import CacheConfig

QNAME = dns.name.from_text("example.org.").to_wire()


def one_answer(qname: str, owner: str, rtype: str = "A", value: str = "192.0.2.1") -> bytes:
    q = dns.message.make_query(qname, rtype)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text_list(owner, 30, "IN", rtype, [value]))
    return r.to_wire()


def spelled_out(
    owner: bytes, qname: bytes = QNAME, qtype: int = 1, rdata: bytes = b"\xc0\x00\x02\x01"
) -> bytes:
    """One answer whose owner is written out (no compression pointer)."""
    head = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0)
    rr = owner + struct.pack("!HHIH", qtype, 1, 30, len(rdata)) + rdata
    return head + qname + struct.pack("!HH", qtype, 1) + rr


def test_one_answer_pointing_at_the_question_answers() -> None:
    data = one_answer("example.org.", "example.org.")
    assert data[12 + len(QNAME) + 4 : 12 + len(QNAME) + 6] == b"\xc0\x0c"
    v = classify(data, QNAME, 1, CacheConfig())
    assert (v.kind, v.rtype, v.ttl, v.reason) == (SUCCESS, RType.NOERROR, 30, "")


def test_an_owner_pointing_at_another_question_name_does_not_answer() -> None:
    # The reply's question (and its answer's owner, through the pointer) is not the name asked.
    data = one_answer("other.org.", "other.org.")
    v = classify(data, QNAME, 1, CacheConfig())
    assert v.kind is None and v.reason == "answer does not answer the question"


def test_a_spelled_out_owner_in_another_case_answers() -> None:
    data = spelled_out(b"\x07EXAMPLE\x03ORG\x00")
    assert classify(data, QNAME, 1, CacheConfig()).kind == SUCCESS


def test_a_spelled_out_owner_of_another_name_does_not_answer() -> None:
    data = spelled_out(b"\x07example\x03net\x00")
    assert classify(data, QNAME, 1, CacheConfig()).reason == "answer does not answer the question"


def test_one_cname_answer_to_a_cname_question_still_reads_its_target() -> None:
    # The target is a compression pointer forward: the full chain check reads it and rejects it.
    data = spelled_out(b"\xc0\x0c", qtype=5, rdata=b"\xc0\xff")
    with pytest.raises(WireError):
        classify(data, QNAME, 5, CacheConfig())


@pytest.mark.parametrize(
    ("question", "want"),
    [
        ("example.org.", True),
        ("EXAMPLE.org.", True),  # an upstream may answer in another case
        ("example.net.", False),
        ("example.org.example.org.", False),
    ],
)
def test_matches_compares_the_question_case_insensitively(question: str, want: bool) -> None:
    q = wire.parse_query(dns.message.make_query("example.org.", "A").to_wire())
    assert _matches(one_answer(question, question), q) is want


def test_matches_wants_the_same_type_and_class() -> None:
    q = wire.parse_query(dns.message.make_query("example.org.", "AAAA").to_wire())
    assert not _matches(one_answer("example.org.", "example.org."), q)


@pytest.mark.parametrize(
    "data",
    [
        one_answer("example.org.", "example.org."),
        one_answer("example.org.", "www.example.org."),
        one_answer("example.org.", "example.org.", "CNAME", "target.example.net."),
        spelled_out(b"\x07EXAMPLE\x03ORG\x00"),
        # A question name of 255 octets, which a pointer to it must still decode to.
        spelled_out(b"\xc0\x0c", qname=b"".join([b"\x3f" + b"a" * 63] * 3) + b"\x3d" + b"a" * 61 + b"\x00"),
    ],
    # Named, not the bytes: the query ids are random, and pytest-xdist's workers must collect the same ids.
    ids=["a", "a-under-www", "cname", "upper-case-owner", "255-octet-qname"],
)
def test_scan_reply_records_are_the_walk_of_the_reply(data: bytes) -> None:
    msg, body, recs = wire.scan_reply(data)
    walked: list[tuple[int, int, int, int]] = []
    wire.walk_records(data, wire.question_end(data), 1, walked)
    assert (msg, body, recs) == (data, wire.question_end(data), tuple(walked))


def _variants() -> list[tuple[str, bytes, bytes, int]]:
    """(label, reply, qname, qtype): replies near the one-answer shortcut's edges."""
    out = []
    for ttl in (0, 1, 30, 86400 * 30):
        for flags in (0x8180, 0x8580, 0x8380, 0x8183, 0x9180, 0x81A0):  # AA, TC, NXDOMAIN, opcode 2, AD
            data = bytearray(spelled_out(b"\xc0\x0c"))
            struct.pack_into("!H", data, 2, flags)
            struct.pack_into("!I", data, 12 + len(QNAME) + 4 + 6, ttl)
            out.append((f"ttl {ttl} flags {flags:#x}", bytes(data), QNAME, 1))
    q = dns.message.make_query("example.org.", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text_list("example.org.", 30, "IN", "A", ["192.0.2.1"]))
    out.append(("with OPT", r.to_wire(), QNAME, 1))
    r.additional.append(dns.rrset.from_text_list("ns.example.org.", 7, "IN", "A", ["192.0.2.2"]))
    out.append(("an additional record", r.to_wire(), QNAME, 1))
    out.append(("ANY", one_answer("example.org.", "example.org."), QNAME, 255))
    out.append(("another type", one_answer("example.org.", "example.org.", "AAAA", "2001:db8::1"), QNAME, 1))
    out.append(("CNAME asked", one_answer("example.org.", "example.org.", "CNAME", "x.example."), QNAME, 5))
    out.append(("spelled, other case", spelled_out(b"\x07EXAMPLE\x03ORG\x00"), QNAME, 1))
    out.append(("spelled, other name", spelled_out(b"\x07example\x03net\x00"), QNAME, 1))
    return out


@pytest.mark.parametrize("label,data,qname,qtype", _variants(), ids=[v[0] for v in _variants()])
@pytest.mark.parametrize("cfg", [CacheConfig(), CacheConfig(success_max_ttl=20, success_min_ttl=5)])
def test_the_one_answer_shortcut_decides_as_the_full_walk(
    label: str, data: bytes, qname: bytes, qtype: int, cfg: CacheConfig
) -> None:
    """With forward's scan (the shortcut may apply) and without it (the general walk)."""
    scanned, body, recs = wire.scan_reply(data)
    assert classify(scanned, qname, qtype, cfg, (body, recs)) == classify(scanned, qname, qtype, cfg), label
