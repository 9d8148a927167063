"""Pure DNS wire helpers: scan queries, walk records, build error replies, truncate.

Nothing here touches a socket or a clock. Full dnspython parsing is reserved for storing answers;
everything a request needs on the way in is read straight from the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Re-exported: callers spell them wire.name_to_text / wire.text_to_wire.
from nodelocaldns.dns.nametext import name_to_text as name_to_text
from nodelocaldns.dns.nametext import text_to_wire as text_to_wire
from nodelocaldns.errors import ShortHeader, WireError

HEADER_LEN = 12
TYPE_OPT = 41
TYPE_SOA = 6
TYPE_CNAME = 5
TYPE_NS = 2
TYPE_HINFO = 13
TYPE_AXFR = 252
TYPE_IXFR = 251
CLASS_IN = 1

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_AD = 0x0020
FLAG_CD = 0x0010

RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
    7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS",
}  # fmt: skip

_HDR = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")


class NotAQuery(ShortHeader):
    """A response (QR=1) sent to the server: dropped without a reply, as miekg/dns does.

    Answering it with an error (itself a response) lets two servers, or one server and a spoofed
    copy of its own address, bounce FORMERRs at each other forever.
    """


@dataclass(slots=True)
class Query:
    """What the server needs to know about an incoming query, read from its wire form."""

    id: int
    flags: int
    qname: bytes  # wire form, lowercased
    qtype: int
    qclass: int
    question_end: int  # offset just past the question
    edns: bool = False
    udp_size: int = 512  # the client's size as a limit: >= 512 (miekg/dns normalises it so)
    opt_size: int = 0  # the size exactly as the client's OPT said it: what replies echo
    do: bool = False
    edns_version: int = 0

    @property
    def cd(self) -> bool:
        return bool(self.flags & FLAG_CD)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def skip_name(msg: bytes, off: int) -> int:
    """Return the offset just past the (possibly compressed) name at ``off``."""
    n = len(msg)
    while True:
        if off >= n:
            raise WireError("name runs past end of message")
        length = msg[off]
        if length == 0:
            return off + 1
        if length & 0xC0 == 0xC0:
            if off + 1 >= n:
                raise WireError("truncated compression pointer")
            return off + 2
        if length & 0xC0:
            raise WireError("bad label type")
        off += 1 + length


def _plain_end(msg: bytes, off: int) -> int:
    """Offset past the name at ``off`` if it is plain labels (no pointer), inside ``msg`` and at
    most 255 octets, else -1 (read_name then decodes it, or says what is wrong)."""
    start, n = off, len(msg)
    while off < n:
        length = msg[off]
        if not length:
            return off + 1 if off - start < 255 else -1
        if length & 0xC0:
            return -1
        off += length + 1
    return -1


def read_name(msg: bytes, off: int) -> tuple[bytes, int]:
    """Decompress the name at ``off``: (uncompressed wire name, offset past it in the message)."""
    end = _plain_end(msg, off)
    if end > 0:  # most names: the bytes are the name already
        return msg[off:end], end
    out = bytearray()
    end = -1
    hops = 0
    n = len(msg)
    while True:
        if off >= n:
            raise WireError("name runs past end of message")
        length = msg[off]
        if length == 0:
            out.append(0)
            if end < 0:
                end = off + 1
            break
        if length & 0xC0 == 0xC0:
            if off + 1 >= n:
                raise WireError("truncated compression pointer")
            ptr = ((length & 0x3F) << 8) | msg[off + 1]
            if end < 0:
                end = off + 2
            hops += 1
            if hops > 64 or ptr >= off:
                raise WireError("bad compression pointer")
            off = ptr
            continue
        if length & 0xC0:
            raise WireError("bad label type")
        if off + 1 + length > n:
            raise WireError("label runs past end of message")
        out += msg[off : off + 1 + length]
        off += 1 + length
        if len(out) > 254:  # the root label still has to fit within 255
            raise WireError("name longer than 255 octets")
    return bytes(out), end


def parse_query(data: bytes) -> Query:
    """Validate and read a query. Raises ShortHeader (no reply possible) or WireError (FORMERR)."""
    if len(data) < HEADER_LEN:
        raise ShortHeader("message shorter than a DNS header")
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(data)
    if flags & FLAG_QR:
        raise NotAQuery("response sent to a server")
    if qd != 1:
        raise WireError(f"query has {qd} questions, want exactly 1")
    off = HEADER_LEN
    qname, off = read_name(data, off)
    if off != HEADER_LEN + len(qname):
        # Only the header precedes the question, so a pointer there points at no name; replies
        # copy the question verbatim, where such a pointer would decode differently.
        raise WireError("compression pointer in the question")
    if off + 4 > len(data):
        raise WireError("question runs past end of message")
    qtype, qclass = struct.unpack_from("!HH", data, off)
    off += 4
    q = Query(qid, flags, qname.lower(), qtype, qclass, off)
    # Answer and authority records are unusual in a query but legal; walk past them.
    try:
        off = walk_records(data, off, an + ns, None)
        seen_opt = False
        for _ in range(ar):
            start = off
            off = skip_name(data, off)
            if off + 10 > len(data):
                raise WireError("record runs past end of message")
            rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, off)
            off += 10 + rdlen
            if off > len(data):
                raise WireError("rdata runs past end of message")
            if rtype == TYPE_OPT:
                if seen_opt or data[start] != 0:
                    raise WireError("bad OPT record")
                seen_opt = True
                q.edns = True
                q.udp_size = max(rclass, 512)
                q.opt_size = rclass
                q.edns_version = (ttl >> 16) & 0xFF
                q.do = bool(ttl & 0x8000)
    except WireError:
        raise
    if off != len(data):
        raise WireError("trailing bytes after the last record")
    return q


def walk_records(msg: bytes, off: int, count: int, out: list[tuple[int, int, int, int]] | None) -> int:
    """Walk ``count`` records from ``off``; append (start, ttl_offset, rtype, end) to ``out``."""
    n = len(msg)
    for _ in range(count):
        start = off
        off = skip_name(msg, off)
        if off + 10 > n:
            raise WireError("record runs past end of message")
        rtype, _rclass, _ttl, rdlen = _RR_FIXED.unpack_from(msg, off)
        ttl_off = off + 4
        off += 10 + rdlen
        if off > n:
            raise WireError("rdata runs past end of message")
        if out is not None:
            out.append((start, ttl_off, rtype, off))
    return off


def question_end(msg: bytes) -> int:
    """Offset just past the single question of ``msg`` (header already known to be complete)."""
    off = skip_name(msg, HEADER_LEN)
    if off + 4 > len(msg):
        raise WireError("question runs past end of message")
    return off + 4


def client_opt(q: Query) -> bytes:
    """The OPT RR for a reply to ``q``: the client's buffer size echoed as sent, version 0, only DO kept.

    CoreDNS echoes the client's OPT options too; we send none (an echoed client cookie is not a
    server cookie). See docs/compatibility.md.
    """
    if not q.edns:
        return b""
    return b"\x00\x00\x29" + struct.pack("!HIH", q.opt_size, 0x8000 if q.do else 0, 0)


# Opcodes miekg/dns lets through to the handler; every other one gets a bare NOTIMP.
OPCODES_SERVED = frozenset({0, 4})  # QUERY, NOTIFY


def reject(data: bytes) -> int | None:
    """miekg/dns's accept check on the header alone: NOTIMP, FORMERR, or None (go on parsing).

    Runs before the message is parsed, so the reply to a rejected query is ``bare_reply``.
    """
    qd, an, ns, ar = struct.unpack_from("!HHHH", data, 4)
    if (data[2] >> 3) & 0xF not in OPCODES_SERVED:
        return NOTIMP
    # NOTIFY may carry one SOA in the answer, IXFR one SOA in the authority, and OPT plus TSIG fit in 2.
    if qd != 1 or an > 1 or ns > 1 or ar > 2:
        return FORMERR
    return None


def bare_reply(data: bytes, rcode: int, question: bool = False) -> bytes | None:
    """A reply to a query rejected before it was parsed: the header only, as miekg/dns writes it.

    The client's own header comes back with QR set, AA and Z cleared and the rcode set; the
    opcode becomes QUERY except in a NOTIMP. ``question`` copies the question when it can be read
    without pointers (the query was accepted but then failed to parse: miekg/dns keeps the question
    it had read). No OPT and no other record is sent back. None: not even a header (dropped).
    """
    if len(data) < HEADER_LEN:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    kept = flags & (FLAG_TC | FLAG_RD | FLAG_RA | FLAG_AD | FLAG_CD)
    if rcode == NOTIMP:
        kept |= flags & 0x7800
    body = b""
    if question:
        try:
            if struct.unpack_from("!H", data, 4)[0] >= 1:
                name, end = read_name(data, HEADER_LEN)
                # Copy only a question that decodes the same inside our reply: no pointers.
                if end == HEADER_LEN + len(name) and end + 4 <= len(data):
                    body = data[HEADER_LEN : end + 4]
        except WireError:
            pass
    return _HDR.pack(qid, FLAG_QR | kept | (rcode & 0xF), 1 if body else 0, 0, 0, 0) + body


def error_reply(data: bytes, rcode: int, q: Query) -> bytes:
    """The server's own reply to a parsed query (miekg/dns ``SetRcode`` plus CoreDNS ``SizeAndDo``).

    The client's ID, opcode and question; RD and CD copied for a QUERY; never RA (the server did no
    recursion for this reply); the client's OPT echoed with its size and DO.
    """
    qid, flags = struct.unpack_from("!HH", data)
    out_flags = FLAG_QR | (flags & 0x7800) | (rcode & 0xF)
    if not flags & 0x7800:
        out_flags |= flags & (FLAG_RD | FLAG_CD)
    opt = b""
    if q.edns:
        opt = b"\x00\x00\x29" + struct.pack(
            "!HBBHH", q.opt_size, (rcode >> 4) & 0xFF, 0, 0x8000 if q.do else 0, 0
        )
    question = data[HEADER_LEN : q.question_end]
    return _HDR.pack(qid, out_flags, 1, 0, 0, 1 if opt else 0) + question + opt


def badvers_reply(data: bytes, q: Query) -> bytes:
    """BADVERS to an EDNS version other than 0 (CoreDNS edns.Version): an OPT of version 0 and size 0."""
    qid, flags = struct.unpack_from("!HH", data)
    out_flags = FLAG_QR | (flags & 0x7800) | (BADVERS & 0xF)
    if not flags & 0x7800:
        out_flags |= flags & (FLAG_RD | FLAG_CD)
    opt = b"\x00\x00\x29" + struct.pack("!HBBHH", 0, BADVERS >> 4, 0, 0, 0)
    return _HDR.pack(qid, out_flags, 1, 0, 0, 1) + data[HEADER_LEN : q.question_end] + opt


def truncate(reply: bytes, limit: int, opt: bytes) -> bytes:
    """Fit ``reply`` (which carries no OPT) plus ``opt`` into ``limit`` bytes.

    Whole records are kept in order while they fit; if any answer or authority record is dropped
    the TC bit is set. Compression pointers only point backwards, so a prefix of records stays valid.
    """
    if len(reply) + len(opt) <= limit:
        if opt:
            ar = struct.unpack_from("!H", reply, 10)[0]
            return reply[:10] + struct.pack("!H", ar + 1) + reply[12:] + opt
        return reply
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(reply)
    off = question_end(reply) if qd else HEADER_LEN
    recs: list[tuple[int, int, int, int]] = []
    walk_records(reply, off, an + ns + ar, recs)
    budget = limit - len(opt)
    keep = 0
    end = off
    for i, (_s, _t, _r, rec_end) in enumerate(recs):
        if rec_end > budget:
            break
        keep = i + 1
        end = rec_end
    kept_an = min(keep, an)
    kept_ns = min(max(keep - an, 0), ns)
    kept_ar = max(keep - an - ns, 0)
    if kept_an < an or kept_ns < ns:
        flags |= FLAG_TC
        # A partial answer is misleading for a client that will retry over TCP anyway.
        kept_an = kept_ns = kept_ar = 0
        end = off
    return (
        _HDR.pack(qid, flags, qd, kept_an, kept_ns, kept_ar + (1 if opt else 0)) + reply[HEADER_LEN:end] + opt
    )


def strip_opt(reply: bytes) -> bytes:
    """Remove OPT records (hop-by-hop) from a reply's additional section."""
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(reply)
    if ar == 0:
        return reply
    off = question_end(reply) if qd else HEADER_LEN
    off = walk_records(reply, off, an + ns, None)
    recs: list[tuple[int, int, int, int]] = []
    walk_records(reply, off, ar, recs)
    kept = [reply[s:e] for s, _t, rtype, e in recs if rtype != TYPE_OPT]
    if len(kept) == ar:
        return reply
    return _HDR.pack(qid, flags, qd, an, ns, len(kept)) + reply[HEADER_LEN:off] + b"".join(kept)


def rcode_of(reply: bytes) -> int:
    return reply[3] & 0xF


# Where the domain names sit in the rdata of the types that carry compressible names (RFC 3597
# section 4): the offset of each name, and the fixed bytes that follow the last one.
_RDATA_NAMES: dict[int, tuple[tuple[int, ...], int]] = {
    2: ((0,), 0),  # NS
    5: ((0,), 0),  # CNAME
    12: ((0,), 0),  # PTR
    39: ((0,), 0),  # DNAME
    15: ((2,), 0),  # MX: preference, exchange
    33: ((6,), 0),  # SRV: priority, weight, port, target
    6: ((0, -1), 20),  # SOA: mname, rname (right after mname), five 32-bit fields
}


Records = tuple[tuple[int, int, int, int], ...]  # (start, ttl offset, rtype, end) per record, OPT too


def check_reply(msg: bytes) -> bytes:
    """``msg`` if every section unpacks as its header says, else WireError (see scan_reply)."""
    return scan_reply(msg)[0]


def scan_reply(msg: bytes, question: bytes = b"") -> tuple[bytes, int, Records]:
    """``(msg, offset of the first record, its records)`` if every section unpacks, else WireError.

    What miekg/dns's Unpack rejects, we reject: a message cut short, a name that runs out or whose
    compression pointer does not point backwards into the message, rdata longer than what is left,
    counts that promise more records than there are, and names in NS/CNAME/PTR/DNAME/MX/SRV/SOA
    rdata that leave their rdata. Bytes after the last counted record are cut off (CoreDNS repacks
    the message, which drops them too). The records go on with the reply to the cache's classify.

    ``question``: the question of the query this replies to, as a parsed query's bytes (a plain
    name, then type and class). A reply that repeats it byte for byte needs no name walk there.
    """
    if len(msg) < HEADER_LEN:
        raise WireError("reply shorter than a DNS header")
    _qid, _flags, qd, an, ns, ar = _HDR.unpack_from(msg)
    off, n = HEADER_LEN, len(msg)
    to_question = b""
    first = 0
    if qd and question and msg.startswith(question, HEADER_LEN):
        first, off, to_question = 1, HEADER_LEN + len(question), b"\xc0\x0c"  # as the loop would
    for i in range(first, qd):
        qname, off = read_name(msg, off)
        if i == 0 and off == HEADER_LEN + len(qname):
            # An owner pointing at this uncompressed name (most do) decodes as it did: skip it.
            to_question = b"\xc0\x0c"
        off += 4
        if off > n:
            raise WireError("question runs past end of message")
    body, recs = off, []
    for _ in range(an + ns + ar):
        start = off
        if to_question and msg[off : off + 2] == to_question:
            off += 2
        else:
            off = read_name(msg, off)[1]
        if off + 10 > n:
            raise WireError("record runs past end of message")
        rtype, _rclass, _ttl, rdlen = _RR_FIXED.unpack_from(msg, off)
        rstart = off + 10
        off = rstart + rdlen
        if off > n:
            raise WireError("rdata runs past end of message")
        layout = _RDATA_NAMES.get(rtype)
        if layout is not None and rdlen:  # empty rdata is a valid (update-style) record for miekg too
            _check_rdata_names(msg, rstart, off, layout)
        recs.append((start, rstart - 6, rtype, off))
    return (msg if off == n else msg[:off]), body, tuple(recs)


def _check_rdata_names(msg: bytes, start: int, end: int, layout: tuple[tuple[int, ...], int]) -> None:
    at = start
    offsets, fixed_after = layout
    for rel in offsets:
        if rel >= 0:
            at = start + rel
        if at >= end:
            raise WireError("rdata too short for its names")
        at = read_name(msg[:end], at)[1]
    if at + fixed_after != end:
        raise WireError("rdata length does not match its names")
