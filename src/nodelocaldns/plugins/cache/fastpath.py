"""The cache's fast path: a fresh hit answered from stored wire bytes, no message object built.

``answer`` is the reference: query bytes, ``now`` and the listener's hit memo in; the reply bytes
(plus what the caller needs to count the hit) or None ("not mine: run the chain") out. TCP calls
it; the UDP thread inlines the same steps (server/listener.py says why) and a differential test
holds the two to the same bytes.

The memo maps a question, as the key codec below writes it, to the cache maps of the block that
owns it; the slow path fills it (``remember``) once a name has been routed and parsed properly, so
the fast path never routes or parses anything itself.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache.entry import Cached

NOEDNS = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QD=1, AN=NS=AR=0
EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # QD=1, AR=1 (the OPT)
OPT_HEAD = b"\x00\x00\x29"  # root owner, TYPE OPT
DO_FLAGS = (b"\x00\x00\x00\x00\x00\x00", b"\x00\x00\x80\x00\x00\x00")  # ext rcode, version, DO, rdlen
FLAG_SUFFIX = (b"", b"\x01", b"\x02", b"\x03")  # DO | CD << 1
_QT = struct.Struct("!HH")
_SIZE = struct.Struct("!H")

# (success map, denial map, zone bits, zone accumulator, reply transform, UDP size cap): one
# shared tuple per (listener, zone). The last two are what plugins ahead of the cache do to a hit
# (core.plugin.Runtime.reply_transform, fast_path_udp_max): None and 65535 in a plain block.
Route = tuple[dict[bytes, Cached], dict[bytes, Cached], int, Any, Callable[[bytes], bytes] | None, int]
NO_CAP = 65535
Hit = tuple[bytes, Cached, Route, int]  # reply, entry, route, counter bits (DO: 2, EDNS: 1)


# -- the key codec: the one cache-key rule ---------------------------------------------------------
# Lowercased qname, then qtype and qclass as sent, then a DO/CD byte when either is set (CoreDNS key
# order, as raw bytes). The name is lowercased, never type and class: HTTPS (0x0041) is not TYPE97.


def question_key(data: bytes, qend: int) -> bytes:
    """The key of the question ``data[12:qend]`` without flags (what the memo is keyed by)."""
    return data[12 : qend - 4].lower() + data[qend - 4 : qend]


def flagged(qkey: bytes, do: int, cd: int) -> bytes:
    """The cache key: ``qkey`` plus the DO/CD byte when either is set."""
    return qkey + FLAG_SUFFIX[(1 if do else 0) | (2 if cd else 0)] if do or cd else qkey


def key_of(q: wire.Query) -> bytes:
    """The cache key of a parsed query (same bytes as ``flagged(question_key(...))``)."""
    return flagged(q.qname + _QT.pack(q.qtype, q.qclass), q.do, q.cd)


def memo_key(data: bytes, q: wire.Query) -> bytes:
    """The memo key for a parsed query, or b"" if the fast path could never find it again.

    Only uncompressed names with no zero byte inside a label: the fast path finds the question end
    at the first zero byte.
    """
    end = q.question_end
    qkey = question_key(data, end)
    if qkey.find(0) == len(q.qname) - 1 and qkey.startswith(q.qname):
        return qkey
    return b""


# -- the reference -------------------------------------------------------------------------------


def answer(data: bytes, now: float, memo: Mapping[bytes, Route], tcp: bool,
           stale: tuple[float, int] | None = None) -> Hit | None:  # fmt: skip
    """A fresh cache hit for ``data`` as final reply bytes, or None: let the slow path decide.

    ``stale`` (window, response TTL): the owning block's serve_stale in immediate mode. An entry
    expired for less than the window is then answered too, every TTL set to the response TTL:
    the bytes ``CacheHandler._serve_stale`` sends (the native worker's stale answers are held to
    these); the caller counts it as served stale and starts the refresh.

    Raises nothing on any input (a short or odd packet is simply not a hit).
    """
    counts = data[4:12]
    if counts == NOEDNS:
        edns = 0
    elif counts == EDNS:
        edns = 4
    else:
        return None
    qend = data.find(0, 12) + 5
    if data[2] & 0xFE or qend < 17:  # QR, opcode, AA or TC set; no name end
        return None
    q = question_key(data, qend)
    route = memo.get(q)
    if route is None:
        return None
    smap, dmap, _zb, _acc, transform, cap = route
    if edns:
        if (
            data[qend : qend + 3] != OPT_HEAD
            or len(data) < qend + 11
            or data[qend + 6]  # EDNS version 0 only (BADVERS is the slow path's)
            or len(data) != qend + 11 + ((data[qend + 9] << 8) | data[qend + 10])
        ):
            return None
        do = data[qend + 7] & 0x80
        # The reply's OPT echoes the client's size as sent (CoreDNS SizeAndDo), even below 512; as
        # a limit, below 512 means 512 (the test below).
        limit = (data[qend + 3] << 8) | data[qend + 4]
        opt = OPT_HEAD + data[qend + 3 : qend + 5] + DO_FLAGS[1 if do else 0]
        if limit > cap:  # bufsize: the chain sees (and echoes) the lowered size
            limit = cap
            opt = OPT_HEAD + _SIZE.pack(cap) + DO_FLAGS[1 if do else 0]
    else:
        if len(data) != qend:
            return None
        do = 0
        limit = 512
        opt = b""
    key = flagged(q, do, data[3] & 0x10)
    e = smap.get(key) or dmap.get(key)
    if e is None:
        return None
    # Owner names keep their stored case, and the stored body points into the question: only a
    # client that wrote the name exactly as stored is spliced; Entry.render handles the rest.
    client = data[12:qend]
    if client == q:  # written in lowercase: the entry must be stored in lowercase (q None)
        if e.q is not None:
            return None
    elif e.q != client:
        return None
    body = e.memo if now < e.memo_until else e.body(now)
    if body is None:
        if stale is None or not now - e.expires < stale[0]:
            return None
        body = e.body_with_ttl(stale[1])
        if body is None:
            return None
    head = e.heads[(data[2] & 1) | ((data[3] & 0x20) >> 4) | edns]
    reply = b"".join((data[:2], head, data[12:qend], body, opt))
    if not tcp and len(reply) > 512 and len(reply) > limit:
        return None  # needs truncation: the slow path's
    if transform is not None:
        reply = transform(reply)
    return reply, e, route, (do >> 6) | (edns >> 2)


def remember(memo: dict[bytes, Route], routes: dict[str, Route], qkey: bytes, zone: str, maps: Any,
             acc: Any, limit: int, transform: Callable[[bytes], bytes] | None = None,
             cap: int = NO_CAP) -> None:  # fmt: skip
    """Let the fast path find ``qkey`` (answered by the slow path for ``zone``) from now on."""
    if len(memo) >= limit:
        memo.clear()
    route = routes.get(zone)
    if route is None:
        route = routes[zone] = (maps[0], maps[1], acc.bits, acc, transform, cap)
    memo[qkey] = route
