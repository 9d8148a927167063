"""loadbalance's round_robin on the wire, for the common reply: no decode, no re-encode.

A NOERROR reply whose answer section is only A (or only AAAA) records, each owned by a pointer to
the question, with nothing in authority and at most the OPT in additional, is what a cache hit for
a Service name looks like. Decoding it, shuffling and encoding it again (shuffle.apply) gives the
same bytes as permuting the record slices, with the same random draws; this does the latter, which
keeps a hit in a block with loadbalance within the fast path's budget.

The layout check is memoised by the reply's bytes after the ID: a cached answer repeats them for
every client that asks alike within one TTL second, so a hit costs a dict lookup and the permutation.
"""

from __future__ import annotations

from nodelocaldns.dns.message import TYPE_A, TYPE_AAAA, decode, encode
from nodelocaldns.dns.wire import TYPE_AXFR, TYPE_IXFR, skip_name
from nodelocaldns.errors import WireError
from nodelocaldns.plugins.loadbalance.shuffle import Rng

_RDLEN = {TYPE_A: 4, TYPE_AAAA: 16}
_OPT = b"\x00\x00\x29"
_MEMO_MAX = 4096
Layout = tuple[int, int, int]  # question end, record size, answer end; () when not this shape
_layouts: dict[bytes, Layout | tuple[()]] = {}


def layout(reply: bytes) -> Layout | None:
    """Where the answer records are, or None: not the shape ``round_robin`` handles."""
    if len(reply) < 12 or reply[3] & 0xF or reply[4:6] != b"\x00\x01" or reply[8:10] != b"\x00\x00":
        return None
    an = (reply[6] << 8) | reply[7]
    ar = (reply[10] << 8) | reply[11]
    if an < 2 or ar > 1 or reply[12] & 0xC0:
        return None
    try:
        qend = skip_name(reply, 12) + 4
    except WireError:
        return None
    if len(reply) < qend + 4:
        return None
    if ((reply[qend - 4] << 8) | reply[qend - 3]) in (TYPE_AXFR, TYPE_IXFR):
        return None
    rdlen = _RDLEN.get((reply[qend + 2] << 8) | reply[qend + 3])
    if rdlen is None:
        return None
    size = 12 + rdlen
    end = qend + an * size
    if len(reply) < end:
        return None
    head = b"\xc0\x0c" + reply[qend + 2 : qend + 4]
    for off in range(qend, end, size):
        if not reply.startswith(head, off) or reply[off + 10] or reply[off + 11] != rdlen:
            return None
    tail = reply[end:]
    if ar:
        # The OPT only (root owner, ext rcode 0, its whole rdata); shuffle.apply leaves it as is.
        if len(tail) < 11 or tail[:3] != _OPT or tail[5] or len(tail) != 11 + ((tail[9] << 8) | tail[10]):
            return None
    elif tail:
        return None
    return qend, size, end


def round_robin(reply: bytes, rng: Rng) -> bytes | None:
    """The shuffled reply, exactly ``shuffle.apply``'s bytes, or None: not this shape.

    ``shuffle.shuffle_in_place``'s walk, written out here: this runs for every cache hit.
    """
    key = reply[2:]
    lay = _layouts.get(key)
    if lay is None:
        if len(_layouts) >= _MEMO_MAX:
            _layouts.clear()
        lay = _layouts[key] = layout(reply) or ()
    if not lay:
        return None
    qend, size, end = lay
    recs = [reply[o : o + size] for o in range(qend, end, size)]
    n = len(recs)
    if n == 2:
        if not rng() & 1:
            recs.reverse()
    else:
        for j in range(n):
            p = j + rng() % (n - j)
            if p != j:
                recs[j], recs[p] = recs[p], recs[j]
    return reply[:qend] + b"".join(recs) + reply[end:]


def native_ok(reply: bytes) -> bool:
    """May the native index shuffle this reply by moving wire slices (native/lb.c)?

    True when ``shuffle.apply`` returns it untouched without decoding it, or when its encoder
    writes these very bytes back. Then every order of the address and MX records encodes as the
    same records moved whole (native/lb.c refuses the rest: a section out of the reference's order,
    a pointer into records that move), so the native reply is one this module could send.
    """
    if len(reply) < 12:
        return False
    if reply[3] & 0xF:
        return True
    an, ns, ar = (reply[6] << 8) | reply[7], (reply[8] << 8) | reply[9], (reply[10] << 8) | reply[11]
    if an <= 1 and ns <= 1 and ar <= 1:
        return True
    try:
        return encode(decode(reply)) == reply
    except WireError:
        return False
