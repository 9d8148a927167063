"""dns/wire.py: query scanning, malformed input, error replies, truncation, OPT handling.

Golden vectors go both ways: bytes written by hand are checked against dnspython's reading of them, and
messages written by dnspython are read back by ``parse_query``.
"""

from __future__ import annotations

import struct

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from nodelocaldns.dns import wire
from nodelocaldns.errors import ShortHeader, WireError


def header(
    qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def qname(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def opt(
    size: int = 1232, version: int = 0, do: bool = False, ext_rcode: int = 0, rdata: bytes = b""
) -> bytes:
    return (
        b"\x00\x00\x29"
        + struct.pack("!HBBHH", size, ext_rcode, version, 0x8000 if do else 0, len(rdata))
        + rdata
    )


EXAMPLE = qname(b"example", b"org")
Q_A_IN = EXAMPLE + b"\x00\x01\x00\x01"


# -- parse_query: golden vectors ------------------------------------------------------------------


def test_hand_written_query_reads_the_same_in_dnspython_and_parse_query() -> None:
    data = header(qid=0xBEEF, flags=0x0110) + qname(b"WwW", b"Example", b"ORG") + b"\x00\x1c\x00\x01"
    q = wire.parse_query(data)
    ref = dns.message.from_wire(data)
    assert q.id == ref.id == 0xBEEF
    assert q.flags == ref.flags == 0x0110
    assert q.cd and ref.flags & dns.flags.CD
    assert q.qtype == ref.question[0].rdtype == dns.rdatatype.AAAA
    assert q.qclass == ref.question[0].rdclass == dns.rdataclass.IN
    # qname is kept lowercased in wire form; dnspython keeps the case as written.
    assert q.qname == dns.name.from_text("www.example.org.").to_wire()
    assert wire.name_to_text(q.qname) == ref.question[0].name.to_text().lower()
    assert q.question_end == len(data)
    assert not q.edns and q.udp_size == 512 and not q.do


@pytest.mark.parametrize(
    ("payload", "want_do", "want_size"),
    [(4096, True, 4096), (1232, False, 1232), (100, False, 512), (0, True, 512)],
)
def test_dnspython_edns_query_reads_back(payload: int, want_do: bool, want_size: int) -> None:
    m = dns.message.make_query("Kubernetes.Default.svc.cluster.local.", "SRV", use_edns=0, payload=payload,
                               want_dnssec=want_do)  # fmt: skip
    q = wire.parse_query(m.to_wire())
    assert q.edns and q.edns_version == 0
    assert q.do is want_do
    assert q.udp_size == want_size  # below 512 is raised to 512 as in miekg/dns
    assert q.qtype == dns.rdatatype.SRV
    assert q.qname == dns.name.from_text("kubernetes.default.svc.cluster.local.").to_wire()
    assert q.opcode == 0


def test_edns_version_and_options_are_read() -> None:
    m = dns.message.make_query(
        "a.example.", "A", use_edns=1, payload=1400, options=[dns.edns.ECSOption("192.0.2.0", 24)]
    )
    q = wire.parse_query(m.to_wire())
    assert q.edns and q.edns_version == 1 and q.udp_size == 1400


def test_root_query_and_escaped_labels() -> None:
    q = wire.parse_query(header() + b"\x00\x00\x02\x00\x01")
    assert q.qname == b"\x00" and wire.name_to_text(q.qname) == "."
    odd = header() + qname(b"a.b", b"c\\d", b"\x00\xff ") + b"\x00\x01\x00\x01"
    q = wire.parse_query(odd)
    # miekg/dns's form (CoreDNS logs it): dnspython would print the space as \032.
    assert wire.name_to_text(q.qname) == "a\\.b.c\\\\d.\\000\\255\\ ."


def test_compressed_question_pointing_into_answer_is_rejected_but_backward_pointer_in_answer_is_fine() -> (
    None
):
    # An answer record whose owner points back at the question name is legal in a query.
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
    q = wire.parse_query(header(an=1) + Q_A_IN + rr)
    assert q.question_end == 12 + len(Q_A_IN)


def test_name_of_exactly_255_octets_is_accepted() -> None:
    labels = [b"a" * 63] * 3 + [b"b" * 61]  # 3*64 + 62 + root = 255
    name = qname(*labels)
    assert len(name) == 255
    q = wire.parse_query(header() + name + b"\x00\x01\x00\x01")
    assert q.qname == name
    dns.message.from_wire(header() + name + b"\x00\x01\x00\x01")  # dnspython agrees it is legal


# -- parse_query: every malformed class -----------------------------------------------------------


def test_short_header_cannot_be_answered() -> None:
    for n in range(12):
        with pytest.raises(ShortHeader):
            wire.parse_query(header()[:n])
        assert wire.bare_reply(header()[:n], wire.FORMERR) is None


def test_response_is_never_answered() -> None:
    # A FORMERR to a response is itself a response: two servers would bounce them forever.
    data = header(flags=0x8180) + Q_A_IN
    with pytest.raises(ShortHeader):
        wire.parse_query(data)
    with pytest.raises(wire.NotAQuery):
        wire.parse_query(header(flags=0x8000, qd=0))


MALFORMED = {
    "qdcount 0": header(qd=0),
    "qdcount 2": header(qd=2) + Q_A_IN + Q_A_IN,
    "qdcount 2 one present": header(qd=2) + Q_A_IN,
    "name runs off the end": header() + b"\x07exam",
    "no type/class": header() + EXAMPLE,
    "half the type": header() + EXAMPLE + b"\x00",
    "pointer into the header": header() + b"\xc0\x04\x00\x01\x00\x01",
    "pointer to itself": header() + b"\xc0\x0c\x00\x01\x00\x01",
    "forward pointer": header() + b"\xc0\x20\x00\x01\x00\x01" + b"\x00" * 40,
    "pointer loop": header() + b"\x01a\xc0\x0e\x00\x01\x00\x01",
    "pointer past the end": header() + b"\xc3\xff\x00\x01\x00\x01",
    "truncated pointer": header() + b"\x01a\xc0",
    "label of 64 (0x40 type)": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "label type 0x80": header() + b"\x80" + b"a" * 10 + b"\x00\x00\x01\x00\x01",
    "name of 256 octets": header() + qname(*([b"a" * 63] * 3 + [b"b" * 62])) + b"\x00\x01\x00\x01",
    "trailing junk": header() + Q_A_IN + b"\x00",
    "trailing junk after OPT": header(ar=1) + Q_A_IN + opt() + b"junk",
    "truncated answer rdata": header(an=1)
    + Q_A_IN
    + b"\xc0\x0c"
    + struct.pack("!HHIH", 1, 1, 60, 4)
    + b"\x01\x02",
    "answer header cut": header(an=1) + Q_A_IN + b"\xc0\x0c\x00\x01",
    "arcount 1 nothing there": header(ar=1) + Q_A_IN,
    "OPT rdata cut": header(ar=1) + Q_A_IN + opt(rdata=b"\x00\x08\x00\x04")[:-3],
    "two OPT records": header(ar=2) + Q_A_IN + opt() + opt(),
    "OPT not at root": header(ar=1) + Q_A_IN + b"\x01a" + opt()[1:],
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_query_is_a_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        wire.parse_query(data)


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_formerr_for_malformed_query_is_itself_well_formed(data: bytes) -> None:
    out = wire.bare_reply(data, wire.FORMERR, question=True)
    assert out is not None
    reply = dns.message.from_wire(out)  # whatever the query held, the reply must parse
    assert reply.id == 0x1234
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.flags & dns.flags.QR
    assert len(reply.question) <= 1


# -- error replies --------------------------------------------------------------------------------


@pytest.mark.parametrize("rcode", [wire.FORMERR, wire.SERVFAIL, wire.NOTIMP, wire.REFUSED])
def test_error_reply_keeps_id_question_rd_cd_and_adds_no_opt_without_edns(rcode: int) -> None:
    data = header(qid=4242, flags=0x0110) + qname(b"MiXeD", b"case") + b"\x00\x10\x00\x01"
    q = wire.parse_query(data)
    out = wire.error_reply(data, rcode, q)
    r = dns.message.from_wire(out)
    assert r.id == 4242 and r.rcode() == rcode
    assert r.flags & dns.flags.QR and r.flags & dns.flags.RD and r.flags & dns.flags.CD
    assert not r.flags & dns.flags.RA  # CoreDNS's errorFunc never claims recursion
    assert str(r.question[0].name) == "MiXeD.case."  # the question as the client wrote it
    assert r.edns == -1 and not r.answer and not r.authority and not r.additional


@pytest.mark.parametrize("size", [100, 512, 1400])
def test_error_reply_carries_opt_with_the_clients_own_size(size: int) -> None:
    m = dns.message.make_query("x.example.", "A", use_edns=0, payload=size, want_dnssec=True)
    data = m.to_wire()
    out = wire.error_reply(data, wire.SERVFAIL, wire.parse_query(data))
    r = dns.message.from_wire(out)
    assert r.edns == 0 and r.payload == size and r.ednsflags & dns.flags.DO
    assert r.rcode() == dns.rcode.SERVFAIL and r.id == m.id


def test_badvers_is_version_0_size_0_without_ra() -> None:
    m = dns.message.make_query("x.example.", "A", use_edns=1, payload=1232, want_dnssec=True)
    data = m.to_wire()
    out = wire.badvers_reply(data, wire.parse_query(data))
    r = dns.message.from_wire(out)
    assert r.rcode() == dns.rcode.BADVERS
    assert out[3] & 0xF == 0  # the low four bits are in the header, the rest in OPT
    assert r.edns == 0 and r.payload == 0 and not r.ednsflags & dns.flags.DO  # edns.Version's bare OPT
    assert r.flags & dns.flags.RD and not r.flags & dns.flags.RA
    assert str(r.question[0].name) == "x.example."


def test_error_reply_keeps_the_opcode_and_copies_rd_only_for_a_query() -> None:
    data = header(flags=(dns.opcode.NOTIFY << 11) | 0x0100) + Q_A_IN
    out = wire.error_reply(data, wire.REFUSED, wire.parse_query(data))
    r = dns.message.from_wire(out)
    assert r.opcode() == dns.opcode.NOTIFY and not r.flags & dns.flags.RD


REJECTS = {
    "UPDATE": (header(flags=dns.opcode.UPDATE << 11) + Q_A_IN, wire.NOTIMP),
    "opcode 3": (header(flags=3 << 11) + Q_A_IN, wire.NOTIMP),
    "STATUS": (header(flags=dns.opcode.STATUS << 11) + Q_A_IN, wire.NOTIMP),
    "3 additional records": (header(ar=3) + Q_A_IN + opt() + opt() + opt(), wire.FORMERR),
    "2 answers": (header(an=2) + Q_A_IN, wire.FORMERR),
    "2 authority": (header(ns=2) + Q_A_IN, wire.FORMERR),
    "no question": (header(qd=0), wire.FORMERR),
    "2 questions": (header(qd=2) + Q_A_IN + Q_A_IN, wire.FORMERR),
}


@pytest.mark.parametrize(("data", "rcode"), list(REJECTS.values()), ids=list(REJECTS))
def test_header_rejects_get_miekg_bare_replies(data: bytes, rcode: int) -> None:
    assert wire.reject(data) == rcode
    out = wire.bare_reply(data, rcode)
    assert out is not None and len(out) == 12  # no question, no OPT, none of the client's records
    r = dns.message.from_wire(out)
    assert r.id == 0x1234 and r.rcode() == rcode and r.flags & dns.flags.QR
    assert not r.flags & (dns.flags.RA | dns.flags.AA)
    # NOTIMP keeps the opcode; FORMERR says QUERY (SetRcodeFormatError).
    assert r.opcode() == (data[2] >> 3 & 0xF if rcode == wire.NOTIMP else 0)


@pytest.mark.parametrize(
    "data",
    [header() + Q_A_IN, header(ar=1) + Q_A_IN + opt(), header(flags=dns.opcode.NOTIFY << 11, an=1) + Q_A_IN,
     header(ar=2) + Q_A_IN + opt() + opt(), header(ns=1) + Q_A_IN],
)  # fmt: skip
def test_header_accepts_what_miekg_accepts(data: bytes) -> None:
    assert wire.reject(data) is None


def test_bare_reply_keeps_the_clients_rd_cd_ad_bits() -> None:
    data = header(flags=(dns.opcode.UPDATE << 11) | 0x0100 | 0x0030 | 0x0040) + Q_A_IN
    out = wire.bare_reply(data, wire.NOTIMP)
    assert out is not None
    flags = struct.unpack_from("!H", out, 2)[0]
    assert flags == 0x8000 | (dns.opcode.UPDATE << 11) | 0x0100 | 0x0030 | wire.NOTIMP  # Z cleared


def test_client_opt_echoes_size_and_do_only() -> None:
    m = dns.message.make_query("x.", "A", use_edns=0, payload=3000, want_dnssec=True,
                               options=[dns.edns.GenericOption(10, b"12345678")])  # fmt: skip
    q = wire.parse_query(m.to_wire())
    o = wire.client_opt(q)
    assert o == b"\x00\x00\x29" + struct.pack("!HIH", 3000, 0x8000, 0)
    assert wire.client_opt(wire.parse_query(header() + Q_A_IN)) == b""


# -- truncation -----------------------------------------------------------------------------------


def big_reply(n: int = 40, extra: int = 0, qid: int = 7) -> bytes:
    """A reply with ``n`` TXT answers of ~100 bytes (no OPT), and ``extra`` additional A records."""
    q = dns.message.make_query("big.example.", "TXT", use_edns=False)
    q.id = qid
    r = dns.message.make_response(q)
    r.answer.append(
        dns.rrset.from_text_list("big.example.", 30, "IN", "TXT", [f'"{i:03d}{"x" * 95}"' for i in range(n)])
    )
    if extra:
        r.additional.append(
            dns.rrset.from_text_list("ns.example.", 30, "IN", "A", [f"192.0.2.{i}" for i in range(extra)])
        )
    return r.to_wire()


def test_reply_that_fits_gets_opt_appended_and_arcount_bumped() -> None:
    reply = big_reply(2)
    o = opt(1232)
    out = wire.truncate(reply, 1232, o)
    assert out == reply[:10] + b"\x00\x01" + reply[12:] + o
    r = dns.message.from_wire(out)
    assert r.edns == 0 and len(r.answer[0]) == 2


def test_truncate_to_512_without_edns_sets_tc_and_drops_answers() -> None:
    reply = big_reply(40)
    assert len(reply) > 4000
    out = wire.truncate(reply, 512, b"")
    assert len(out) <= 512
    r = dns.message.from_wire(out)
    assert r.flags & dns.flags.TC
    assert not r.answer and not r.authority and r.edns == -1
    assert r.id == 7 and r.question[0].name == dns.name.from_text("big.example.")


@pytest.mark.parametrize("limit", [512, 1232, 1400, 4000])
def test_truncate_with_opt_fits_the_client_buffer(limit: int) -> None:
    reply = big_reply(40)
    o = opt(limit)
    out = wire.truncate(reply, limit, o)
    assert len(out) <= limit
    r = dns.message.from_wire(out)
    assert r.flags & dns.flags.TC and r.edns == 0 and r.payload == limit
    assert not r.answer  # CoreDNS would keep a prefix of the answers; see docs/compatibility.md


def test_dropping_only_additional_records_does_not_set_tc() -> None:
    reply = big_reply(3, extra=60)
    out = wire.truncate(reply, 512, b"")
    r = dns.message.from_wire(out)
    assert not r.flags & dns.flags.TC
    assert len(r.answer[0]) == 3
    assert 0 < sum(len(s) for s in r.additional) < 60
    assert len(out) <= 512


def test_truncate_does_not_touch_a_reply_that_fits_without_opt() -> None:
    reply = big_reply(2)
    assert wire.truncate(reply, 512, b"") is reply


# -- OPT stripping, record walking ----------------------------------------------------------------


def test_strip_opt_removes_only_opt() -> None:
    q = dns.message.make_query("big.example.", "TXT", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("big.example.", 30, "IN", "TXT", '"a"'))
    r.additional.append(dns.rrset.from_text("ns.example.", 30, "IN", "A", "192.0.2.1"))
    data = r.to_wire()
    out = wire.strip_opt(data)
    back = dns.message.from_wire(out)
    assert back.edns == -1 and len(back.additional) == 1 and back.answer == r.answer
    assert wire.strip_opt(out) is out


def test_walk_records_reports_ttl_offsets() -> None:
    data = big_reply(3)
    recs: list[tuple[int, int, int, int]] = []
    end = wire.walk_records(data, wire.question_end(data), 3, recs)
    assert end == len(data)
    assert [struct.unpack_from("!I", data, t)[0] for _s, t, _r, _e in recs] == [30, 30, 30]
    assert {r for _s, _t, r, _e in recs} == {dns.rdatatype.TXT}


def test_read_name_follows_backward_pointers() -> None:
    data = big_reply(1)
    recs: list[tuple[int, int, int, int]] = []
    wire.walk_records(data, wire.question_end(data), 1, recs)
    name, end = wire.read_name(data, recs[0][0])
    assert name == dns.name.from_text("big.example.").to_wire()
    assert end == recs[0][0] + 2  # the owner is a 2-byte pointer


def test_text_to_wire_round_trip_and_errors() -> None:
    assert wire.text_to_wire("Cluster.Local.") == b"\x07cluster\x05local\x00"
    assert wire.text_to_wire(".") == b"\x00"
    for bad in ("a..b", "x" * 64 + ".com"):
        with pytest.raises(WireError):
            wire.text_to_wire(bad)


# -- check_reply: what forward accepts from an upstream ---------------------------------------------


def _reply(*answers: bytes, an: int | None = None, tail: bytes = b"") -> bytes:
    q = qname(b"x", b"example") + b"\x00\x01\x00\x01"
    n = len(answers) if an is None else an
    return header(flags=0x8180, an=n) + q + b"".join(answers) + tail


def _rr(rtype: int, rdata: bytes, owner: bytes = b"\xc0\x0c") -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 30, len(rdata)) + rdata


def test_check_reply_accepts_what_dnspython_writes() -> None:
    q = dns.message.make_query("x.example.", "MX")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("x.example.", 30, "IN", "MX", "10 mail.x.example."))
    r.authority.append(
        dns.rrset.from_text("example.", 30, "IN", "SOA", "ns.example. host.example. 1 2 3 4 5")
    )
    r.additional.append(dns.rrset.from_text("mail.x.example.", 30, "IN", "A", "198.18.0.1"))
    raw = r.to_wire()
    assert wire.check_reply(raw) == raw
    good = _reply(_rr(1, bytes([198, 18, 0, 1])), _rr(5, b"\xc0\x0c"))
    assert wire.check_reply(good) == good
    assert wire.check_reply(_reply(_rr(2, b""))) == _reply(_rr(2, b""))  # empty rdata: miekg accepts it


def test_check_reply_cuts_bytes_after_the_last_counted_record() -> None:
    a = _rr(1, bytes([198, 18, 0, 1]))
    assert wire.check_reply(_reply(a, tail=b"junk")) == _reply(a)
    assert wire.check_reply(_reply(a, a, an=1)) == _reply(a)


@pytest.mark.parametrize(
    "raw",
    [
        _reply(_rr(1, bytes([198, 18, 0, 1])))[:-2],  # cut inside the rdata
        _reply(_rr(1, bytes([198, 18, 0, 1])))[:-12],  # cut inside the fixed part
        _reply(_rr(1, bytes([198, 18, 0, 1]), owner=b"\xc3\xff")),  # pointer past the end
        _reply(_rr(1, bytes([198, 18, 0, 1]), owner=b"\xc0\x1b")),  # pointer to itself
        _reply(_rr(1, bytes([198, 18, 0, 1])), an=3),  # more records promised than sent
        _reply(_rr(5, b"\xc0\x27")),  # CNAME target points at itself
        _reply(_rr(5, b"\x03abc")),  # CNAME target runs out of its rdata
        _reply(_rr(15, b"\x00\x0a\xc0\x0c\x00")),  # MX: bytes after the exchange name
        _reply(_rr(6, b"\xc0\x0c\xc0\x0c" + b"\x00" * 19)),  # SOA: one byte short
        header(flags=0x8180)[:10],
    ],
)
def test_check_reply_rejects_what_miekg_cannot_unpack(raw: bytes) -> None:
    with pytest.raises(WireError):
        wire.check_reply(raw)
    with pytest.raises(dns.exception.FormError):
        dns.message.from_wire(raw)  # and dnspython agrees


def _label_run(total: int) -> bytes:
    """Plain labels plus the root label, ``total`` octets in all."""
    out = b""
    while total - len(out) > 1:
        n = min(63, total - len(out) - 2)
        out += bytes([n]) + b"a" * n
    return out + b"\x00"


@pytest.mark.parametrize(
    "msg,off",
    [
        (b"\x00", 0),
        (b"\x03www\x07example\x03org\x00tail", 0),
        (b"xx\x03WwW\x00", 2),
        (_label_run(255), 0),  # the longest name there is
        (_label_run(256), 0),  # one octet too long
        (b"\x03www\x07exam", 0),  # runs past the end
        (b"\x03www", 0),  # no root label
        (b"\x03org\x00\x03www\xc0\x00", 5),  # a pointer after a plain label
        (b"\x03www\x40abc\x00", 0),  # a label type that does not exist
        (b"\x03www\x80abc\x00", 0),
    ],
)
def test_read_name_decodes_plain_names_as_dnspython_does(msg: bytes, off: int) -> None:
    """Plain names take a shortcut (the bytes are the name); every name reads as dnspython reads it,
    and whatever dnspython refuses is a WireError."""
    try:
        ref, used = dns.name.from_wire(msg, off)
    except dns.exception.DNSException:
        with pytest.raises(WireError):
            wire.read_name(msg, off)
        return
    name, end = wire.read_name(msg, off)
    assert (name, end) == (ref.to_wire(), off + used) and isinstance(name, bytes)
