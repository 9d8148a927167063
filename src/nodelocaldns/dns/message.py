"""A small record-level view of a DNS message: decode to records, reorder or replace them, encode.

Plugins that change the records of a reply (loadbalance reorders, dns64 replaces A with AAAA, hosts
and whoami build answers) need more than the byte patching in ``wire.py``: moving a record moves
the names that compression pointers refer to. So names are expanded on decode (owner names and the
names inside the rdata of the RFC 1035 types, plus SRV, which miekg/dns also expands) and compressed
again on encode. Rdata of every other type is carried as opaque bytes, which RFC 3597 allows
because those types must not be compressed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from nodelocaldns.dns.wire import HEADER_LEN, read_name
from nodelocaldns.errors import WireError

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_MX = 15
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_DNAME = 39
TYPE_OPT = 41
TYPE_RRSIG = 46

_HDR = struct.Struct("!HHHHHH")
_FIXED = struct.Struct("!HHIH")

# rdata layout as (bytes before the first name, number of names, fixed bytes after the names);
# only these are expanded on decode and compressed on encode (RFC 3597 section 4).
_NAMES: dict[int, tuple[int, int, int]] = {
    TYPE_NS: (0, 1, 0),
    3: (0, 1, 0),  # MD
    4: (0, 1, 0),  # MF
    TYPE_CNAME: (0, 1, 0),
    TYPE_SOA: (0, 2, 20),
    7: (0, 1, 0),  # MB
    8: (0, 1, 0),  # MG
    9: (0, 1, 0),  # MR
    TYPE_PTR: (0, 1, 0),
    14: (0, 2, 0),  # MINFO
    TYPE_MX: (2, 1, 0),
    TYPE_SRV: (6, 1, 0),
    TYPE_DNAME: (0, 1, 0),
}
# Names in these rdata are written uncompressed (RFC 2782 for SRV, RFC 6672 for DNAME) like miekg/dns.
_NO_COMPRESS_RDATA = frozenset({TYPE_SRV, TYPE_DNAME})


@dataclass(slots=True)
class RR:
    """One resource record; ``name`` and the names inside ``rdata`` are uncompressed wire names."""

    name: bytes
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes


@dataclass(slots=True)
class Message:
    id: int
    flags: int
    question: bytes = b""  # the question section exactly as it was (name, type, class), or b""
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)

    @property
    def rcode(self) -> int:
        """The header rcode (4 bits; an OPT's extended bits are not folded in)."""
        return self.flags & 0xF

    @property
    def qtype(self) -> int:
        return struct.unpack_from("!H", self.question, len(self.question) - 4)[0] if self.question else 0


def _read_rdata(msg: bytes, off: int, rtype: int, rdlen: int) -> bytes:
    end = off + rdlen
    layout = _NAMES.get(rtype)
    if layout is None:
        return msg[off:end]
    before, names, after = layout
    out = bytearray(msg[off : off + before])
    pos = off + before
    for _ in range(names):
        if pos >= end:
            raise WireError("rdata name runs past its record")
        name, pos = read_name(msg, pos)
        out += name
    if pos + after != end:
        raise WireError(f"bad rdata length for type {rtype}")
    out += msg[pos:end]
    return bytes(out)


def _read_section(msg: bytes, off: int, count: int, out: list[RR]) -> int:
    n = len(msg)
    for _ in range(count):
        name, off = read_name(msg, off)
        if off + 10 > n:
            raise WireError("record runs past end of message")
        rtype, rclass, ttl, rdlen = _FIXED.unpack_from(msg, off)
        off += 10
        if off + rdlen > n:
            raise WireError("rdata runs past end of message")
        out.append(RR(name, rtype, rclass, ttl, _read_rdata(msg, off, rtype, rdlen)))
        off += rdlen
    return off


def decode(msg: bytes) -> Message:
    """Parse a whole message (at most one question). Raises WireError."""
    if len(msg) < HEADER_LEN:
        raise WireError("message shorter than a DNS header")
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(msg)
    if qd > 1:
        raise WireError(f"message has {qd} questions")
    off = HEADER_LEN
    m = Message(qid, flags)
    if qd:
        name, off = read_name(msg, off)
        if off + 4 > len(msg):
            raise WireError("question runs past end of message")
        m.question = name + msg[off : off + 4]
        off += 4
    off = _read_section(msg, off, an, m.answer)
    off = _read_section(msg, off, ns, m.authority)
    off = _read_section(msg, off, ar, m.additional)
    if off != len(msg):
        raise WireError("trailing bytes after the last record")
    return m


def unpacked_len(msg: bytes) -> int:
    """miekg/dns ``Msg.Len()`` of the unpacked message: every name expanded (an unpacked message
    is not marked for compression), which is what CoreDNS's ``{size}`` reports for a request."""
    m = decode(msg)
    return (
        HEADER_LEN
        + len(m.question)
        + sum(len(r.name) + _FIXED.size + len(r.rdata) for r in (*m.answer, *m.authority, *m.additional))
    )


class _Writer:
    __slots__ = ("buf", "table")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.table: dict[bytes, int] = {}

    def name(self, name: bytes, compress: bool = True) -> None:
        """Write ``name``, pointing at an earlier copy of its longest known suffix."""
        pos = 0
        while name[pos]:
            suffix = name[pos:]
            at = self.table.get(suffix) if compress else None
            if at is not None:
                self.buf += struct.pack("!H", 0xC000 | at)
                return
            if len(self.buf) < 0x4000:
                self.table.setdefault(suffix, len(self.buf))
            length = name[pos]
            self.buf += name[pos : pos + 1 + length]
            pos += 1 + length
        self.buf.append(0)

    def rr(self, r: RR) -> None:
        self.name(r.name)
        start = len(self.buf)
        self.buf += _FIXED.pack(r.rtype, r.rclass, r.ttl, 0)
        layout = _NAMES.get(r.rtype)
        if layout is None:
            self.buf += r.rdata
        else:
            before, names, _after = layout
            self.buf += r.rdata[:before]
            pos = before
            for _ in range(names):
                end = _name_end(r.rdata, pos)
                self.name(r.rdata[pos:end], compress=r.rtype not in _NO_COMPRESS_RDATA)
                pos = end
            self.buf += r.rdata[pos:]
        rdlen = len(self.buf) - start - 10
        struct.pack_into("!H", self.buf, start + 8, rdlen)


def _name_end(wire_name: bytes, pos: int) -> int:
    while wire_name[pos]:
        pos += 1 + wire_name[pos]
    return pos + 1


def encode(m: Message) -> bytes:
    """Wire form of ``m`` with names compressed (exact byte match, so every name keeps its case)."""
    w = _Writer()
    w.buf += _HDR.pack(
        m.id, m.flags, 1 if m.question else 0, len(m.answer), len(m.authority), len(m.additional)
    )
    if m.question:
        w.name(m.question[:-4])
        w.buf += m.question[-4:]
    for section in (m.answer, m.authority, m.additional):
        for r in section:
            w.rr(r)
    return bytes(w.buf)


def reply_flags(query_flags: int, *, aa: bool = False, tc: bool = False, rcode: int = 0) -> int:
    """Header flags of miekg/dns ``SetReply``: QR, the opcode, RD and CD copied for a QUERY; no RA."""
    opcode = query_flags & 0x7800
    flags = 0x8000 | opcode | (rcode & 0xF)
    if opcode == 0:
        flags |= query_flags & (0x0100 | 0x0010)  # RD, CD
    if aa:
        flags |= 0x0400
    if tc:
        flags |= 0x0200
    return flags


def prepend_label(label: bytes, name: bytes) -> bytes:
    """``_udp`` + ``example.org.`` in wire form; the root gets just the one label."""
    if not 0 < len(label) < 64:
        raise WireError("bad label")
    out = bytes([len(label)]) + label + name
    if len(out) > 255:
        raise WireError("name longer than 255 octets")
    return out
