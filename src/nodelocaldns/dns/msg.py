"""A DNS message as miekg/dns holds it, over dnspython rdata: one record per entry, in wire order.

dnspython's ``Message`` groups records into RRsets (one TTL per set, merged order), which is the wrong
shape for plugins that edit replies record by record the way CoreDNS does (rewrite's reverter,
template's answers). This keeps each record with its own name, TTL and rdata, the OPT record in the
additional section, and the full 12-bit rcode; ``to_wire`` compresses names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from io import BytesIO

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.wire

from nodelocaldns.errors import WireError

TYPE_OPT = 41
_HDR = struct.Struct("!HHHHHH")


@dataclass(slots=True)
class Question:
    name: dns.name.Name
    qtype: int
    qclass: int


@dataclass(slots=True)
class Record:
    name: dns.name.Name
    rtype: int
    rclass: int  # for OPT: the UDP payload size
    ttl: int  # for OPT: extended rcode, version and flags
    rdata: dns.rdata.Rdata

    def copy(self) -> Record:
        return Record(self.name, self.rtype, self.rclass, self.ttl, self.rdata)


@dataclass(slots=True)
class Msg:
    id: int = 0
    flags: int = 0  # header flags and opcode, rcode bits excluded
    rcode: int = 0  # full rcode: header low 4 bits + OPT extended bits
    question: list[Question] = field(default_factory=list)
    answer: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)

    @property
    def opt(self) -> Record | None:
        for rr in self.additional:
            if rr.rtype == TYPE_OPT:
                return rr
        return None

    def records(self) -> list[Record]:
        return [*self.answer, *self.authority, *self.additional]

    def to_wire(self) -> bytes:
        """Render with name compression. The rcode's high bits go into the OPT record, if any."""
        opt = self.opt
        if opt is not None:
            opt.ttl = (opt.ttl & 0x00FFFFFF) | ((self.rcode >> 4) & 0xFF) << 24
        out = BytesIO()
        out.write(
            _HDR.pack(
                self.id,
                (self.flags & 0xFFF0) | (self.rcode & 0xF),
                len(self.question),
                len(self.answer),
                len(self.authority),
                len(self.additional),
            )
        )
        compress = _CaseSensitiveCompression()
        for q in self.question:
            q.name.to_wire(out, compress)
            out.write(struct.pack("!HH", q.qtype, q.qclass))
        for rr in self.records():
            rr.name.to_wire(out, compress)
            out.write(struct.pack("!HHI", rr.rtype, rr.rclass, rr.ttl & 0xFFFFFFFF))
            at = out.tell()
            out.write(b"\0\0")
            rr.rdata.to_wire(out, compress if _compressible(rr.rtype) else None)
            end = out.tell()
            out.seek(at)
            out.write(struct.pack("!H", end - at - 2))
            out.seek(end)
        return out.getvalue()


class _CaseSensitiveCompression(dict):  # type: ignore[type-arg]
    """A name compression table keyed by exact labels: dnspython's Names compare case-insensitively,
    so a pointer would give an answer the question's case; miekg/dns compresses only identical names."""

    def get(self, key: dns.name.Name, default: object = None) -> object:
        return super().get(key.labels, default)

    def __setitem__(self, key: dns.name.Name, value: int) -> None:
        super().__setitem__(key.labels, value)


# RFC 3597: only the RFC 1035 types may have their rdata names compressed.
_COMPRESSIBLE = {2, 3, 4, 5, 6, 7, 8, 9, 12, 14, 15}


def _compressible(rtype: int) -> bool:
    return rtype in _COMPRESSIBLE


def from_wire(wire: bytes) -> Msg:
    """Parse a whole message. Raises WireError (FORMERR) for a malformed one."""
    try:
        return _parse(wire)
    except (dns.exception.DNSException, struct.error, ValueError, IndexError) as exc:
        raise WireError(f"malformed message: {exc}") from None


def _parse(wire: bytes) -> Msg:
    parser = dns.wire.Parser(wire)
    ident, flags, qd, an, ns, ar = parser.get_struct("!HHHHHH")
    msg = Msg(id=ident, flags=flags & 0xFFF0, rcode=flags & 0xF)
    for _ in range(qd):
        name = parser.get_name(None, True)
        qtype, qclass = parser.get_struct("!HH")
        msg.question.append(Question(name, qtype, qclass))
    for section, count in ((msg.answer, an), (msg.authority, ns), (msg.additional, ar)):
        for _ in range(count):
            name = parser.get_name(None, True)
            rtype, rclass, ttl, rdlen = parser.get_struct("!HHIH")
            with parser.restrict_to(rdlen):
                rdata = dns.rdata.from_wire_parser(
                    dns.rdataclass.RdataClass.make(rclass), dns.rdatatype.RdataType.make(rtype), parser
                )
            section.append(Record(name, rtype, rclass, ttl, rdata))
    opt = msg.opt
    if opt is not None:
        msg.rcode |= ((opt.ttl >> 24) & 0xFF) << 4
    return msg
