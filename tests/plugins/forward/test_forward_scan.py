"""The upstream reply is walked once: forward's wire.scan_reply hands its records to the cache
(Reply.scan), which uses them only for the very bytes they describe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rrset
import pytest

from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire
from nodelocaldns.errors import WireError
from nodelocaldns.plugins.cache.classify import classify
from nodelocaldns.plugins.cache.handler import CacheHandler
from nodelocaldns.plugins.cache.setup import CacheConfig
from nodelocaldns.plugins.forward.handler import ForwardHandler
from nodelocaldns.plugins.forward.metrics import ForwardCounters
from nodelocaldns.plugins.forward.setup import ForwardConfig, parse_upstream
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
ZONES = {"cluster.local.": ["web.default.svc.cluster.local. 30 IN A 198.18.1.1"]}


def _rrset(text: str) -> dns.rrset.RRset:
    name, ttl, rdclass, rdtype, rdata = text.split(" ", 4)
    return dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata)


def _reply(
    name: str,
    *answer: str,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    authority: tuple[str, ...] = (),
    edns: bool = False,
) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0 if edns else None)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for text in answer:
        r.answer.append(_rrset(text))
    for text in authority:
        r.authority.append(_rrset(text))
    return r.to_wire()


SOA = "example.org. 60 IN SOA ns.example.org. h.example.org. 1 2 3 4 5"
REPLIES = [
    _reply("a.example.org.", "a.example.org. 30 IN A 192.0.2.1"),
    _reply("c.example.org.", "c.example.org. 40 IN CNAME a.example.org.", "a.example.org. 30 IN A 192.0.2.1", edns=True),
    _reply("nx.example.org.", rcode=dns.rcode.NXDOMAIN, authority=(SOA,)),
    _reply("nodata.example.org.", authority=(SOA,), edns=True),
]  # fmt: skip
REPLY_IDS = ["a", "cname-edns", "nxdomain", "nodata-edns"]


# Named, not the bytes: the query ids are random, and pytest-xdist's workers must collect the same ids.
@pytest.mark.parametrize("raw", REPLIES, ids=REPLY_IDS)
def test_scan_reply_finds_what_classify_walks(raw: bytes) -> None:
    msg, body, recs = wire.scan_reply(raw)
    assert msg == raw and body == wire.question_end(raw)
    walked: list[tuple[int, int, int, int]] = []
    an, ns, ar = (int.from_bytes(raw[i : i + 2], "big") for i in (6, 8, 10))
    wire.walk_records(raw, body, an + ns + ar, walked)
    assert list(recs) == walked
    qname = wire.read_name(raw, wire.HEADER_LEN)[0].lower()
    assert classify(raw, qname, 1, CacheConfig(), (body, recs)) == classify(raw, qname, 1, CacheConfig())


def test_forward_hands_its_walk_on_and_the_cache_stores_from_it(make_unbound: MakeUnbound) -> None:
    up = make_unbound(ZONES)

    async def main() -> None:
        fwd = ForwardHandler(ForwardConfig(".", (parse_upstream(up.address),)), ForwardCounters())
        cache = CacheHandler(CacheConfig(), (".",), lambda: 1000.0)
        got: list[Reply] = []

        async def forward(req: Request) -> Reply:
            async def no_next(_r: Request) -> Reply:
                raise AssertionError("forward takes every name")

            r = await fwd.serve(req, no_next)
            got.append(r)
            return r

        try:
            data = dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire()
            req = Request(data, wire.parse_query(data), ("127.0.0.1", 4), "udp", 1, "dns://127.0.0.1:53", ".")
            out = await cache.serve(req, forward)
            [r] = got
            assert r.scan is not None and r.scan[0] is r.wire
            assert r.scan[1:] == wire.scan_reply(r.wire)[1:]
            m = dns.message.from_wire(out.wire or b"")
            assert [(str(rs[0]), rs.ttl) for rs in m.answer] == [("198.18.1.1", 30)]
            assert cache.store.sizes() == (1, 0)
        finally:
            fwd.close()

    asyncio.run(main())


def test_the_cache_ignores_a_walk_of_other_bytes() -> None:
    cache = CacheHandler(CacheConfig(), (".",), lambda: 1000.0)
    raw = REPLIES[0]
    other = REPLIES[1]  # its records lie elsewhere: using them for ``raw`` would misread it
    data = dns.message.make_query("a.example.org.", "A").to_wire()
    req = Request(data, wire.parse_query(data), ("127.0.0.1", 4), "udp", 1, "dns://127.0.0.1:53", ".")
    req.data = raw[:2] + data[2:]
    _o, body, recs = wire.scan_reply(other)
    reply = Reply(raw, 0, "forward", scan=(other, body, recs))

    async def upstream(_r: Request) -> Reply:
        return reply

    out = asyncio.run(cache.serve(req, upstream))
    m = dns.message.from_wire(out.wire or b"")
    assert [str(rr) for rr in m.answer[0]] == ["192.0.2.1"] and m.answer[0].ttl == 30


def _question(name: bytes) -> bytes:
    return name + b"\x00\x01\x00\x01"


@pytest.mark.parametrize("raw", REPLIES, ids=REPLY_IDS)
def test_scan_reply_with_the_query_question_walks_the_same(raw: bytes) -> None:
    """A native reply is scanned with its query's question at hand (ForwardHandler._answered):
    the result is what the full walk gives, whether the reply repeats it or not."""
    qname = wire.read_name(raw, wire.HEADER_LEN)[0]
    full = wire.scan_reply(raw)
    assert wire.scan_reply(raw, _question(qname)) == full
    assert wire.scan_reply(raw, _question(qname.upper())) == full  # not repeated byte for byte
    assert wire.scan_reply(raw, _question(b"\x01x" + qname)) == full


def test_scan_reply_with_a_question_fails_where_the_walk_fails() -> None:
    raw = REPLIES[0]
    qname = wire.read_name(raw, wire.HEADER_LEN)[0]
    cut = raw[: wire.HEADER_LEN + len(qname) + 2]  # the question's class cut off
    for args in ((cut,), (cut, _question(qname))):
        with pytest.raises(WireError):
            wire.scan_reply(*args)
    short = raw[: wire.HEADER_LEN + len(qname) + 4]  # the answer the header counts is missing
    for args in ((short,), (short, _question(qname))):
        with pytest.raises(WireError):
            wire.scan_reply(*args)
