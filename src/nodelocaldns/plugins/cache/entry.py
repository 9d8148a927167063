"""A cached answer stored as wire bytes, ready to be patched and sent.

The records section is kept as segments split at every TTL field, so the TTL for any second is
``pack(ttl).join(segments)``; CoreDNS gives every record the item's TTL, which is what makes one
join enough. The join is memoised until the TTL next changes, so a hit normally costs a few slices.
Header variants (RD as the client sent it, AD allowed or not, OPT present or not) are precomputed
and interned: many entries share the same ten bytes.
"""

from __future__ import annotations

import struct

from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache.classify import Verdict

_TTL = struct.Struct("!I")
_interned: dict[bytes, bytes] = {}
_interned_heads: dict[tuple[bytes, ...], tuple[bytes, ...]] = {}

# Stat ids: what the fast path's packed counter key needs to know about an entry, interned.
STAT_IDS: dict[tuple[int, int, int, int], int] = {}
STATS_BY_ID: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]  # (qtype, rcode, kind, size without OPT)


def stat_id(qtype: int, rcode: int, kind: int, size: int) -> int:
    k = (qtype, rcode, kind, size)
    sid = STAT_IDS.get(k)
    if sid is None:
        sid = STAT_IDS[k] = len(STATS_BY_ID)
        STATS_BY_ID.append(k)
    return sid


def _intern(b: bytes) -> bytes:
    got = _interned.get(b)
    if got is None:
        if len(_interned) > 4096:
            _interned.clear()
        _interned[b] = got = b
    return got


def head_index(flags_hi: int, flags_lo: int, opt: bool) -> int:
    """Index into Entry.heads from the query's flag bytes: RD, AD and whether an OPT goes out."""
    return (flags_hi & 1) | ((flags_lo & 0x20) >> 4) | (4 if opt else 0)


class Entry:
    __slots__ = (
        "kind", "rcode", "heads", "segs", "size", "orig", "stored", "expires", "memo", "memo_until",
        "keepttl", "hits", "last_hit", "refreshing", "qtype", "aa_upstream", "sbase", "tail", "tail_edns",
    )  # fmt: skip

    def __init__(
        self,
        reply: bytes,
        verdict: Verdict,
        now: float,
        do: bool,
        cd: bool,
        qtype: int,
        keepttl: bool = False,
    ) -> None:
        assert verdict.kind is not None
        _id, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
        recs = verdict.records
        n_ar = len(recs) - an - ns
        segs = []
        pos = verdict.body_start
        for _start, ttl_off, _rtype, _end in recs:
            segs.append(reply[pos:ttl_off])
            pos = ttl_off + 4
        last_end = recs[-1][3] if recs else verdict.body_start
        segs.append(reply[pos:last_end])
        self.segs = tuple(segs)
        self.kind = verdict.kind
        self.rcode = flags & 0xF
        self.qtype = qtype
        self.aa_upstream = bool(flags & wire.FLAG_AA)
        ad_stored = bool(flags & wire.FLAG_AD)
        base = wire.FLAG_QR | wire.FLAG_AA | (flags & wire.FLAG_RA) | (wire.FLAG_CD if cd else 0) | self.rcode
        heads = []
        for idx in range(8):
            f = base | (wire.FLAG_RD if idx & 1 else 0)
            # RFC 6840 5.7-5.8: AD only to clients that asked with DO or AD.
            if ad_stored and (do or idx & 2):
                f |= wire.FLAG_AD
            extra = 1 if idx & 4 else 0
            heads.append(_intern(struct.pack("!HHHHH", f, 1, an, ns, n_ar + extra)))
        t = tuple(heads)
        self.heads = _interned_heads.setdefault(t, t)
        self.size = (
            wire.HEADER_LEN + (verdict.body_start - wire.HEADER_LEN) + sum(map(len, segs)) + 4 * len(recs)
        )
        self.orig = verdict.ttl
        self.stored = now
        self.expires = now + verdict.ttl
        self.keepttl = keepttl
        self.memo = b""
        self.memo_until = -1.0
        self.hits = 0
        self.last_hit = now
        self.refreshing = False
        self.tail = self.tail_edns = b""
        self.sbase = stat_id(qtype, self.rcode, self.kind, self.size) << 20

    def ttl(self, now: float) -> int:
        """Seconds left (CoreDNS: origTTL - floor(elapsed)); <= 0 means expired."""
        return self.orig - int(now - self.stored)

    def body(self, now: float) -> bytes | None:
        """The records section with TTLs for ``now``, or None once expired."""
        if now < self.memo_until:
            return self.memo
        elapsed = int(now - self.stored)
        ttl = self.orig - elapsed
        if ttl <= 0:
            return None
        self.memo = _TTL.pack(self.orig if self.keepttl else ttl).join(self.segs)
        self.tail = self.tail_edns = b""
        self.memo_until = self.expires if self.keepttl else self.stored + elapsed + 1
        return self.memo

    def body_with_ttl(self, ttl: int) -> bytes:
        return _TTL.pack(max(ttl, 0)).join(self.segs)

    def render(self, data: bytes, q: wire.Query, body: bytes, limit: int, aa: bool = True) -> bytes:
        """The reply to ``data``: client ID, RD/CD, question case and OPT; truncated to ``limit``."""
        opt = wire.client_opt(q)
        head = self.heads[head_index(data[2], data[3], False)]
        if not aa and not self.aa_upstream:
            head = struct.pack("!H", struct.unpack_from("!H", head)[0] & ~wire.FLAG_AA) + head[2:]
        reply = data[:2] + head + data[wire.HEADER_LEN : q.question_end] + body
        return wire.truncate(reply, limit, opt)
