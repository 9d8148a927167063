"""Decide whether and for how long a reply is cached (CoreDNS response.Typify and computeTTL).

Pure: reply bytes in, a verdict out. The walk over the records is the one full parse an answer
gets; everything served from the cache afterwards is patched bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache.setup import CacheConfig


class RType(Enum):
    NOERROR = "NoError"
    NAMEERROR = "NameError"
    NODATA = "NoData"
    DELEGATION = "Delegation"
    SERVERERROR = "ServerError"
    META = "Meta"
    UPDATE = "Update"
    OTHERERROR = "OtherError"


SUCCESS, DENIAL = 0, 1
# An Enum member read through its class costs ~0.2 us (EnumType's lookup); a module global, nothing.
_NOERROR = RType.NOERROR

_HDR = struct.Struct("!HHHHHH")
_U32 = struct.Struct("!I")
_NO_TYPES: frozenset[int] = frozenset()


# Not frozen: every miss builds one, and a frozen dataclass sets each field through
# object.__setattr__ (3 us here, against under 1 us). Nothing writes to a verdict once made.
@dataclass(slots=True)
class Verdict:
    kind: int | None  # SUCCESS, DENIAL or None (not cached)
    ttl: int  # the item TTL every record is rewritten to
    rtype: RType
    records: tuple[tuple[int, int, int, int], ...]  # (start, ttl_offset, rtype, end), OPT excluded
    body_start: int  # offset of the first record
    reason: str = ""


def _chain_ends_in_qtype(
    reply: bytes, recs: list[tuple[int, int, int, int]] | wire.Records, an: int, qname: bytes, qtype: int
) -> bool:
    """Does the answer section lead from qname, through CNAMEs, to a record of qtype?"""
    if an == 1 and recs:
        # The common miss: one answer of the asked type, its owner the question name (pointer to
        # offset 12, or spelled out). Nothing else would be read, so nothing else can fail.
        start, _ttl_off, rtype, _end = recs[0]
        if (rtype == qtype or qtype == 255) and rtype != wire.TYPE_CNAME:
            at = wire.HEADER_LEN if reply[start : start + 2] == b"\xc0\x0c" else start
            if reply[at : at + len(qname)].lower() == qname:
                return True
    answers = []
    for start, ttl_off, rtype, _end in recs[:an]:
        owner, _ = wire.read_name(reply, start)
        target = wire.read_name(reply, ttl_off + 6)[0].lower() if rtype == wire.TYPE_CNAME else b""
        answers.append((owner.lower(), rtype, target))
    current = qname
    for _ in range(len(answers) + 1):
        nxt = None
        for owner, rtype, target in answers:
            if owner != current:
                continue
            if rtype == qtype or qtype == 255:
                return True
            if rtype == wire.TYPE_CNAME:
                nxt = target
        if nxt is None:
            return False
        current = nxt
    return False


def _answers_only(
    reply: bytes, recs: wire.Records, an: int, qname: bytes, qtype: int, cfg: CacheConfig, body_start: int
) -> Verdict | None:
    """The common miss, decided without the general walk: a query (opcode 0) answered NOERROR,
    not truncated, with answers only (an OPT aside) whose first is of the asked type and owned by
    the question name. What ``classify`` below would return for it, or None when it is not that
    case. (That first answer ends the chain walk at once; the TTL is the least of the answers'.)"""
    start, ttl_off, rtype, _end = recs[0]
    if rtype != qtype or rtype == wire.TYPE_CNAME or qtype in (wire.TYPE_AXFR, wire.TYPE_IXFR, wire.TYPE_OPT):
        return None
    at = wire.HEADER_LEN if reply[start : start + 2] == b"\xc0\x0c" else start
    if reply[at : at + len(qname)].lower() != qname:
        return None
    ttl = _U32.unpack_from(reply, ttl_off)[0]
    if an > 1:
        for r in recs[1:an]:
            if r[2] == wire.TYPE_OPT:
                return None  # the general walk's "OPT record is not last"
            t = _U32.unpack_from(reply, r[1])[0]
            if t < ttl:
                ttl = t
    # min(max(min(ttl, max), min), max) and then max(.., 0), as the general walk has it, without
    # the builtins' calls (each of which costs what the rest of this does).
    max_ttl = cfg.success_max_ttl
    if max_ttl < ttl:
        ttl = max_ttl
    min_ttl = cfg.success_min_ttl
    if min_ttl > ttl:
        ttl = min_ttl
    if max_ttl < ttl:
        ttl = max_ttl
    if ttl <= 0:
        return Verdict(None, 0 if 0 > ttl else ttl, _NOERROR, recs[:an], body_start, "zero TTL")
    return Verdict(SUCCESS, ttl, _NOERROR, recs[:an], body_start)


def classify(
    reply: bytes, qname: bytes, qtype: int, cfg: CacheConfig, scan: tuple[int, wire.Records] | None = None
) -> Verdict:
    """Type the reply and compute its cache TTL. Raises WireError on a malformed reply.

    ``scan``: the reply's first record offset and records, when its writer walked it already
    (forward's wire.scan_reply of a one-question reply); else they are walked here.
    """
    _id, flags, qd, an, ns, ar = _HDR.unpack_from(reply)
    allrecs: list[tuple[int, int, int, int]] | wire.Records
    if scan is not None:
        body_start, allrecs = scan
        if an and not ns and not flags & 0x7A0F and (not ar or ar == 1 and allrecs[an][2] == wire.TYPE_OPT):
            got = _answers_only(reply, allrecs, an, qname, qtype, cfg, body_start)
            if got is not None:
                return got
    else:
        off = wire.question_end(reply) if qd else wire.HEADER_LEN
        body_start = off
        allrecs = []
        wire.walk_records(reply, off, an + ns + ar, allrecs)
    # At most one OPT, and only as the last record; the others are what gets its TTL rewritten.
    recs = allrecs[:-1] if allrecs and allrecs[-1][2] == wire.TYPE_OPT else allrecs
    for r in recs:
        if r[2] == wire.TYPE_OPT:
            return Verdict(None, 0, RType.OTHERERROR, (), body_start, "OPT record is not last")
    rcode = flags & 0xF
    opcode = (flags >> 11) & 0xF
    auth_types = {r[2] for r in recs[an : an + ns]} if ns else _NO_TYPES
    has_soa = wire.TYPE_SOA in auth_types

    answers = True
    if opcode == 5:
        rt = RType.UPDATE
    elif opcode == 4 or qtype in (wire.TYPE_AXFR, wire.TYPE_IXFR):
        rt = RType.META
    elif an > 0 and rcode == wire.NOERROR:
        rt = RType.NOERROR
        # An answer that does not answer (a CNAME chain ending elsewhere) is NoData with an SOA
        # (cacheResponseType) and otherwise still NoError, but never stored.
        answers = _chain_ends_in_qtype(reply, recs, an, qname, qtype)
        if not answers and has_soa:
            rt, answers = RType.NODATA, True
    elif an > 0 and rcode == wire.NXDOMAIN:
        rt = RType.OTHERERROR
    elif has_soa and rcode == wire.NOERROR:
        rt = RType.NODATA
    elif rcode == wire.NXDOMAIN:
        rt = RType.NAMEERROR
    elif rcode in (wire.SERVFAIL, wire.NOTIMP):
        rt = RType.SERVERERROR
    elif wire.TYPE_NS in auth_types and rcode == wire.NOERROR:
        rt = RType.DELEGATION
    elif rcode == wire.NOERROR:
        rt = RType.NOERROR
    else:
        rt = RType.OTHERERROR

    # The duration comes from the type alone, and CoreDNS rewrites every TTL of the reply to it
    # whether or not it then stores the reply (cache ResponseWriter.WriteMsg): ``ttl`` is set in
    # every verdict, ``kind`` says whether to store.
    if rt is RType.SERVERERROR:
        ttl = int(cfg.servfail_ttl)
        kind = DENIAL
    else:
        kind = DENIAL if rt in (RType.NAMEERROR, RType.NODATA) else SUCCESS
        max_ttl = cfg.success_max_ttl if kind == SUCCESS else cfg.denial_max_ttl
        min_ttl = cfg.success_min_ttl if kind == SUCCESS else cfg.denial_min_ttl
        # The SOA record's own TTL counts; its MINIMUM field does not (as in CoreDNS). Anything but
        # NoError/NameError/NoData gets the 5 s default (MinimalTTL).
        msg_ttl = 5
        if rt in (RType.NOERROR, RType.NAMEERROR, RType.NODATA):
            msg_ttl = min([_U32.unpack_from(reply, r[1])[0] for r in recs]) if recs else 5
        msg_ttl = min(msg_ttl, max_ttl)
        ttl = min(max(msg_ttl, min_ttl), max_ttl)
    ttl = max(ttl, 0)
    reason = ""
    if flags & wire.FLAG_TC:
        reason = "truncated"
    elif rt in (RType.OTHERERROR, RType.META, RType.UPDATE):
        reason = rt.value
    elif rt is RType.NAMEERROR and not has_soa:
        reason = "NXDOMAIN without SOA"
    elif not answers:
        reason = "answer does not answer the question"
    elif ttl <= 0:
        reason = "zero TTL"
    if reason:
        return Verdict(None, ttl, rt, tuple(recs), body_start, reason)
    return Verdict(kind, ttl, rt, tuple(recs), body_start)
