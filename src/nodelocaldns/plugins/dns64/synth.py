"""DNS64 decisions and AAAA synthesis (CoreDNS plugin/dns64/dns64.go; RFC 6147, RFC 6052).

The runtime runs, for a query the plugin ``intercepts``:
  1. the rest of the chain for the AAAA query; if it wrote nothing, its rcode goes back unchanged;
  2. ``should_translate(reply)``; if False that reply goes back unchanged;
  3. the whole server again for ``a_query(...)`` (CoreDNS ``upstream.Lookup``), then
     ``synthesize(...)`` and counts one ``coredns_dns64_requests_translated_total``.

CoreDNS's choices, kept here: only an NXDOMAIN without answers is passed on as is (RFC 6147 5.1.2);
every other non-answer, errors included (SERVFAIL, REFUSED, NOTIMP), is treated as empty and
translated (5.1.1); with DO set, an expired RRSIG makes the reply "other error" and so translated.
The synthesized reply is a fresh NOERROR reply to the client's question (miekg ``SetReply``: RD and CD
copied, AA and RA clear) whatever the A lookup's rcode was; its TC bit is the A reply's; authority
and additional sections are the A reply's (5.3.2); non-A answers are kept (5.3.3); each AAAA's TTL is
min(A TTL, SOA TTL of the AAAA reply's authority or 600) (5.1.7).
"""

from __future__ import annotations

import ipaddress
import struct

from nodelocaldns.dns.message import (
    RR,
    TYPE_A,
    TYPE_AAAA,
    TYPE_OPT,
    TYPE_RRSIG,
    TYPE_SOA,
    Message,
    decode,
    encode,
    reply_flags,
)
from nodelocaldns.dns.wire import CLASS_IN, FLAG_TC, HEADER_LEN, NXDOMAIN, Query
from nodelocaldns.plugins.dns64.setup import DNS64Config

_OPCODE_NOTIFY = 4 << 11
_OPCODE_UPDATE = 5 << 11
_YEAR68 = 1 << 31
DEFAULT_SOA_TTL = 600


def intercepts(cfg: DNS64Config, q: Query, family: int) -> bool:
    """AAAA, class IN, from an IPv6 client (``family`` 2) unless ``allow_ipv4``."""
    if family == 1 and not cfg.allow_ipv4:
        return False
    return q.qtype == TYPE_AAAA and q.qclass == CLASS_IN


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def rrsig_valid(rdata: bytes, now: int) -> bool:
    """miekg ``RRSIG.ValidityPeriod``: inception <= now <= expiration in RFC 1982 serial arithmetic."""
    expiration: int
    inception: int
    expiration, inception = struct.unpack_from("!II", rdata, 8)
    ti = inception + _trunc_div(inception - now, _YEAR68) * _YEAR68
    te = expiration + _trunc_div(expiration - now, _YEAR68) * _YEAR68
    return ti <= now <= te


def _is_name_error(m: Message, now: int) -> bool:
    """CoreDNS ``response.Typify(...) == NameError`` for a reply to an AAAA question."""
    if m.flags & 0x7800 in (_OPCODE_UPDATE, _OPCODE_NOTIFY):
        return False
    rcode = m.rcode
    do = False
    for r in m.additional:
        if r.rtype == TYPE_OPT:
            rcode |= (r.ttl >> 24) << 4
            do = bool(r.ttl & 0x8000)
    if do:
        for r in (*m.answer, *m.authority, *m.additional):
            if r.rtype == TYPE_RRSIG and len(r.rdata) >= 18 and not rrsig_valid(r.rdata, now):
                return False  # OtherError
    return rcode == NXDOMAIN and not m.answer


def should_translate(cfg: DNS64Config, reply: bytes, now: float) -> bool:
    """Whether the chain's AAAA ``reply`` gets DNS64 treatment; ``now`` is wall-clock Unix seconds."""
    m = decode(reply)
    if _is_name_error(m, int(now)):
        return False
    if cfg.translate_all:
        return True
    return not any(r.rtype == TYPE_AAAA for r in m.answer)


def a_query(data: bytes, q: Query) -> bytes:
    """The client's query with its question replaced by (lowercased qname, A, IN); all else kept."""
    return data[:HEADER_LEN] + q.qname + struct.pack("!HH", TYPE_A, CLASS_IN) + data[q.question_end :]


def to6(prefix: ipaddress.IPv6Network, v4: bytes) -> bytes:
    """RFC 6052 section 2.2: the IPv4 bytes after the prefix, skipping the u-octet (byte 8)."""
    n = prefix.prefixlen // 8
    out = bytearray(16)
    out[:n] = prefix.network_address.packed[:n]
    i, j = n, 0
    while i < 8 and j < 4:
        out[i] = v4[j]
        i, j = i + 1, j + 1
    if i == 8:
        i += 1
    while j < 4:
        out[i] = v4[j]
        i, j = i + 1, j + 1
    return bytes(out)


def synthesize(cfg: DNS64Config, data: bytes, q: Query, aaaa_reply: bytes, a_reply: bytes | None) -> bytes:
    """The reply to the client: ``a_reply``'s A records as AAAA records under ``cfg.prefix``.

    ``a_reply`` None (the lookup wrote nothing, only an rcode) is an empty reply, as CoreDNS's server
    would have written a bare error message for it.
    """
    orig = decode(aaaa_reply)
    soa_ttl = DEFAULT_SOA_TTL
    for r in orig.authority:
        if r.rtype == TYPE_SOA:
            soa_ttl = r.ttl
    a = decode(a_reply) if a_reply is not None else Message(0, 0)
    answers = []
    for r in a.answer:
        if r.rtype != TYPE_A or len(r.rdata) != 4:
            answers.append(r)
            continue
        answers.append(RR(r.name, TYPE_AAAA, r.rclass, min(r.ttl, soa_ttl), to6(cfg.prefix, r.rdata)))
    flags = reply_flags(struct.unpack_from("!H", data, 2)[0], tc=bool(a.flags & FLAG_TC))
    extra = [r for r in a.additional if r.rtype != TYPE_OPT]  # OPT is hop-by-hop; the server adds its own
    return encode(Message(q.id, flags, data[HEADER_LEN : q.question_end], answers, a.authority, extra))
