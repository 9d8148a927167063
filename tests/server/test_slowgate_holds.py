"""slowgate.holds: "the cache holds this question" for the slow path's reserve and serve_stale order.

It builds the cache key from the raw datagram itself (the miss path calls it for every handed
packet); each key it looks up must be exactly the one the cache stores the question under
(fastpath.key_of of the parsed query): DO and CD variants apart, the name's case folded.
"""

from __future__ import annotations

import itertools

import pytest

from nodelocaldns import native
from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.server.listener import Router
from nodelocaldns.server.slowgate import holds
from support.inproc import query

VARIANTS = list(itertools.product((False, True), (False, True), (False, True)))  # edns, do, cd


def _packet(name: str, edns: bool, do: bool, cd: bool) -> bytes:
    return query(name, 1, flags=0x0100 | (0x10 if cd else 0), edns=edns, do=do and edns)


def _key(data: bytes) -> bytes:
    return fastpath.key_of(wire.parse_query(data))


class _IndexSide:
    """What NativeUDPServer.holds asks: the real native index, nothing else."""

    def __init__(self, index: native.Index) -> None:
        self.index = index

    def holds(self, key: bytes) -> bool:
        return self.index.body(key) is not None


@pytest.mark.skipif(not native.native_available(), reason=native.native_status())
@pytest.mark.parametrize("name", ["a.example.", "Mixed.Case.Example."])
def test_the_native_index_is_asked_for_the_key_the_cache_stores(name: str) -> None:
    from nodelocaldns.plugins.cache.classify import classify
    from nodelocaldns.plugins.cache.entry import Entry
    from nodelocaldns.plugins.cache.setup import CacheConfig

    router = Router({})
    reply = bytes.fromhex("000081800001000100000000") + wire.text_to_wire(name.lower()) + b"\x00\x01\x00\x01"
    reply += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\x00\x04\xc6\x12\x00\x01"
    verdict = classify(reply, wire.text_to_wire(name.lower()), 1, CacheConfig())
    for held in VARIANTS:
        ix = native.new_index(4)
        key = _key(_packet(name, *held))
        assert native.insert_entry(ix, key, Entry(reply, verdict, 1000.0, held[1], held[2], 1))
        side = _IndexSide(ix)
        for asked in VARIANTS:
            for written in (name, name.upper(), name.lower()):
                data = _packet(written, *asked)
                assert holds(router, data, side) == (_key(data) == key), (held, asked, written)
        assert not holds(router, _packet("other.example.", *held), side)


def test_the_memo_arm_and_odd_datagrams() -> None:
    router = Router({})
    smap: dict[bytes, object] = {}
    data = _packet("a.example.", True, True, False)
    qkey = fastpath.question_key(data, data.find(0, 12) + 5)
    router.memo[qkey] = (smap, {}, 0, None, None, fastpath.NO_CAP)  # type: ignore[assignment]
    assert not holds(router, data)
    smap[_key(data)] = object()
    assert holds(router, data)
    assert not holds(router, _packet("a.example.", True, False, False))  # another flag variant
    assert not holds(router, data[:15]) and not holds(router, data[:12] + b"\x00\x00")
    assert not holds(router, data[: data.find(0, 12) + 3])  # the question's type cut short
