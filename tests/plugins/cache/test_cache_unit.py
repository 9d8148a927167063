"""plugins/cache without sockets: classify (CoreDNS Typify + computeTTL), Entry, Store, CacheHandler.

Time is a fake clock handed to the code under test, so TTL countdown, expiry, prefetch and serve_stale
windows are checked to the second without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from nodelocaldns.core.request import Reply, Request
from nodelocaldns.core.zones import in_zones
from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache.classify import DENIAL, SUCCESS, RType, classify
from nodelocaldns.plugins.cache.entry import Entry
from nodelocaldns.plugins.cache.fastpath import key_of as cache_key
from nodelocaldns.plugins.cache.handler import CacheHandler
from nodelocaldns.plugins.cache.setup import CacheConfig, effective_capacity
from nodelocaldns.plugins.cache.store import Store

SOA = "ns.example. hostmaster.example. 1 3600 600 86400 {minimum}"
SERVER = "dns://127.0.0.1:53"


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rrs(owner: str, ttl: int, rtype: str, *values: str) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(owner, ttl, "IN", rtype, list(values))


def reply(
    name: str = "example.org.",
    qtype: str = "A",
    rcode: int = dns.rcode.NOERROR,
    answer: tuple[dns.rrset.RRset, ...] = (),
    authority: tuple[dns.rrset.RRset, ...] = (),
    additional: tuple[dns.rrset.RRset, ...] = (),
    flags: int = 0,
    opcode: int = dns.opcode.QUERY,
    edns: bool = False,
    do: bool = False,
) -> bytes:
    q = dns.message.make_query(name, qtype, use_edns=0 if edns else False, want_dnssec=do)
    q.set_opcode(opcode)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    r.flags |= flags
    r.answer.extend(answer)
    r.authority.extend(authority)
    r.additional.extend(additional)
    return r.to_wire()


def qwire(name: str) -> bytes:
    return dns.name.from_text(name).canonicalize().to_wire()


A30 = rrs("example.org.", 30, "A", "192.0.2.1", "192.0.2.2")


# -- classify: the Typify table -------------------------------------------------------------------

CASES: list[tuple[str, bytes, str, int | None, RType, int]] = [
    ("answer", reply(answer=(A30,)), "A", SUCCESS, RType.NOERROR, 30),
    ("answer with NXDOMAIN", reply(rcode=dns.rcode.NXDOMAIN, answer=(A30,)), "A", None, RType.OTHERERROR, 5),
    ("NODATA with SOA", reply(authority=(rrs("example.org.", 20, "SOA", SOA.format(minimum=60)),)), "A",
     DENIAL, RType.NODATA, 20),
    ("NXDOMAIN with SOA", reply(rcode=dns.rcode.NXDOMAIN, authority=(rrs("org.", 25, "SOA", SOA.format(minimum=9)),)),
     "A", DENIAL, RType.NAMEERROR, 25),
    ("NXDOMAIN without SOA", reply(rcode=dns.rcode.NXDOMAIN), "A", None, RType.NAMEERROR, 5),
    ("SERVFAIL", reply(rcode=dns.rcode.SERVFAIL), "A", DENIAL, RType.SERVERERROR, 5),
    ("NOTIMP", reply(rcode=dns.rcode.NOTIMP), "A", DENIAL, RType.SERVERERROR, 5),
    ("REFUSED", reply(rcode=dns.rcode.REFUSED), "A", None, RType.OTHERERROR, 5),
    ("FORMERR", reply(rcode=dns.rcode.FORMERR), "A", None, RType.OTHERERROR, 5),
    # CoreDNS MinimalTTL gives anything but NoError/NameError/NoData the 5 s default; the TTL is
    # computed for replies that are not stored too (every TTL of the reply is rewritten to it).
    ("delegation", reply(authority=(rrs("example.org.", 3000, "NS", "ns1.example.org."),)), "A",
     SUCCESS, RType.DELEGATION, 5),
    ("empty NOERROR", reply(), "A", SUCCESS, RType.NOERROR, 5),
    ("UPDATE", reply(opcode=dns.opcode.UPDATE), "A", None, RType.UPDATE, 5),
    ("NOTIFY", reply(opcode=dns.opcode.NOTIFY, answer=(A30,)), "A", None, RType.META, 5),
    ("AXFR", reply(qtype="AXFR", answer=(rrs("example.org.", 30, "A", "192.0.2.1"),)), "AXFR", None, RType.META, 5),
    ("IXFR", reply(qtype="IXFR"), "IXFR", None, RType.META, 5),
    ("truncated", reply(answer=(A30,), flags=dns.flags.TC), "A", None, RType.NOERROR, 30),
    ("CNAME chain to the qtype",
     reply(answer=(rrs("example.org.", 40, "CNAME", "b.example.net."), rrs("b.example.net.", 40, "CNAME", "c.example.com."),
                   rrs("c.example.com.", 12, "A", "192.0.2.9"))), "A", SUCCESS, RType.NOERROR, 12),
    ("CNAME chain ending elsewhere, no SOA",
     reply(answer=(rrs("example.org.", 40, "CNAME", "b.example.net."),)), "A", None, RType.NOERROR, 40),
    ("CNAME chain ending elsewhere, with SOA",
     reply(answer=(rrs("example.org.", 40, "CNAME", "b.example.net."),),
           authority=(rrs("example.net.", 15, "SOA", SOA.format(minimum=300)),)), "A", DENIAL, RType.NODATA, 15),
    ("CNAME answers a CNAME query", reply(qtype="CNAME", answer=(rrs("example.org.", 40, "CNAME", "b.example.net."),)),
     "CNAME", SUCCESS, RType.NOERROR, 40),
    ("ANY", reply(qtype="ANY", answer=(rrs("example.org.", 40, "TXT", '"x"'),)), "ANY", SUCCESS, RType.NOERROR, 40),
    ("answer for another owner", reply(answer=(rrs("other.org.", 40, "A", "192.0.2.1"),)), "A", None, RType.NOERROR, 40),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "qtype", "kind", "rtype", "ttl"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_typify_table(data: bytes, qtype: str, kind: int | None, rtype: RType, ttl: int) -> None:
    v = classify(data, qwire("example.org."), dns.rdatatype.from_text(qtype), CacheConfig())
    assert (v.kind, v.rtype, v.ttl) == (kind, rtype, ttl)


def test_cname_chain_comparison_ignores_case() -> None:
    data = reply(
        answer=(
            rrs("EXAMPLE.org.", 40, "CNAME", "B.Example.NET."),
            rrs("b.example.net.", 33, "A", "192.0.2.9"),
        )
    )
    v = classify(data, qwire("example.org."), 1, CacheConfig())
    assert (v.kind, v.ttl) == (SUCCESS, 33)


def test_ttl_is_the_minimum_over_all_sections_including_additional() -> None:
    data = reply(
        answer=(A30,),
        authority=(rrs("example.org.", 50, "NS", "ns1.example.org."),),
        additional=(rrs("ns1.example.org.", 7, "A", "192.0.2.53"),),
    )
    assert classify(data, qwire("example.org."), 1, CacheConfig()).ttl == 7


def test_opt_ttl_field_is_not_a_ttl() -> None:
    # OPT's "TTL" holds extended rcode/flags: 0 here, which would make the answer uncacheable if read.
    data = reply(answer=(A30,), edns=True)
    v = classify(data, qwire("example.org."), 1, CacheConfig())
    assert (v.kind, v.ttl) == (SUCCESS, 30)
    assert all(r[2] != wire.TYPE_OPT for r in v.records)


def test_negative_ttl_is_the_soa_records_ttl_not_its_minimum_field() -> None:
    data = reply(rcode=dns.rcode.NXDOMAIN, authority=(rrs("org.", 100, "SOA", SOA.format(minimum=10)),))
    assert classify(data, qwire("example.org."), 1, CacheConfig()).ttl == 100
    data = reply(rcode=dns.rcode.NXDOMAIN, authority=(rrs("org.", 10, "SOA", SOA.format(minimum=100)),))
    assert classify(data, qwire("example.org."), 1, CacheConfig()).ttl == 10


@pytest.mark.parametrize(
    ("cfg", "record_ttl", "want"),
    [
        (CacheConfig(), 1, 5),  # MINTTL default 5
        (CacheConfig(), 86400, 3600),  # success max default 3600
        (CacheConfig(success_max_ttl=30, denial_max_ttl=30), 300, 30),  # `cache 30`
        (CacheConfig(success_min_ttl=60), 30, 60),
        (CacheConfig(success_min_ttl=60, success_max_ttl=40), 30, 40),  # max wins over min
        (CacheConfig(success_min_ttl=0), 2, 2),
        (CacheConfig(success_max_ttl=7200), 5000, 5000),
    ],
)
def test_success_ttl_clamps(cfg: CacheConfig, record_ttl: int, want: int) -> None:
    data = reply(answer=(rrs("example.org.", record_ttl, "A", "192.0.2.1"),))
    assert classify(data, qwire("example.org."), 1, cfg).ttl == want


@pytest.mark.parametrize(
    ("cfg", "soa_ttl", "want"),
    [
        (CacheConfig(), 1, 5),
        (CacheConfig(), 86400, 1800),  # denial max default 1800
        (CacheConfig(denial_max_ttl=5, denial_min_ttl=5), 30, 5),  # NodeLocal `denial 9984 5`
        (CacheConfig(denial_min_ttl=20), 10, 20),
        (CacheConfig(success_max_ttl=2), 100, 100),  # success knobs do not touch denial
    ],
)
def test_denial_ttl_clamps(cfg: CacheConfig, soa_ttl: int, want: int) -> None:
    data = reply(
        rcode=dns.rcode.NXDOMAIN, authority=(rrs("org.", soa_ttl, "SOA", SOA.format(minimum=soa_ttl)),)
    )
    assert classify(data, qwire("example.org."), 1, cfg).ttl == want


def test_zero_ttl_is_not_cached() -> None:
    data = reply(answer=(rrs("example.org.", 0, "A", "192.0.2.1"),))
    v = classify(data, qwire("example.org."), 1, CacheConfig(success_min_ttl=0))
    assert v.kind is None and v.reason == "zero TTL"


def test_servfail_ttl_is_its_own_knob_not_denial_minttl() -> None:
    data = reply(rcode=dns.rcode.SERVFAIL)
    assert classify(data, qwire("example.org."), 1, CacheConfig(denial_min_ttl=60)).ttl == 5
    assert classify(data, qwire("example.org."), 1, CacheConfig(servfail_ttl=30)).ttl == 30
    assert classify(data, qwire("example.org."), 1, CacheConfig(servfail_ttl=0)).kind is None


@pytest.mark.parametrize(("cap", "want"), [(9984, 9984), (10000, 9984), (0, 1024), (1, 1024), (1024, 1024),
                                            (2000, 1792), (100000, 99840)])  # fmt: skip
def test_capacity_rounds_to_256_shards_of_at_least_4(cap: int, want: int) -> None:
    assert effective_capacity(cap) == want


# -- Entry: stored bytes, patched per hit ---------------------------------------------------------


def entry_for(data: bytes, now: float, qtype: int = 1, do: bool = False, cd: bool = False, keepttl: bool = False,
              cfg: CacheConfig | None = None) -> Entry:  # fmt: skip
    v = classify(data, qwire("example.org."), qtype, cfg or CacheConfig())
    assert v.kind is not None, v.reason
    return Entry(data, v, now, do, cd, qtype, keepttl)


def client(name: str = "example.org.", rdtype: str = "A", **kw: Any) -> tuple[bytes, wire.Query]:
    m = dns.message.make_query(name, rdtype, **kw)
    m.id = 0x4242
    data = m.to_wire()
    return data, wire.parse_query(data)


def hit(
    e: Entry, now: float, name: str = "example.org.", limit: int = 4096, **kw: Any
) -> dns.message.Message:
    data, q = client(name, **kw)
    body = e.body(now)
    assert body is not None
    return dns.message.from_wire(e.render(data, q, body, limit))


MIXED = reply(
    answer=(rrs("example.org.", 30, "A", "192.0.2.1"), rrs("example.org.", 60, "TXT", '"t"')),
    authority=(rrs("example.org.", 90, "NS", "ns1.example.org."),),
    additional=(rrs("ns1.example.org.", 25, "A", "192.0.2.53"),),
)


def all_ttls(m: dns.message.Message) -> set[int]:
    return {s.ttl for sec in (m.answer, m.authority, m.additional) for s in sec}


def test_every_record_gets_the_item_ttl_and_counts_down_per_whole_second() -> None:
    e = entry_for(MIXED, 100.0)
    assert e.orig == 25
    assert all_ttls(hit(e, 100.0)) == {25}
    assert all_ttls(hit(e, 100.999)) == {25}
    assert all_ttls(hit(e, 101.0)) == {24}
    assert all_ttls(hit(e, 124.5)) == {1}
    assert e.body(125.0) is None and e.ttl(125.0) == 0
    assert e.body(100.5) is not None  # the memo never serves a later second's bytes early


def test_keepttl_serves_the_original_ttl_until_expiry() -> None:
    e = entry_for(MIXED, 100.0, keepttl=True)
    assert all_ttls(hit(e, 120.0)) == {25}
    assert e.body(125.0) is None


def test_hit_sets_aa_and_echoes_id_rd_cd_and_question_case() -> None:
    e = entry_for(MIXED, 0.0, cd=True)
    m = hit(e, 0.0, name="ExAmPlE.ORG.", flags=dns.flags.CD)  # RD off
    assert m.id == 0x4242
    assert m.flags & dns.flags.AA and m.flags & dns.flags.QR and m.flags & dns.flags.CD
    assert not m.flags & dns.flags.RD
    assert str(m.question[0].name) == "ExAmPlE.ORG."
    m = hit(e, 0.0)
    assert m.flags & dns.flags.RD


def test_miss_render_keeps_the_upstream_aa() -> None:
    e = entry_for(MIXED, 0.0)
    data, q = client()
    body = e.body(0.0)
    assert body is not None
    assert not dns.message.from_wire(e.render(data, q, body, 4096, aa=False)).flags & dns.flags.AA
    e2 = entry_for(reply(answer=(A30,), flags=dns.flags.AA), 0.0)
    assert dns.message.from_wire(e2.render(data, q, e2.memo or body, 4096, aa=False)).flags & dns.flags.AA


def test_ad_only_to_clients_that_sent_do_or_ad() -> None:
    data = reply(answer=(A30,), flags=dns.flags.AD | dns.flags.RA)
    plain = entry_for(data, 0.0)
    assert not hit(plain, 0.0).flags & dns.flags.AD
    assert hit(plain, 0.0, flags=dns.flags.RD | dns.flags.AD).flags & dns.flags.AD
    with_do = entry_for(data, 0.0, do=True)
    assert hit(with_do, 0.0, use_edns=0, want_dnssec=True).flags & dns.flags.AD
    assert hit(plain, 0.0).flags & dns.flags.RA


def test_rcode_and_opt_follow_the_entry_and_the_client() -> None:
    e = entry_for(
        reply(rcode=dns.rcode.NXDOMAIN, authority=(rrs("org.", 30, "SOA", SOA.format(minimum=30)),)), 0.0
    )
    m = hit(e, 0.0)
    assert m.rcode() == dns.rcode.NXDOMAIN and m.edns == -1
    m = hit(e, 0.0, use_edns=0, payload=1400, want_dnssec=True)
    assert m.edns == 0 and m.payload == 1400 and m.ednsflags & dns.flags.DO


def test_big_entry_is_truncated_to_the_client_limit() -> None:
    big = reply(
        qtype="TXT", answer=(rrs("example.org.", 30, "TXT", *[f'"{i:03d}{"x" * 95}"' for i in range(40)]),)
    )
    e = entry_for(big, 0.0, qtype=16)
    small = hit(e, 0.0, rdtype="TXT", limit=512)
    assert small.flags & dns.flags.TC and not small.answer
    full = hit(e, 0.0, rdtype="TXT", limit=65535)
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 40


# -- Store ----------------------------------------------------------------------------------------


def positive(now: float = 0.0) -> Entry:
    return entry_for(reply(answer=(A30,)), now)


def servfail(now: float = 0.0) -> Entry:
    return entry_for(reply(rcode=dns.rcode.SERVFAIL), now)


def nxdomain(now: float = 0.0) -> Entry:
    return entry_for(
        reply(rcode=dns.rcode.NXDOMAIN, authority=(rrs("org.", 30, "SOA", SOA.format(minimum=30)),)), now
    )


def test_store_capacity_and_fifo_eviction_counts() -> None:
    s = Store(4, 2)
    for i in range(6):
        s.put(b"k%d" % i, positive(), 0.0)
    assert s.sizes() == (4, 0)
    assert s.evictions == [2, 0]
    assert s.get(b"k0") is None and s.get(b"k1") is None and s.get(b"k5") is not None
    for i in range(3):
        s.put(b"n%d" % i, nxdomain(), 0.0)
    assert s.sizes() == (4, 2) and s.evictions == [2, 1]


def test_store_eviction_stays_fifo_across_compactions() -> None:
    """A full map is compacted in place every COMPACT evictions: still the oldest insertion goes,
    refreshed keys count as new, and the dicts the fast path's memo holds stay the same objects."""
    from nodelocaldns.plugins.cache.store import COMPACT

    s = Store(64, 2)
    success = s.maps[SUCCESS]
    e = positive()
    for i in range(64):
        s.put(b"k%d" % i, e, 0.0)
    n = 3 * COMPACT + 7
    for i in range(64, 64 + n):
        if i % 5 == 0:
            s.put(b"k%d" % (i - 10), e, 0.0)  # re-insert a live key: it becomes the newest
        s.put(b"k%d" % i, e, 0.0)
    assert s.maps[SUCCESS] is success and len(success) == 64
    # The survivors are exactly the last 64 insertions, in insertion order.
    order: list[bytes] = []
    for i in range(64 + n):
        if i >= 64 and i % 5 == 0:
            order.append(b"k%d" % (i - 10))
        order.append(b"k%d" % i)
    last: list[bytes] = []
    for k in reversed(order):
        if k not in last:
            last.append(k)
        if len(last) == 64:
            break
    assert list(success) == list(reversed(last))
    assert s.evictions == [n, 0]  # a re-inserted key was still live: only new keys evicted


def test_store_overwrite_does_not_evict() -> None:
    s = Store(2, 2)
    s.put(b"a", positive(), 0.0)
    s.put(b"b", positive(), 0.0)
    for _ in range(5):
        s.put(b"a", positive(), 0.0)
    assert s.sizes() == (2, 0) and s.evictions == [0, 0]


def test_store_denial_is_looked_up_first_and_a_new_kind_replaces_the_old() -> None:
    s = Store(4, 4)
    p, n = positive(), nxdomain()
    s.put(b"k", p, 0.0)
    s.put(b"k", n, 0.0)
    assert s.get(b"k") is n and s.sizes() == (0, 1)
    p2 = positive()
    s.put(b"k", p2, 0.0)
    assert s.get(b"k") is p2 and s.sizes() == (1, 0)


def test_servfail_yields_to_a_valid_positive_but_not_to_an_expired_one() -> None:
    s = Store(4, 4)
    p = positive(0.0)
    s.put(b"k", p, 0.0)
    s.put(b"k", servfail(10.0), 10.0)
    assert s.get(b"k") is p
    sf = servfail(31.0)
    s.put(b"k", sf, 31.0)  # the positive expired at 30
    assert s.get(b"k") is sf


# -- CacheHandler with a fake clock ---------------------------------------------------------------


class Upstream:
    """The next plugin: answers from a table (or fails), counting calls."""

    def __init__(self, answers: dict[tuple[str, int], bytes] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[Request] = []
        self.fail = False

    async def __call__(self, req: Request) -> Reply:
        self.calls.append(req)
        await asyncio.sleep(0)
        if self.fail:
            return Reply(None, wire.SERVFAIL, error=OSError("upstream down"))
        data = self.answers[(req.qname, req.q.qtype)]
        out = req.data[:2] + data[2:]
        return Reply(out, wire.rcode_of(out), "forward")


def request(name: str = "example.org.", rdtype: str = "A", proto: str = "udp", **kw: Any) -> Request:
    m = dns.message.make_query(name, rdtype, **kw)
    data = m.to_wire()
    return Request(data, wire.parse_query(data), ("127.0.0.1", 40000), proto, 1, SERVER, ".", 0.0)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


def handler(
    cfg: CacheConfig | None = None, zones: tuple[str, ...] = (".",), t: float = 1000.0
) -> tuple[CacheHandler, Clock]:
    clock = Clock(t)
    return CacheHandler(cfg or CacheConfig(), zones, clock), clock


def answers(**extra: bytes) -> dict[tuple[str, int], bytes]:
    table = {
        ("example.org.", 1): reply(answer=(A30,)),
        ("example.org.", 16): reply(qtype="TXT", answer=(rrs("example.org.", 30, "TXT", '"t"'),)),
        ("nx.example.org.", 1): reply("nx.example.org.", rcode=dns.rcode.NXDOMAIN,
                                      authority=(rrs("org.", 30, "SOA", SOA.format(minimum=30)),)),
        ("sf.example.org.", 1): reply("sf.example.org.", rcode=dns.rcode.SERVFAIL),
        ("sub.example.org.", 1): reply("sub.example.org.", answer=(rrs("sub.example.org.", 30, "A", "192.0.2.7"),)),
    }  # fmt: skip
    return table


def test_identical_queries_go_upstream_once_and_count_hits() -> None:
    async def main() -> None:
        h, clock = handler()
        up = Upstream(answers())
        for i in range(5):
            clock.t += 0.1
            r = await h.serve(request(), up)
            m = dns.message.from_wire(r.wire or b"")
            assert m.answer[0].ttl == 30
            assert bool(m.flags & dns.flags.AA) is (i > 0)  # AA=1 on hits only
        assert len(up.calls) == 1
        c = h.counters.for_server(SERVER)
        assert (c.requests, c.hits[SUCCESS], c.misses) == (5, 4, 1)

    run(main)


def test_key_is_case_insensitive_and_the_reply_echoes_the_clients_case() -> None:
    async def main() -> None:
        h, _ = handler()
        up = Upstream(answers())
        await h.serve(request("example.org."), up)
        r = await h.serve(request("ExAmPlE.OrG."), up)
        assert len(up.calls) == 1
        assert str(dns.message.from_wire(r.wire or b"").question[0].name) == "ExAmPlE.OrG."

    run(main)


def test_do_and_cd_are_keyed_separately() -> None:
    async def main() -> None:
        h, _ = handler()
        up = Upstream(answers())
        variants: list[dict[str, Any]] = [{}, {"use_edns": 0, "want_dnssec": True}, {"flags": dns.flags.RD | dns.flags.CD},
                                          {"use_edns": 0}, {"use_edns": 0, "payload": 4096}]  # fmt: skip
        for kw in variants * 2:
            await h.serve(request(**kw), up)
        # EDNS without DO and plain share a key: 3 upstream queries for 5 variants.
        assert len(up.calls) == 3
        base = len(request().q.qname) + 4
        assert sorted(cache_key(r.q)[base:] for r in up.calls) == [b"", b"\x01", b"\x02"]

    run(main)


def test_expiry_follows_the_clock() -> None:
    async def main() -> None:
        h, clock = handler(CacheConfig(success_max_ttl=10))
        up = Upstream(answers())
        await h.serve(request(), up)
        clock.t += 9.99
        r = await h.serve(request(), up)
        assert dns.message.from_wire(r.wire or b"").answer[0].ttl == 1
        clock.t += 0.01
        await h.serve(request(), up)
        assert len(up.calls) == 2

    run(main)


def test_denial_and_servfail_hits_count_as_denial() -> None:
    async def main() -> None:
        h, clock = handler()
        up = Upstream(answers())
        for name in ("nx.example.org.", "sf.example.org."):
            for _ in range(3):
                await h.serve(request(name), up)
        assert len(up.calls) == 2
        assert h.counters.for_server(SERVER).hits[DENIAL] == 4
        assert h.entries() == (0, 2)
        clock.t += 5  # SERVFAIL lives 5 s, the NXDOMAIN 30 s
        await h.serve(request("sf.example.org."), up)
        await h.serve(request("nx.example.org."), up)
        assert [r.qname for r in up.calls[2:]] == ["sf.example.org."]

    run(main)


def test_upstream_failure_is_not_cached() -> None:
    async def main() -> None:
        h, _ = handler()
        up = Upstream(answers())
        up.fail = True
        r = await h.serve(request(), up)
        assert r.wire is None and r.rcode == wire.SERVFAIL
        up.fail = False
        r = await h.serve(request(), up)
        assert r.rcode == wire.NOERROR and len(up.calls) == 2

    run(main)


def test_disable_success_and_denial_by_zone() -> None:
    async def main() -> None:
        cfg = CacheConfig(disable_success=("sub.example.org.",), disable_denial=(".",))
        h, _ = handler(cfg)
        up = Upstream(answers())
        for name in ("sub.example.org.", "example.org.", "nx.example.org."):
            for _ in range(2):
                await h.serve(request(name), up)
        assert [r.qname for r in up.calls] == ["sub.example.org.", "sub.example.org.", "example.org.",
                                               "nx.example.org.", "nx.example.org."]  # fmt: skip

    run(main)


def test_cache_zones_limit_what_is_cached() -> None:
    async def main() -> None:
        h, _ = handler(CacheConfig(zones=("sub.example.org.",)))
        up = Upstream(answers())
        for name in ("sub.example.org.", "example.org.") * 2:
            await h.serve(request(name), up)
        assert [r.qname for r in up.calls] == ["sub.example.org.", "example.org.", "example.org."]
        assert h.zone_label == "sub.example.org."

    run(main)


def test_mismatched_upstream_reply_is_dropped_not_cached() -> None:
    async def main() -> None:
        h, _ = handler()
        table = answers()
        table[("example.org.", 1)] = table[("sub.example.org.", 1)]
        up = Upstream(table)
        for _ in range(2):
            await h.serve(request(), up)
        assert len(up.calls) == 2
        assert h.counters.for_server(SERVER).drops == 2

    run(main)


def test_zone_transfers_bypass_the_cache() -> None:
    async def main() -> None:
        h, _ = handler()
        up = Upstream({("example.org.", 252): reply(qtype="AXFR", answer=(A30,))})
        for _ in range(2):
            await h.serve(request(rdtype="AXFR", proto="tcp"), up)
        assert len(up.calls) == 2 and h.counters.for_server(SERVER).requests == 0

    run(main)


def test_in_zones_respects_label_boundaries() -> None:
    zones = (wire.text_to_wire("example.org."),)
    assert in_zones(wire.text_to_wire("a.example.org."), zones)
    assert in_zones(wire.text_to_wire("example.org."), zones)
    assert not in_zones(wire.text_to_wire("badexample.org."), zones)
    assert in_zones(wire.text_to_wire("anything."), (b"\x00",))


# -- prefetch -------------------------------------------------------------------------------------


async def settle(h: CacheHandler) -> None:
    for _ in range(10):
        await asyncio.sleep(0)
    if h._tasks:
        await asyncio.gather(*h._tasks)


def test_prefetch_fires_when_hits_reach_amount_and_ttl_is_within_percentage() -> None:
    async def main() -> None:
        # orig TTL 10, 50% -> threshold ceil(5) = 5 s left; AMOUNT 2 hits within 1m.
        h, clock = handler(CacheConfig(success_max_ttl=10, prefetch_amount=2, prefetch_percentage=50))
        up = Upstream(answers())
        await h.serve(request(), up)  # miss, stored at t0
        clock.t += 1
        await h.serve(request(), up)  # hit 1, ttl 9
        clock.t += 3
        await h.serve(request(), up)  # hit 2, ttl 6 > 5
        await settle(h)
        assert len(up.calls) == 1
        clock.t += 1
        r = await h.serve(request(), up)  # hit 3, ttl 5 <= 5: refresh, old answer served
        assert dns.message.from_wire(r.wire or b"").answer[0].ttl == 5
        await settle(h)
        assert len(up.calls) == 2 and up.calls[1].internal and up.calls[1].proto == "tcp"
        assert h.counters.for_server(SERVER).prefetch == 1
        fresh = h.store.get(cache_key(request().q))
        assert fresh is not None and fresh.hits == 3 and fresh.ttl(clock.t) == 10
        r = await h.serve(request(), up)
        assert dns.message.from_wire(r.wire or b"").answer[0].ttl == 10

    run(main)


@pytest.mark.parametrize(
    ("orig", "pct", "fires_at_ttl"), [(10, 10, 1), (15, 10, 2), (30, 90, 27), (7, 50, 4)]
)
def test_prefetch_threshold_is_ceil_of_percentage(orig: int, pct: int, fires_at_ttl: int) -> None:
    async def main() -> None:
        h, clock = handler(CacheConfig(success_max_ttl=orig, prefetch_amount=1, prefetch_percentage=pct))
        up = Upstream(answers())
        await h.serve(request(), up)
        t0 = clock.t
        clock.t = t0 + orig - fires_at_ttl - 1  # one second too early
        await h.serve(request(), up)
        await settle(h)
        assert len(up.calls) == 1
        clock.t = t0 + orig - fires_at_ttl
        await h.serve(request(), up)
        await settle(h)
        assert len(up.calls) == 2

    run(main)


def test_prefetch_hit_count_resets_after_the_duration_window() -> None:
    async def main() -> None:
        cfg = CacheConfig(prefetch_amount=3, prefetch_window=5.0, prefetch_percentage=90)
        h, clock = handler(cfg)
        up = Upstream(answers())
        await h.serve(request(), up)  # TTL 30: prefetch-eligible from 27 s left, i.e. at once
        for _ in range(4):  # hits 6 s apart: the count never gets past 1
            clock.t += 6
            await h.serve(request(), up)
        await settle(h)
        assert len(up.calls) == 1
        clock.t += 1
        await h.serve(request(), up)
        clock.t += 1
        await h.serve(request(), up)  # third hit within the window, ttl <= 90
        await settle(h)
        assert len(up.calls) == 2

    run(main)


def test_one_refresh_in_flight_per_item() -> None:
    async def main() -> None:
        h, clock = handler(CacheConfig(success_max_ttl=10, prefetch_amount=1, prefetch_percentage=90))
        up = Upstream(answers())
        await h.serve(request(), up)
        clock.t += 2
        await asyncio.gather(*(h.serve(request(), up) for _ in range(5)))
        await settle(h)
        assert len(up.calls) == 2

    run(main)


# -- serve_stale ----------------------------------------------------------------------------------


def test_serve_stale_immediate_answers_from_cache_and_refreshes_in_background() -> None:
    async def main() -> None:
        h, clock = handler(CacheConfig(success_max_ttl=10, serve_stale=60.0))
        up = Upstream(answers())
        await h.serve(request(), up)
        clock.t += 30  # expired 20 s ago, inside the 60 s window
        up.fail = True
        r = await h.serve(request(), up)
        m = dns.message.from_wire(r.wire or b"")
        assert m.rcode() == dns.rcode.NOERROR and m.answer[0].ttl == 0
        await settle(h)
        assert len(up.calls) == 2 and up.calls[1].internal
        assert h.counters.for_server(SERVER).served_stale == 1
        clock.t += 41  # 71 s past expiry: outside the window, a plain miss
        r = await h.serve(request(), up)
        assert r.wire is None and r.rcode == wire.SERVFAIL

    run(main)


def test_serve_stale_response_ttl_and_refresh_replaces_the_entry() -> None:
    async def main() -> None:
        h, clock = handler(CacheConfig(success_max_ttl=10, serve_stale=60.0, stale_response_ttl=3))
        up = Upstream(answers())
        await h.serve(request(), up)
        clock.t += 11
        r = await h.serve(request(), up)
        assert dns.message.from_wire(r.wire or b"").answer[0].ttl == 3
        await settle(h)
        r = await h.serve(request(), up)  # the background refresh stored a fresh entry
        assert dns.message.from_wire(r.wire or b"").answer[0].ttl == 10
        assert len(up.calls) == 2

    run(main)


def test_serve_stale_verify_asks_upstream_first() -> None:
    async def main() -> None:
        h, clock = handler(CacheConfig(success_max_ttl=10, serve_stale=60.0, stale_verify=True))
        up = Upstream(answers())
        await h.serve(request(), up)
        clock.t += 15
        r = await h.serve(request(), up)  # upstream fine: fresh answer, no stale served
        m = dns.message.from_wire(r.wire or b"")
        assert m.answer[0].ttl == 10 and len(up.calls) == 2
        assert h.counters.for_server(SERVER).served_stale == 0
        clock.t += 15
        up.fail = True
        r = await h.serve(request(), up)  # upstream down: the stale answer
        m = dns.message.from_wire(r.wire or b"")
        assert m.rcode() == dns.rcode.NOERROR and m.answer[0].ttl == 0 and len(up.calls) == 3
        assert h.counters.for_server(SERVER).served_stale == 1

    run(main)


def test_serve_stale_verify_timeout_serves_stale_and_refreshes_later() -> None:
    async def main() -> None:
        cfg = CacheConfig(success_max_ttl=10, serve_stale=60.0, stale_verify=True, stale_verify_timeout=0.05)
        h, clock = handler(cfg)
        up = Upstream(answers())
        await h.serve(request(), up)
        clock.t += 15

        async def slow(req: Request) -> Reply:
            await asyncio.sleep(0.3)
            return await up(req)

        t0 = time.monotonic()
        r = await h.serve(request(), slow)
        assert time.monotonic() - t0 < 0.25  # did not wait for the slow upstream
        assert dns.message.from_wire(r.wire or b"").answer[0].ttl == 0
        await asyncio.sleep(0.4)  # the verify lands and refreshes the entry
        r = await h.serve(request(), up)
        assert dns.message.from_wire(r.wire or b"").answer[0].ttl == 10
        assert len(up.calls) == 2

    run(main)


@pytest.mark.parametrize("verify", [False, True])
def test_serve_stale_failure_recheck_holds_off_refreshes_after_a_failure(verify: bool) -> None:
    async def main() -> None:
        cfg = CacheConfig(success_max_ttl=10, serve_stale=3600.0, stale_verify=verify, stale_recheck=30.0)
        h, clock = handler(cfg)
        up = Upstream(answers())
        await h.serve(request(), up)
        clock.t += 20
        up.fail = True
        for _ in range(3):  # the first stale query refreshes and fails; the others wait for the recheck
            r = await h.serve(request(), up)
            assert dns.message.from_wire(r.wire or b"").answer[0].ttl == 0
            await settle(h)
        assert len(up.calls) == 2
        clock.t += 31  # the recheck period is over: one more try, which succeeds
        up.fail = False
        await h.serve(request(), up)
        await settle(h)
        assert len(up.calls) == 3
        r = await h.serve(request(), up)
        assert dns.message.from_wire(r.wire or b"").answer[0].ttl > 0  # refreshed
        assert len(up.calls) == 3

    run(main)


def test_serve_stale_without_failure_recheck_retries_every_time() -> None:
    async def main() -> None:
        h, clock = handler(CacheConfig(success_max_ttl=10, serve_stale=3600.0))
        up = Upstream(answers())
        await h.serve(request(), up)
        clock.t += 20
        up.fail = True
        for _ in range(3):
            await h.serve(request(), up)
            await settle(h)
        assert len(up.calls) == 4
        # The failed refreshes left the stale entry in place (CoreDNS's verifyStaleResponseWriter).
        assert dns.message.from_wire((await h.serve(request(), up)).wire or b"").answer

    run(main)
