"""The native index as a mirror of the cache stores (server/native_index.py, plugins/cache/store.py).

After any sequence of stores, replacements, success/denial swaps and evictions, the index answers
exactly the keys the owning block's store holds, with the bytes the Python fast path makes of
that store's entry; a key stored by a block the zone table does not route it to, a qtype a block
leaves to the chain (dns64) and a block with a reply transform never reach the index, unless that
transform is loadbalance's round_robin alone, which the index applies itself (test_native_lb.py).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodelocaldns import native
from nodelocaldns.dns import wire
from nodelocaldns.metrics.dnsstats import ZoneAcc
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.cache.classify import classify
from nodelocaldns.plugins.cache.entry import Entry
from nodelocaldns.plugins.cache.handler import CacheHandler
from nodelocaldns.plugins.cache.setup import CacheConfig
from nodelocaldns.server.listener import Block, Router
from nodelocaldns.server.native_index import NativeIndex
from support.inproc import query

pytestmark = pytest.mark.skipif(not native.native_available(), reason=native.native_status())

NOW = 1000.0
NAMES = [f"n{i}.example." for i in range(6)] + ["x.sub.example."]


async def _chain(req: object) -> object:
    raise AssertionError("never called")


def _reply(name: str, qtype: int, nx: bool, ttl: int) -> bytes:
    qn = wire.text_to_wire(name)
    head = struct.pack("!HHHHHH", 0, 0x8183 if nx else 0x8180, 1, 0 if nx else 1, 1 if nx else 0, 0)
    q = qn + struct.pack("!HH", qtype, 1)
    if nx:
        soa = b"\x02ns\x00\x04host\x00" + struct.pack("!IIIII", 1, 7200, 1800, 86400, ttl)
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 6, 1, ttl, len(soa)) + soa
    elif qtype == 28:
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, ttl, 16) + bytes(15) + b"\x01"
    else:
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + bytes((198, 18, 0, len(name)))
    return head + q + rr


def _block(zones: tuple[str, ...], caps: tuple[int, int], **kw: object) -> Block:
    cache = CacheHandler(CacheConfig(), zones, lambda: NOW)
    cache.store.caps = caps
    return Block(zones, _chain, cache=cache, fast=True, **kw)  # type: ignore[arg-type]


def _put(block: Block, name: str, qtype: int, nx: bool, do: bool, ttl: int) -> None:
    assert block.cache is not None
    reply = _reply(name, qtype, nx, ttl)
    qname = wire.text_to_wire(name)
    verdict = classify(reply, qname, qtype, CacheConfig())
    key = fastpath.flagged(qname + struct.pack("!HH", qtype, 1), do, 0)
    block.cache.store.put(key, Entry(reply, verdict, NOW, do, False, qtype), NOW)


def _check(nix: NativeIndex, owner: dict[str, Block], now: float) -> None:
    for name in NAMES:
        for qtype in (1, 28):
            for do in (False, True):
                data = query(name, qtype, edns=do, do=do)
                b = owner[name]
                assert b.cache is not None
                smap, dmap = b.cache.store.maps
                memo = {fastpath.question_key(data, data.find(0, 12) + 5):
                        (smap, dmap, 0, ZoneAcc([".", 0.0, 0.0]), None, fastpath.NO_CAP)}  # fmt: skip
                ref = fastpath.answer(data, now, memo, tcp=False)
                got = nix.index.answer(data, now)
                if qtype in b.skips:
                    assert got is None
                else:
                    assert got == (ref[0] if ref is not None else None), (name, qtype, do)


ops = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.sampled_from((1, 28)),
        st.booleans(),
        st.booleans(),
        st.integers(2, 40),
        st.booleans(),  # which block's store (a block the name is not routed to must never show)
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, database=None)
@given(seq=ops, later=st.sampled_from((0.0, 1.0, 2.5, 30.0)))
def test_index_is_the_owning_store(seq: list[tuple[str, int, bool, bool, int, bool]], later: float) -> None:
    root = _block((".",), (3, 2))
    sub = _block(("sub.example.",), (2, 2), skips=frozenset({28}))
    router = Router({".": root, "sub.example.": sub})
    nix = NativeIndex(router)
    owner = {n: sub if n.endswith("sub.example.") else root for n in NAMES}
    for name, qtype, nx, do, ttl, other in seq:
        target = owner[name] if not other else (root if owner[name] is sub else sub)
        _put(target, name, qtype, nx, do, ttl)
        _check(nix, owner, NOW + later)
    held = sum(len(m) for b in (root, sub) if b.cache for m in b.cache.store.maps)
    assert len(nix.index) <= held
    nix.close()
    assert root.cache is not None and not root.cache.store.mirrors
    # Closing stops the mirroring but keeps the bytes the stores' Mirrored entries read.
    for b in (root, sub):
        assert b.cache is not None
        for m in b.cache.store.maps:
            assert all(e.body_with_ttl(e.orig) is not None for e in m.values())


def test_entries_stored_before_the_index_exist_are_mirrored_on_attach() -> None:
    root = _block((".",), (8, 8))
    _put(root, "n1.example.", 1, False, False, 30)
    nix = NativeIndex(Router({".": root}))
    assert nix.index.answer(query("n1.example.", 1), NOW) is not None


def test_a_block_with_a_reply_transform_stays_on_the_python_path() -> None:
    root = _block((".",), (8, 8), transform=lambda b: b)
    nix = NativeIndex(Router({".": root}))
    _put(root, "n1.example.", 1, False, False, 30)
    assert len(nix.index) == 0 and not nix.mirrors


def test_a_round_robin_block_is_mirrored_with_the_shuffle() -> None:
    from nodelocaldns.plugins.loadbalance.runtime import LoadBalanceRuntime
    from nodelocaldns.plugins.loadbalance.setup import LoadBalanceConfig

    rt = LoadBalanceRuntime(LoadBalanceConfig(), lambda: NOW)
    root = _block((".",), (8, 8), transform=rt.transform, shuffle=rt.native_shuffle)
    nix = NativeIndex(Router({".": root}))
    _put(root, "n1.example.", 1, False, False, 30)
    assert len(nix.index) == 1 and nix.index.answer(query("n1.example.", 1), NOW) is not None


def test_an_eviction_leaves_another_blocks_entry_in_a_shared_index_alone() -> None:
    # One block on two listeners' zone tables: on the first, x.sub.example. belongs to ``sub``;
    # on the second, to ``root`` (whose index then holds root's copy, and root's store a Mirrored
    # of that index). Evicting it from root must clear it from the second index only.
    root = _block((".",), (1, 1))
    sub = _block(("sub.example.",), (4, 4))
    first = NativeIndex(Router({".": root, "sub.example.": sub}))
    second = NativeIndex(Router({".": root}))
    name = "x.sub.example."
    _put(sub, name, 1, False, False, 30)
    _put(root, name, 1, False, False, 20)
    key = fastpath.flagged(wire.text_to_wire(name) + b"\x00\x01\x00\x01", False, 0)
    assert root.cache is not None and type(root.cache.store.get(key)) in (first.mirrored, second.mirrored)
    data = query(name, 1)
    want_sub = first.index.answer(data, NOW)
    assert want_sub is not None and second.index.answer(data, NOW) is not None
    _put(root, "n0.example.", 1, False, False, 30)  # root's cap is 1: x.sub.example. is evicted
    assert root.cache.store.get(key) is None
    assert second.index.answer(data, NOW) is None
    assert first.index.answer(data, NOW) == want_sub
    # And an eviction from the owner clears the first index's copy.
    assert sub.cache is not None
    for i in range(4):
        _put(sub, f"y{i}.sub.example.", 1, False, False, 30)
    assert sub.cache.store.get(key) is None and first.index.answer(data, NOW) is None


def test_holds_trusts_only_a_mirrored_of_its_own_index() -> None:
    # Listener.handle passes what the store holds: a Mirrored of the listener's own index is held
    # there without a body copy; one of another index (a shared block, an old generation) is not
    # proof, the index is asked.
    from types import SimpleNamespace

    from nodelocaldns.server.native_udp import NativeUDPServer

    root = _block((".",), (4, 4))
    sub = _block(("sub.example.",), (4, 4))
    first = NativeIndex(Router({".": root, "sub.example.": sub}))
    second = NativeIndex(Router({".": root}))
    name = "x.sub.example."
    _put(root, name, 1, False, False, 20)  # routed to sub on the first table: only the second holds it
    key = fastpath.flagged(wire.text_to_wire(name) + b"\x00\x01\x00\x01", False, 0)
    assert root.cache is not None
    held = root.cache.store.get(key)
    assert type(held) is second.mirrored
    on_first, on_second = SimpleNamespace(nix=first), SimpleNamespace(nix=second)
    assert not NativeUDPServer.holds(on_first, key, held)  # type: ignore[arg-type]
    assert NativeUDPServer.holds(on_second, key, held) and NativeUDPServer.holds(on_second, key)  # type: ignore[arg-type]
    _put(sub, name, 1, False, False, 30)
    assert NativeUDPServer.holds(on_first, key, held)  # type: ignore[arg-type]
    assert sub.cache is not None and type(sub.cache.store.get(key)) is first.mirrored


def test_a_mirror_trusts_only_its_own_routers_route_for_a_key() -> None:
    """Store.put may carry the listener's route (Request.route): the mirror skips routing the key
    again only for a route tuple of its own index's router. A tuple of another router (another
    listener's zone table), even an equal one, is routed here, so a key that router would give
    this block but the index's router gives another never reaches this block's entries."""
    root = _block((".",), (8, 8))
    sub = _block(("sub.example.",), (8, 8))
    router = Router({".": root, "sub.example.": sub})
    nix = NativeIndex(router)
    other = Router({".": root})  # routes x.sub.example. to root: a foreign, equal-looking tuple
    name, qtype = "x.sub.example.", 1
    qname = wire.text_to_wire(name)
    key = qname + struct.pack("!HH", qtype, 1)
    reply = _reply(name, qtype, False, 30)
    verdict = classify(reply, qname, qtype, CacheConfig())
    foreign = other.route(qname, qtype)
    assert foreign is not None and foreign == (".", root) and foreign is not router.by_wire[b"\x00"]
    assert root.cache is not None and sub.cache is not None
    root.cache.store.put(key, Entry(reply, verdict, NOW, False, False, qtype), NOW, foreign)
    assert nix.index.body(key) is None  # routed here: sub's, not root's
    own = router.route(qname, qtype)
    assert own is not None and own[1] is sub
    sub.cache.store.put(key, Entry(reply, verdict, NOW, False, False, qtype), NOW, own)
    assert nix.index.body(key) is not None
    n1 = wire.text_to_wire("n1.example.") + struct.pack("!HH", qtype, 1)
    r1 = _reply("n1.example.", qtype, False, 30)
    v1 = classify(r1, wire.text_to_wire("n1.example."), qtype, CacheConfig())
    root.cache.store.put(n1, Entry(r1, v1, NOW, False, False, qtype), NOW, router.route(n1[:-4], qtype))
    assert nix.index.body(n1) is not None
    nix.close()
