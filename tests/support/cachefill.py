"""A Python fast path with a warm cache, filled through the real slow path (Listener.handle).

The differential tests (tests/native/test_native_diff.py) run the same packets through this and through
the native index, which gets the same entries mirrored with ``native.insert_entry``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from nodelocaldns import native
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache.handler import CacheHandler
from nodelocaldns.plugins.cache.setup import CacheConfig
from nodelocaldns.server.listener import Block, Listener, Router

if TYPE_CHECKING:  # the extension may be absent or disabled (NODELOCALDNS_NATIVE=0)
    from nodelocaldns._native import Index

STORED = 1000.0  # the clock when every entry was stored: a binary fraction keeps float maths exact
SOA = "ns.example.org. host.example.org. 1 7200 1800 86400 {minimum}"


def _reply(name: str, rdtype: str, ttl: int) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    r = dns.message.make_response(q)
    if name.startswith("nx."):
        r.set_rcode(dns.rcode.NXDOMAIN)
        r.authority.append(dns.rrset.from_text("example.org.", ttl, "IN", "SOA", SOA.format(minimum=ttl)))
    elif name.startswith("big."):
        for i in range(20):  # ~900 bytes: over 512, under 1232
            r.answer.append(dns.rrset.from_text(name, ttl, "IN", "TXT", f'"record {i:02d} padding padding"'))
    elif name.startswith("alias."):
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", "CNAME", "target.example.org."))
        r.answer.append(dns.rrset.from_text("target.example.org.", ttl + 5, "IN", rdtype, "192.0.2.9"))
    elif rdtype == "AAAA":
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", "AAAA", "2001:db8::1", "2001:db8::2"))
    else:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "192.0.2.1"))
        r.additional.append(dns.rrset.from_text("ns.example.org.", ttl, "IN", "A", "192.0.2.53"))
    if name.startswith("ad."):
        r.flags |= dns.flags.AD
    if name.startswith("auth."):
        r.flags |= dns.flags.AA
    return r


# (name, type, record TTL): every kind of body the cache stores, with TTLs that expire mid-test.
TABLE: tuple[tuple[str, str, int], ...] = (
    ("example.org.", "A", 30),
    ("example.org.", "AAAA", 3),
    ("nx.example.org.", "A", 8),
    ("big.example.org.", "TXT", 20),
    ("alias.example.org.", "A", 12),
    ("ad.example.org.", "A", 30),
    ("auth.example.org.", "A", 1),
    ("Mixed.Example.org.", "A", 30),  # stored with capitals: Entry.q, the case its owners keep
)


class Upstream:
    """The next plugin after the cache: answers from TABLE (what forward would have returned)."""

    def __init__(self) -> None:
        self.answers = {
            (n.lower(), dns.rdatatype.from_text(t)): _reply(n, t, ttl).to_wire() for n, t, ttl in TABLE
        }

    async def __call__(self, req: Request) -> Reply:
        data = self.answers[(req.qname, req.q.qtype)]
        out = req.data[:2] + data[2:]
        return Reply(out, wire.rcode_of(out), "forward")


class Warm:
    """One listener whose router and cache were filled by real queries through Listener.handle."""

    def __init__(self, keepttl: bool = False, **cfg: Any) -> None:
        self.clock = STORED
        self.cache = CacheHandler(CacheConfig(keepttl=keepttl, **cfg), (".",), lambda: self.clock)
        up = Upstream()
        cache = self.cache

        async def chain(req: Request) -> Reply:
            return await cache.serve(req, up)

        self.block = Block((".",), chain, cache=cache, fast=True)
        self.listener = Listener("127.0.0.1", 53, Router({".": self.block}), clock=lambda: self.clock)

    def router(self) -> Router:
        return self.listener.router

    async def fill(self) -> None:
        """Every TABLE name with each DO/CD combination, sent the way a stub sends it."""
        for name, rdtype, _ttl in TABLE:
            for do in (False, True):
                for cd in (False, True):
                    q = dns.message.make_query(name, rdtype, want_dnssec=do, use_edns=0 if do else None)
                    if cd:
                        q.flags |= dns.flags.CD
                    await self.listener.handle(q.to_wire(), ("127.0.0.1", 40000), "udp", lambda _b: None)

    def mirror(self, index: Index, stale: int = 0) -> int:
        """Copy every cached entry into the native index, as the cache plugin will; returns the count.
        ``stale``: the index's serve_stale slot the entries name (Index.set_stale)."""
        n = 0
        for m in self.cache.store.maps:
            for key, e in m.items():
                assert native.insert_entry(index, key, e, stale=stale)
                n += 1
        return n


def warm(keepttl: bool = False, run: Callable[..., object] = asyncio.run, **cfg: Any) -> Warm:
    """A filled ``Warm``; ``cfg``: more CacheConfig fields (serve_stale, stale_response_ttl...)."""
    w = Warm(keepttl, **cfg)
    run(w.fill())
    return w
