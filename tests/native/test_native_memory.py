"""What a name the native index holds costs the Python side (issue 9 item 3: four full caches).

The route memo is the Python fast path's question -> cache lookup. A name the native index holds
is answered from the index, wherever Python would have used the memo: TCP, a datagram the loop
reads itself (server/shared_udp), one a worker handed over before its answer was stored. So the
memo keeps only the names the index does not hold, and "the cache holds it" (the serve_stale
queue's priority) asks the index too.
"""

from __future__ import annotations

import dns.message
import pytest

from nodelocaldns import native
from nodelocaldns.dns import wire
from nodelocaldns.server.native_udp import NativeUDPServer
from support.inproc import inproc

HOSTS = "    hosts {\n        198.18.0.7 web.example.\n    }\n"
COREFILE = ".:{PORT} {\n    bind 127.0.0.1\n    cache 30\n" + HOSTS + "}\n"
KEY = wire.text_to_wire("web.example.") + b"\x00\x01\x00\x01"


def _answer(out: bytes | None) -> list[str]:
    assert out is not None
    return [rr.address for rrs in dns.message.from_wire(out).answer for rr in rrs]


@pytest.mark.skipif(not native.native_available(), reason=native.native_status())
def test_a_name_the_index_holds_is_answered_from_it_without_a_memo_entry() -> None:
    with inproc(COREFILE, native=True) as h:
        nat = h.lst.native
        assert isinstance(nat, NativeUDPServer)
        data = dns.message.make_query("web.example.", "A").to_wire()
        assert _answer(h.udp(data)) == ["198.18.0.7"]  # the miss: the chain stores it
        h.wait_until(lambda: h.call(lambda: nat.holds(KEY)))
        assert h.call(lambda: len(h.lst.router.memo)) == 0
        before = h.call(lambda: dict(h.lst.stats.fast_tcp))
        # A datagram the loop reads itself, then TCP: both fast hits from the index, counted in
        # the loop's slots (bit 4: TCP) as the Python fast path counts its own.
        assert _answer(h.call(lambda: h.lst.fast(data, False))) == ["198.18.0.7"]
        assert _answer(h.tcp(data)) == ["198.18.0.7"]
        after = h.call(lambda: dict(h.lst.stats.fast_tcp))
        grown = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
        assert sorted(k & 4 for k in grown) == [0, 4] and sum(grown.values()) == 2
        # Expired, it is still "cached" for the slow path's queue (serve_stale answers it first).
        h.advance(60)
        assert h.call(lambda: nat._cached(data))
        other = dns.message.make_query("other.example.", "A").to_wire()
        assert not h.call(lambda: nat._cached(other))


def test_without_the_index_the_memo_routes_the_name() -> None:
    with inproc(COREFILE) as h:
        data = dns.message.make_query("web.example.", "A").to_wire()
        assert _answer(h.udp(data)) == ["198.18.0.7"]
        h.wait_until(lambda: h.call(lambda: len(h.lst.router.memo)) == 1)
        assert _answer(h.call(lambda: h.lst.fast(data, False))) == ["198.18.0.7"]


@pytest.mark.skipif(not native.native_available(), reason=native.native_status())
def test_a_mirrored_entry_reads_its_metadata_back_from_the_index() -> None:
    from nodelocaldns.plugins.cache.entry import Entry, Mirrored
    from support.cachefill import warm

    w = warm(False)
    ix = native.new_index(256)
    kind = Mirrored.bound(ix)
    stat = 3 << 48  # a zone id above the stat id bits: sbase is the stat id alone
    seen = 0
    for key, e in [(k, v) for m in w.cache.store.maps for k, v in m.items()]:
        assert isinstance(e, Entry)
        if not native.insert_entry(ix, key, e, stat=stat | e.sbase):
            continue
        m = e.mirrored(kind, key)
        seen += 1
        assert (m.heads, m.offs, m.orig, m.sbase, m.fl, m.q) == (e.heads, e.offs, e.orig, e.sbase, e.fl, e.q)
        assert (m.kind, m.rcode, m.qtype, m.expires) == (e.kind, e.rcode, e.qtype, e.expires)
        assert m.body(e.stored + 2) == e.body(e.stored + 2)
        m.refreshing = True
        assert m.refreshing and m.fl == e.fl | 4
        full = m.materialize()
        assert full is not None and full.refreshing and full.memo == e.body_with_ttl(e.orig)
        m.refreshing = False
        assert not m.refreshing
        # Replaced in the index: the old object reads nothing of its successor, and is expired.
        assert native.insert_entry(ix, key, e, stat=stat | e.sbase) and ix.remove(key)
        assert m.body(e.stored) is None and m.orig == 0 and m.heads == () and m.materialize() is None
    assert seen > 3
    assert ix.meta(b"\x01a\x00\x00\x01\x00\x01") is None
    # The object is its stored time, but never equal to another one or false (a store's value).
    a, b = kind.__new__(kind, 0.0), kind.__new__(kind, 0.0)
    assert a and a != b and a == a and len({a, b}) == 2 and a.stored == 0.0
