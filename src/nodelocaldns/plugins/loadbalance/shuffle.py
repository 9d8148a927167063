"""Reorder the records of a reply (CoreDNS plugin/loadbalance loadbalance.go, weighted.go, prefer.go).

Only NOERROR replies are touched, and never AXFR/IXFR. Within a section the records are partitioned
into CNAME, other, address (A/AAAA) and MX records and written back in that order (CNAMEs first,
because glibc and other stubs expect the chain before the addresses), except that a section of only
A or only AAAA records is shuffled as a whole.

* ``round_robin``: answer, authority and additional sections; addresses and MX shuffled on their own.
  The shuffle is CoreDNS's: two records swap when the random number is even; for more, a
  Fisher-Yates walk swaps record j with j + (random % (n - j)). ``rng`` returns a 16-bit number like
  miekg ``dns.Id()``.
* ``weighted``: A, AAAA and SRV questions only; answer and additional sections; one address is picked
  with probability weight/sum (default weight 1) and moved to the front by swapping.
* ``prefer``: after the policy, addresses in the listed subnets move to the front (subnet order,
  then record order), the rest follow; in the answer and additional sections, as CNAME, addresses,
  MX, other.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

from nodelocaldns.dns.message import (
    RR,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_MX,
    TYPE_OPT,
    TYPE_SRV,
    decode,
    encode,
)
from nodelocaldns.dns.wire import TYPE_AXFR, TYPE_IXFR, name_to_text
from nodelocaldns.plugins.loadbalance.setup import WEIGHTED, LoadBalanceConfig
from nodelocaldns.plugins.loadbalance.weights import Weights

T = TypeVar("T")
Rng = Callable[[], int]  # a uniformly random uint16
RandBelow = Callable[[int], int]  # a uniformly random int in [0, n)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _partition(rrs: Sequence[RR]) -> tuple[list[RR], list[RR], list[RR], list[RR]]:
    cname: list[RR] = []
    addr: list[RR] = []
    mx: list[RR] = []
    rest: list[RR] = []
    for r in rrs:
        if r.rtype == TYPE_CNAME:
            cname.append(r)
        elif r.rtype in (TYPE_A, TYPE_AAAA):
            addr.append(r)
        elif r.rtype == TYPE_MX:
            mx.append(r)
        else:
            rest.append(r)
    return cname, addr, mx, rest


def shuffle_in_place(records: list[T], rng: Rng) -> None:
    n = len(records)
    if n == 2:
        if rng() % 2 == 0:
            records[0], records[1] = records[1], records[0]
    elif n > 2:
        for j in range(n):
            p = j + rng() % (n - j)
            if p != j:
                records[j], records[p] = records[p], records[j]


def round_robin(rrs: list[RR], rng: Rng) -> list[RR]:
    if len(rrs) <= 1:
        return rrs
    first = rrs[0].rtype
    if first in (TYPE_A, TYPE_AAAA) and all(r.rtype == first for r in rrs):
        out = list(rrs)
        shuffle_in_place(out, rng)
        return out
    cname, addr, mx, rest = _partition(rrs)
    shuffle_in_place(addr, rng)
    shuffle_in_place(mx, rng)
    return cname + rest + addr + mx


def _ip16(r: RR) -> bytes:
    return b"\x00" * 10 + b"\xff\xff" + r.rdata if r.rtype == TYPE_A else r.rdata


def top_index(addrs: Sequence[RR], weights: Weights, randbelow: RandBelow) -> int:
    """The index of the address to put first, drawn with probability weight / sum of weights."""
    ranked = []
    for i, r in enumerate(addrs):
        table = weights.get(name_to_text(r.name), ())
        ip = _ip16(r)
        w = next((v for a, v in table if a == ip), 1)
        ranked.append((w, i))
    ranked.sort(key=lambda t: -t[0])  # stable, like Go's insertion sort for short lists
    v = randbelow(sum(w for w, _ in ranked))
    acc = 0
    for w, i in ranked:
        acc += w
        if v < acc:
            return i
    return 0


def weighted(rrs: list[RR], weights: Weights, randbelow: RandBelow) -> list[RR]:
    cname, addr, mx, rest = _partition(rrs)
    if not addr:
        return rrs
    top = top_index(addr, weights, randbelow)
    addr[0], addr[top] = addr[top], addr[0]
    return cname + rest + addr + mx


def prefer(rrs: list[RR], subnets: Sequence[Network]) -> list[RR]:
    cname, addr, mx, rest = _partition(rrs)
    seen: set[int] = set()
    first: list[RR] = []
    for net in subnets:
        for i, r in enumerate(addr):
            if i not in seen and ipaddress.ip_address(r.rdata) in net:
                first.append(r)
                seen.add(i)
    return cname + first + [r for i, r in enumerate(addr) if i not in seen] + mx + rest


def _full_rcode(reply: bytes, extra: Sequence[RR]) -> int:
    rcode = reply[3] & 0xF
    for r in extra:
        if r.rtype == TYPE_OPT:
            rcode |= (r.ttl >> 24) << 4
    return rcode


def apply(
    cfg: LoadBalanceConfig,
    reply: bytes,
    rng: Rng,
    weights: Weights | None = None,
    randbelow: RandBelow | None = None,
) -> bytes:
    """The reply with its records reordered; untouched (same bytes) when there is nothing to do."""
    _, _, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
    if (reply[3] & 0xF) or (an <= 1 and ns <= 1 and ar <= 1 and cfg.policy != WEIGHTED and not cfg.prefer):
        return reply
    m = decode(reply)
    qtype = m.qtype if qd else 0
    if qd and qtype in (TYPE_AXFR, TYPE_IXFR) or _full_rcode(reply, m.additional):
        return reply
    if cfg.policy == WEIGHTED:
        if qtype in (TYPE_A, TYPE_AAAA, TYPE_SRV):
            assert randbelow is not None
            w = weights or {}
            m.answer = weighted(m.answer, w, randbelow)
            m.additional = weighted(m.additional, w, randbelow)
    else:
        m.answer = round_robin(m.answer, rng)
        m.authority = round_robin(m.authority, rng)
        m.additional = round_robin(m.additional, rng)
    if cfg.prefer:
        m.answer = prefer(m.answer, cfg.prefer)
        m.additional = prefer(m.additional, cfg.prefer)
    return encode(m)
