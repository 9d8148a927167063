"""The miss path's faster copies against their references, over many reply shapes.

classify with forward's scan (which may take the answers-only shortcut) must return what the
general walk returns; an Entry must hold, slot for slot, what the straightforward construction
below (the one Entry used before its one-record shortcut) makes of the same reply and verdict.
"""

from __future__ import annotations

import struct
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from nodelocaldns.dns import message, wire
from nodelocaldns.errors import WireError
from nodelocaldns.metrics.dnsstats import stat_base
from nodelocaldns.plugins.cache.classify import Verdict, classify
from nodelocaldns.plugins.cache.entry import _AA, _KEEPTTL, Entry, _heads
from nodelocaldns.plugins.cache.setup import CacheConfig

SOA = "ns.example. hostmaster.example. 1 3600 600 86400 60"
CONFIGS = [
    CacheConfig(),
    CacheConfig(success_max_ttl=20, success_min_ttl=5, denial_max_ttl=10, denial_min_ttl=3),
    CacheConfig(success_max_ttl=1, denial_max_ttl=1),
    CacheConfig(success_min_ttl=100),
]


def rrs(owner: str, ttl: int, rtype: str, *values: str) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(owner, ttl, "IN", rtype, list(values))


def _reply(name: str, qtype: str, *, rcode: int = dns.rcode.NOERROR, answer: tuple[Any, ...] = (),
           authority: tuple[Any, ...] = (), additional: tuple[Any, ...] = (), flags: int = 0,
           opcode: int = dns.opcode.QUERY, edns: bool = False, do: bool = False) -> bytes:  # fmt: skip
    q = dns.message.make_query(name, qtype, use_edns=0 if edns else False, want_dnssec=do)
    q.set_opcode(dns.opcode.Opcode(opcode))
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode(rcode))
    r.flags |= flags
    r.answer.extend(answer)
    r.authority.extend(authority)
    r.additional.extend(additional)
    return r.to_wire()


def _shapes() -> list[tuple[str, bytes, str, int]]:
    """(label, reply, question name, qtype)."""
    n = "example.org."
    one = (rrs(n, 30, "A", "192.0.2.1"),)
    three = (rrs(n, 30, "A", "192.0.2.1", "192.0.2.2", "192.0.2.3"),)
    out = []
    for ttl in (0, 1, 4, 30, 300, 86400 * 30):
        out.append((f"one A ttl {ttl}", _reply(n, "A", answer=(rrs(n, ttl, "A", "192.0.2.1"),)), n, 1))
    for label, flags in (("AA", dns.flags.AA), ("TC", dns.flags.TC), ("AD", dns.flags.AD), ("CD", dns.flags.CD),
                         ("RA", dns.flags.RA), ("no flags", 0)):  # fmt: skip
        out.append((f"one A {label}", _reply(n, "A", answer=one, flags=flags), n, 1))
        out.append((f"three A {label}", _reply(n, "A", answer=three, flags=flags, edns=True), n, 1))
    out += [
        ("one A, OPT", _reply(n, "A", answer=one, edns=True), n, 1),
        ("one A, OPT DO", _reply(n, "A", answer=one, edns=True, do=True), n, 1),
        ("three A", _reply(n, "A", answer=three), n, 1),
        (
            "A of two TTLs",
            _reply(n, "A", answer=(rrs(n, 50, "A", "192.0.2.1"), rrs(n, 7, "A", "192.0.2.9"))),
            n,
            1,
        ),
        (
            "A then AAAA",
            _reply(n, "A", answer=(rrs(n, 30, "A", "192.0.2.1"), rrs(n, 9, "AAAA", "2001:db8::1"))),
            n,
            1,
        ),
        (
            "A then another owner",
            _reply(n, "A", answer=(rrs(n, 30, "A", "192.0.2.1"), rrs("x." + n, 3, "A", "192.0.2.5"))),
            n,
            1,
        ),
        (
            "AAAA pair",
            _reply(n, "AAAA", answer=(rrs(n, 30, "AAAA", "2001:db8::1", "2001:db8::2"),), edns=True),
            n,
            28,
        ),
        ("other type first", _reply(n, "A", answer=(rrs(n, 30, "AAAA", "2001:db8::1"), *one)), n, 1),
        (
            "CNAME chain",
            _reply(
                n,
                "A",
                answer=(rrs(n, 30, "CNAME", "a.example.net."), rrs("a.example.net.", 10, "A", "192.0.2.7")),
            ),
            n,
            1,
        ),
        ("CNAME to nowhere", _reply(n, "A", answer=(rrs(n, 30, "CNAME", "a.example.net."),)), n, 1),
        (
            "CNAME to nowhere, SOA",
            _reply(
                n,
                "A",
                answer=(rrs(n, 30, "CNAME", "a.example.net."),),
                authority=(rrs("example.org.", 40, "SOA", SOA),),
            ),
            n,
            1,
        ),
        ("CNAME asked", _reply(n, "CNAME", answer=(rrs(n, 30, "CNAME", "a.example.net."),)), n, 5),
        ("ANY", _reply(n, "ANY", answer=three), n, 255),
        (
            "answer and authority",
            _reply(n, "A", answer=one, authority=(rrs(n, 20, "NS", "ns.example."),)),
            n,
            1,
        ),
        (
            "answer and glue",
            _reply(n, "A", answer=one, additional=(rrs("ns.example.", 5, "A", "192.0.2.53"),)),
            n,
            1,
        ),
        (
            "answer, glue and OPT",
            _reply(n, "A", answer=one, edns=True, additional=(rrs("ns.example.", 5, "A", "192.0.2.53"),)),
            n,
            1,
        ),
        (
            "NXDOMAIN with SOA",
            _reply(n, "A", rcode=dns.rcode.NXDOMAIN, authority=(rrs("example.org.", 40, "SOA", SOA),)),
            n,
            1,
        ),
        ("NXDOMAIN without SOA", _reply(n, "A", rcode=dns.rcode.NXDOMAIN), n, 1),
        ("NXDOMAIN with an answer", _reply(n, "A", rcode=dns.rcode.NXDOMAIN, answer=one), n, 1),
        ("NODATA", _reply(n, "A", authority=(rrs("example.org.", 40, "SOA", SOA),), edns=True), n, 1),
        ("NODATA zero TTL", _reply(n, "A", authority=(rrs("example.org.", 0, "SOA", SOA),)), n, 1),
        ("empty NOERROR", _reply(n, "A"), n, 1),
        ("delegation", _reply(n, "A", authority=(rrs(n, 20, "NS", "ns.example."),)), n, 1),
        ("SERVFAIL", _reply(n, "A", rcode=dns.rcode.SERVFAIL), n, 1),
        ("REFUSED", _reply(n, "A", rcode=dns.rcode.REFUSED), n, 1),
        ("NOTIFY", _reply(n, "SOA", opcode=dns.opcode.NOTIFY, answer=(rrs(n, 40, "SOA", SOA),)), n, 6),
        (
            "capitals in the question",
            _reply("ExAmple.ORG.", "A", answer=(rrs("ExAmple.ORG.", 30, "A", "1.2.3.4"),)),
            n,
            1,
        ),
        ("an owner in capitals", _reply(n, "A", answer=(rrs("EXAMPLE.org.", 30, "A", "192.0.2.1"),)), n, 1),
        (
            "question of another name",
            _reply("other.org.", "A", answer=(rrs("other.org.", 30, "A", "1.2.3.4"),)),
            n,
            1,
        ),
        (
            "HTTPS question (type 65, 'A' in the type bytes)",
            _reply(n, "HTTPS", answer=(rrs(n, 30, "HTTPS", "1 ."),)),
            n,
            65,
        ),
    ]
    # An OPT in the answer section (not last): the general walk refuses it.
    data = bytearray(_reply(n, "A", answer=three, edns=True))
    _id, fl, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data)
    qend = wire.question_end(bytes(data))
    recs: list[tuple[int, int, int, int]] = []
    wire.walk_records(bytes(data), qend, an + ns + ar, recs)
    opt = bytes(data[recs[-1][0] : recs[-1][3]])
    moved = bytes(data[:qend]) + opt + bytes(data[qend : recs[-1][0]])
    out.append(("OPT among the answers", moved, n, 1))
    return out


SHAPES = _shapes()


def _scans(data: bytes) -> tuple[int, wire.Records] | None:
    try:
        _msg, body, recs = wire.scan_reply(data)
    except WireError:
        return None
    return body, recs


@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
@pytest.mark.parametrize("label,data,name,qtype", SHAPES, ids=[s[0] for s in SHAPES])
def test_classify_with_the_scan_is_the_general_walk(label: str, data: bytes, name: str, qtype: int,
                                                    cfg: CacheConfig) -> None:  # fmt: skip
    scan = _scans(data)
    assert scan is not None, label
    qname = wire.text_to_wire(name)
    assert classify(data, qname, qtype, cfg, scan) == classify(data, qname, qtype, cfg), label


def _reference_entry(reply: bytes, verdict: Verdict, now: float, do: bool, cd: bool, qtype: int,
                     keepttl: bool) -> dict[str, object]:  # fmt: skip
    """What Entry's slots were, built the straightforward way (one bytearray, every TTL packed)."""
    assert verdict.kind is not None
    _id, flags, _qd, an, ns, _ar = struct.unpack_from("!HHHHHH", reply)
    recs = verdict.records
    start = verdict.body_start
    body = bytearray(reply[start : recs[-1][3]]) if recs else bytearray()
    offs = tuple(r[1] - start for r in recs)
    for off in offs:
        struct.pack_into("!I", body, off, verdict.ttl)
    sq = reply[wire.HEADER_LEN : start]
    rcode = flags & 0xF
    base = wire.FLAG_QR | wire.FLAG_AA | (flags & wire.FLAG_RA) | (wire.FLAG_CD if cd else 0) | rcode
    return {
        "memo": bytes(body), "offs": offs, "q": sq if sq[:-4] != sq[:-4].lower() else None,
        "heads": _heads(base, bool(flags & wire.FLAG_AD), do, an, ns, len(recs) - an - ns),
        "sbase": stat_base(qtype, rcode, verdict.kind, start + len(body)), "orig": verdict.ttl, "stored": now,
        "fl": (_KEEPTTL if keepttl else 0) | (_AA if flags & wire.FLAG_AA else 0),
        "memo_until": now + 1 if not keepttl else now + verdict.ttl, "hits": 0, "last_hit": now,
        "tail": b"", "tail_edns": b"",
    }  # fmt: skip


@pytest.mark.parametrize("label,data,name,qtype", SHAPES, ids=[s[0] for s in SHAPES])
def test_an_entry_holds_what_the_reference_construction_makes(label: str, data: bytes, name: str,
                                                              qtype: int) -> None:  # fmt: skip
    qname = wire.text_to_wire(name)
    stored = 0
    for cfg in CONFIGS:
        for scan in (_scans(data), None):
            v = classify(data, qname, qtype, cfg, scan)
            if v.kind is None:
                continue
            for do, cd, keepttl in (
                (False, False, False),
                (True, False, False),
                (False, True, True),
                (True, True, True),
            ):
                e = Entry(data, v, 1000.5, do, cd, qtype, keepttl)
                got = {s: getattr(e, s) for s in Entry.__slots__}
                assert got == _reference_entry(data, v, 1000.5, do, cd, qtype, keepttl), label
                stored += 1
    if stored == 0:
        assert all(classify(data, qname, qtype, cfg).kind is None for cfg in CONFIGS), label


def _reference_render(e: Entry, data: bytes, q: wire.Query, body: bytes, limit: int, aa: bool) -> bytes:
    """Cached.render before its AA-less head was memoised and its lowercase test shortened."""
    opt = wire.client_opt(q)
    head = e.heads[(data[2] & 1) | ((data[3] & 0x20) >> 4)]
    if not aa and not e.fl & _AA:
        head = struct.pack("!H", struct.unpack_from("!H", head)[0] & ~wire.FLAG_AA) + head[2:]
    question = data[wire.HEADER_LEN : q.question_end]
    stored = e.q or question[:-4].lower() + question[-4:]
    if stored == question:
        return wire.truncate(data[:2] + head + question + body, limit, opt)
    m = message.decode(data[:2] + head + stored + body)
    m.question = question
    return wire.truncate(message.encode(m), limit, opt)


CLIENTS: list[dict[str, Any]] = [
    dict(name="example.org."),
    dict(name="EXAMPLE.org.", use_edns=0),
    dict(name="example.org.", use_edns=0, want_dnssec=True, payload=512),
    dict(name="eXample.orG.", flags=dns.flags.AD),
    dict(name="example.org.", flags=0),
]


@pytest.mark.parametrize("label,data,name,qtype", SHAPES, ids=[s[0] for s in SHAPES])
def test_render_is_the_reference_render(label: str, data: bytes, name: str, qtype: int) -> None:
    qname = wire.text_to_wire(name)
    v = classify(data, qname, qtype, CacheConfig())
    if v.kind is None:
        return
    e = Entry(data, v, 1000.0, False, False, qtype)
    body = e.body(1000.0)
    assert body is not None
    rtype = dns.rdatatype.to_text(dns.rdatatype.RdataType(qtype))
    for kw in CLIENTS:
        m = dns.message.make_query(
            kw["name"], rtype, **{k: x for k, x in kw.items() if k not in ("name", "flags")}
        )
        if "flags" in kw:
            m.flags = kw["flags"] | (m.flags & dns.flags.RD if kw["flags"] else 0)
        cdata = m.to_wire()
        cq = wire.parse_query(cdata)
        for limit in (512, 65535, 40):
            for aa in (False, True):
                assert e.render(cdata, cq, body, limit, aa) == _reference_render(
                    e, cdata, cq, body, limit, aa
                ), label
