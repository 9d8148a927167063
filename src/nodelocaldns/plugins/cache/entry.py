"""A cached answer stored as wire bytes, ready to be patched and sent.

The records section is kept as segments split at every TTL field, so the TTL for any second is
``pack(ttl).join(segments)``; CoreDNS gives every record the item's TTL, which is what makes one
join enough. The join is memoised until the TTL next changes, so a hit normally costs a few slices.
Header variants (RD as the client sent it, AD allowed or not, OPT present or not) are precomputed
and interned: many entries share the same ten bytes.

An entry the native index mirrors (server/native_udp.py) is replaced in the store by a
``Mirrored``: the same metadata, no bytes. The index holds the only copy of its records, which
the native workers serve; the rare Python use (a case-changed client, serve_stale, TCP past the
index) reads them back with ``Index.body``. Without the extension every entry stays an ``Entry``.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, ClassVar, Protocol

from nodelocaldns.dns import message, wire
from nodelocaldns.metrics.dnsstats import (
    SBASE_BY_ID,
    STAT_IDS,
    STAT_SHIFT,
    STATS_BY_ID,
    ZONE_SHIFT,
    stat_base,
    stats_of,
)
from nodelocaldns.plugins.cache.classify import Verdict

_TTL = struct.Struct("!I")
_HDR = struct.Struct("!HHHHHH")
_FLAGS_AN_NS = struct.Struct("!2xH2xHH")
_HEADER_LEN = wire.HEADER_LEN
_QR_AA, _RA, _CD, _AD = wire.FLAG_QR | wire.FLAG_AA, wire.FLAG_RA, wire.FLAG_CD, wire.FLAG_AD
_interned: dict[bytes, bytes] = {}
_interned_heads: dict[tuple[bytes, ...], tuple[bytes, ...]] = {}

_interned_offs: dict[tuple[int, ...], tuple[int, ...]] = {}


_one_offs: dict[int, tuple[int, ...]] = {}  # a one-record body's (offset,): at most 65536 of them


def _intern_offs(offs: tuple[int, ...]) -> tuple[int, ...]:
    got = _interned_offs.get(offs)
    if got is None:
        if len(_interned_offs) > 4096:
            _interned_offs.clear()
        _interned_offs[offs] = got = offs
    return got


def _intern(b: bytes) -> bytes:
    got = _interned.get(b)
    if got is None:
        if len(_interned) > 4096:
            _interned.clear()
        _interned[b] = got = b
    return got


_heads_by: dict[tuple[int, bool, bool, int, int, int], tuple[bytes, ...]] = {}


def _heads(base: int, ad_stored: bool, do: bool, an: int, ns: int, n_ar: int) -> tuple[bytes, ...]:
    """Entry.heads for these flags and counts, built once per combination (every miss needs one)."""
    hk = (base, ad_stored, do, an, ns, n_ar)
    got = _heads_by.get(hk)
    if got is not None:
        return got
    heads = []
    for idx in range(8):
        f = base | (wire.FLAG_RD if idx & 1 else 0)
        # RFC 6840 5.7-5.8: AD only to clients that asked with DO or AD.
        if ad_stored and (do or idx & 2):
            f |= wire.FLAG_AD
        extra = 1 if idx & 4 else 0
        heads.append(_intern(struct.pack("!HHHHH", f, 1, an, ns, n_ar + extra)))
    t = tuple(heads)
    got = _interned_heads.setdefault(t, t)
    if len(_heads_by) > 4096:
        _heads_by.clear()
    _heads_by[hk] = got
    return got


def head_index(flags_hi: int, flags_lo: int, opt: bool) -> int:
    """Index into Entry.heads from the query's flag bytes: RD, AD and whether an OPT goes out."""
    return (flags_hi & 1) | ((flags_lo & 0x20) >> 4) | (4 if opt else 0)


_KEEPTTL, _AA, _REFRESHING = 1, 2, 4
_no_aa: dict[bytes, bytes] = {}  # a head -> the same without AA (a miss passes the upstream's AA on)


class Cached:
    """What every cached reply offers the store, the handler and the fast paths."""

    if not TYPE_CHECKING:  # no __dict__ for the subclasses; mypy would refuse the fields below
        __slots__ = ()
    heads: tuple[bytes, ...]
    offs: tuple[int, ...]
    stored: float
    orig: int
    sbase: int
    fl: int
    hits: int
    last_hit: float
    memo_until: float
    memo: bytes  # Entry only: read it only while now < memo_until (never true for a Mirrored)
    tail: bytes  # UDPWorker's rendered-tail memos (Entry; a Mirrored reads b"" and keeps nothing)
    tail_edns: bytes
    q: bytes | None

    # What the packed stat id knows, for the slow path and metrics (stats_of, inlined: the
    # store reads kind and rcode on every miss).
    @property
    def _stat(self) -> tuple[int, int, int, int]:
        return stats_of(self.sbase)

    @property
    def qtype(self) -> int:
        return STATS_BY_ID[self.sbase >> STAT_SHIFT][0]

    @property
    def rcode(self) -> int:
        return STATS_BY_ID[self.sbase >> STAT_SHIFT][1]

    @property
    def kind(self) -> int:
        return STATS_BY_ID[self.sbase >> STAT_SHIFT][2]

    @property
    def size(self) -> int:
        return STATS_BY_ID[self.sbase >> STAT_SHIFT][3]

    @property
    def expires(self) -> float:
        return self.stored + self.orig

    @property
    def refreshing(self) -> bool:
        return bool(self.fl & _REFRESHING)

    @refreshing.setter
    def refreshing(self, value: bool) -> None:
        self.fl = self.fl | _REFRESHING if value else self.fl & ~_REFRESHING

    def ttl(self, now: float) -> int:
        """Seconds left (CoreDNS: origTTL - floor(elapsed)); <= 0 means expired."""
        return self.orig - int(now - self.stored)

    def body(self, now: float) -> bytes | None:
        """The records section with TTLs for ``now``, or None once expired."""
        raise NotImplementedError

    def body_with_ttl(self, ttl: int) -> bytes | None:
        """The records section with every TTL set to ``ttl`` (None: a mirrored entry's index lost it)."""
        raise NotImplementedError

    def orig_body(self) -> bytes | None:
        """The records section with every TTL at ``orig``, as a native index stores it."""
        return self.body_with_ttl(self.orig)

    def render(self, data: bytes, q: wire.Query, body: bytes, limit: int, aa: bool = True) -> bytes:
        """The reply to ``data``: client ID, RD/CD, question case and OPT; truncated to ``limit``."""
        opt = wire.client_opt(q)
        head = self.heads[(data[2] & 1) | ((data[3] & 0x20) >> 4)]  # head_index(.., False), inlined
        if not aa and not self.fl & _AA:
            got = _no_aa.get(head)
            if got is None:
                if len(_no_aa) > 4096:
                    _no_aa.clear()
                got = _no_aa[head] = (
                    struct.pack("!H", struct.unpack_from("!H", head)[0] & ~wire.FLAG_AA) + head[2:]
                )
            head = got
        question = data[_HEADER_LEN : q.question_end]
        stored = self.q
        if stored is None:  # the stored question is the client's with its name in lowercase
            stored = question if question == question.lower() else question[:-4].lower() + question[-4:]
        if stored == question:
            reply = data[:2] + head + question + body
        else:
            # The client wrote the name in another case: expand the names against the stored
            # question and compress them again against the client's (case-sensitively, as
            # miekg/dns does), so every owner keeps its stored case.
            m = message.decode(data[:2] + head + stored + body)
            m.question = question
            reply = message.encode(m)
        return wire.truncate(reply, limit, opt)


class Entry(Cached):
    """One cached reply. Slots are few on purpose: four full caches hold ~80k of these."""

    __slots__ = ("heads", "memo", "offs", "memo_until", "stored", "orig", "sbase", "tail", "tail_edns", "fl",
                 "hits", "last_hit", "q")  # fmt: skip

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
        kind = verdict.kind
        assert kind is not None
        flags, an, ns = _FLAGS_AN_NS.unpack_from(reply)
        recs = verdict.records
        start = verdict.body_start
        ttl = verdict.ttl
        # The body with OPT removed (it is always last, see classify) and every TTL set to the item TTL.
        if len(recs) == 1:  # the common miss: three slices, no bytearray (a third of the cost)
            ttl_off, end = recs[0][1], recs[0][3]
            self.memo = memo = reply[start:ttl_off] + _TTL.pack(ttl) + reply[ttl_off + 4 : end]
            off = ttl_off - start
            offs = _one_offs.get(off)
            if offs is None:
                offs = _one_offs[off] = (off,)
            self.offs = offs
        elif recs:
            body = bytearray(reply[start : recs[-1][3]])
            offs = tuple([r[1] - start for r in recs])
            pack = _TTL.pack_into
            for off in offs:
                pack(body, off, ttl)
            self.memo = memo = bytes(body)
            self.offs = _intern_offs(offs)
        else:
            self.memo = memo = b""
            self.offs = ()
        # Owner names keep the case they were stored with (CoreDNS stores the records and only
        # takes the question from the client). The body's pointers into the question read the
        # client's bytes, which is right only when those are the stored ones: ``q`` is the stored
        # question when its name has capitals, None when it is all lowercase (the usual case, so
        # most entries spend no bytes on it and the fast path tests it with ``is None``). A whole
        # question in lowercase has a lowercase name: only one that is not needs the name cut out.
        sq = reply[_HEADER_LEN:start]
        self.q = None if sq == sq.lower() or sq[:-4] == sq[:-4].lower() else sq
        rcode = flags & 0xF
        base = _QR_AA | (flags & _RA) | (_CD if cd else 0) | rcode
        n_ar = len(recs) - an - ns
        hk = (base, flags & _AD != 0, do, an, ns, n_ar)  # _heads' own key: its lookup, inlined
        heads = _heads_by.get(hk)
        self.heads = heads if heads is not None else _heads(base, flags & _AD != 0, do, an, ns, n_ar)
        sk = (qtype, rcode, kind, start + len(memo))  # stat_base, inlined
        sid = STAT_IDS.get(sk)
        self.sbase = SBASE_BY_ID[sid] if sid is not None else stat_base(*sk)
        self.orig = ttl
        self.stored = self.last_hit = now
        if keepttl:
            self.fl = _KEEPTTL | ((flags >> 9) & _AA)  # FLAG_AA (0x400) >> 9 is _AA
            self.memo_until = now + ttl
        else:
            self.fl = (flags >> 9) & _AA
            self.memo_until = now + 1
        self.hits = 0
        self.tail = self.tail_edns = b""

    def body(self, now: float) -> bytes | None:
        """The records section with TTLs for ``now``, or None once expired."""
        if now < self.memo_until:
            return self.memo
        elapsed = int(now - self.stored)
        ttl = self.orig - elapsed
        if ttl <= 0:
            return None
        if self.fl & _KEEPTTL:
            self.memo_until = self.stored + self.orig
            return self.memo
        self.memo = self.body_with_ttl(ttl)
        self.memo_until = self.stored + elapsed + 1
        self.tail = self.tail_edns = b""
        return self.memo

    def orig_body(self) -> bytes:
        # The memo is still the stored body (TTLs at orig) until body() first moves it on: a
        # new entry's, on every miss the index mirrors, needs no copy.
        if self.memo_until <= self.stored + 1 or self.fl & _KEEPTTL:
            return self.memo
        return self.body_with_ttl(self.orig)

    def body_with_ttl(self, ttl: int) -> bytes:
        b = bytearray(self.memo)
        v = max(ttl, 0)
        for off in self.offs:
            _TTL.pack_into(b, off, v)
        return bytes(b)

    def mirrored(self, kind: type[Mirrored], key: bytes) -> Mirrored:
        """This entry without its bytes, once ``kind.src`` (a native index, ``Mirrored.bound``)
        holds them under ``key``."""
        m = kind.__new__(kind, self.stored)
        m.key = key
        if self.fl & _REFRESHING:
            _refreshing.add(m)
        return m


class BodySource(Protocol):
    """Where a mirrored entry's records and metadata live (nodelocaldns._native.Index)."""

    def body(self, key: bytes, ttl: int = -1, stored: float | None = None) -> bytes | None: ...

    def meta(
        self, key: bytes, stored: float | None = None
    ) -> tuple[bytes, tuple[int, ...], int, int, int, bytes | None] | None: ...


# What a Mirrored reads once its index holds another entry for its key (or none): expired at
# once, no bytes. Only an object the store already let go of can see this.
_GONE: tuple[bytes, tuple[int, ...], int, int, int, bytes | None] = (b"", (), 0, 0, 0, None)
_LOW = (1 << ZONE_SHIFT) - 1  # the stat id bits of an index entry's stat (the rest: its zone)
_refreshing: set[Mirrored] = set()  # Mirrored entries with a refresh in flight (Cached.refreshing)


class Mirrored(float, Cached):  # a float: see below
    """A cached reply whose records only the native index holds (``src`` under ``key``).

    Four full caches hold ~80k of these, so the object is its stored time (a float subclass: the
    value is ``stored``, no separate float object) plus ``key``, 48 bytes in all. Everything else
    (heads, TTL offsets, TTL, stat id, flags, stored question) is what the index stored with the
    bytes, read back with ``Index.meta`` on the rare Python use. ``stored`` doubles as the identity
    check: the index returns nothing if it holds another entry for ``key``. Prefetch never meets
    one (a prefetching cache has no fast path, so nothing is mirrored); a refresh in flight is
    noted in ``_refreshing``. Being a float is an implementation detail: identity equality and
    hashing, and always true (``smap.get(key) or dmap.get(key)`` must never skip one).
    """

    __slots__ = ("key",)
    memo_until = float("-inf")  # the fast paths' "memo still valid" test fails: they call body()
    last_hit = 0.0
    hits = 0
    src: ClassVar[BodySource]
    key: bytes
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        return True

    @property
    def stored(self) -> float:  # type: ignore[override]
        return float(self)

    @classmethod
    def bound(cls, src: BodySource) -> type[Mirrored]:
        """The Mirrored type whose entries read their bytes from ``src``."""
        return type("Mirrored", (cls,), {"__slots__": (), "src": src, "__doc__": cls.__doc__})

    def _meta(self) -> tuple[bytes, tuple[int, ...], int, int, int, bytes | None]:
        return self.src.meta(self.key, self.stored) or _GONE

    # The metadata, read back (mypy: Cached declares these as plain attributes).
    @property
    def heads(self) -> tuple[bytes, ...]:  # type: ignore[override]
        h = self._meta()[0]
        return tuple(h[i : i + 10] for i in range(0, len(h), 10))

    @property
    def offs(self) -> tuple[int, ...]:  # type: ignore[override]
        return self._meta()[1]

    @property
    def orig(self) -> int:  # type: ignore[override]
        return self._meta()[2]

    @property
    def sbase(self) -> int:  # type: ignore[override]
        return self._meta()[3] & _LOW

    @property
    def q(self) -> bytes | None:  # type: ignore[override]
        return self._meta()[5]

    @property
    def fl(self) -> int:
        return self._meta()[4] | (_REFRESHING if self in _refreshing else 0)

    @fl.setter
    def fl(self, value: int) -> None:
        if value & _REFRESHING:
            _refreshing.add(self)
        else:
            _refreshing.discard(self)

    def body(self, now: float) -> bytes | None:
        _h, _o, orig, _s, fl, _q = self._meta()
        keep = fl & _KEEPTTL
        if now < self.stored + (orig if keep else 1):  # as Entry's memo: served as stored
            ttl = orig
        else:
            ttl = orig - int(now - self.stored)
            if ttl <= 0:
                return None
            if keep:
                ttl = orig
        return self.src.body(self.key, ttl, self.stored)

    def body_with_ttl(self, ttl: int) -> bytes | None:
        return self.src.body(self.key, max(ttl, 0), self.stored)

    # UDPWorker (the pure-Python path, where nothing is mirrored) memoises rendered tails on an
    # Entry; here there is nothing to keep them in, so they read empty and writes are dropped.
    @property
    def tail(self) -> bytes:
        return b""

    @tail.setter
    def tail(self, _v: bytes) -> None:
        pass

    tail_edns = tail

    def materialize(self) -> Entry | None:
        """A full ``Entry`` with its own copy of the bytes (before the index forgets them)."""
        meta = self.src.meta(self.key, self.stored)
        memo = self.src.body(self.key, -1, self.stored)
        if meta is None or memo is None:
            return None
        h, offs, orig, stat, fl, q = meta
        e = Entry.__new__(Entry)
        e.heads = _interned_heads.setdefault(t := tuple(h[i : i + 10] for i in range(0, len(h), 10)), t)
        e.offs, e.stored, e.orig, e.sbase = _intern_offs(offs), self.stored, orig, stat & _LOW
        e.fl, e.q, e.hits, e.last_hit, e.memo = fl | (self.fl & _REFRESHING), q, 0, self.stored, memo
        e.memo_until = self.stored + (orig if fl & _KEEPTTL else 1)
        e.tail = e.tail_edns = b""
        return e
