"""One copy of each cached answer (issue 9 item 3): the native index holds a mirrored entry's bytes.

A store mirrored into a NativeIndex keeps a ``Mirrored`` (metadata only) where the pure-Python
path keeps an ``Entry`` with its bytes. Each test runs the same replies through a twin store
nothing mirrors, and holds every Python read of the mirrored one to the twin's bytes.
"""

from __future__ import annotations

import gc
import struct

import pytest

from nodelocaldns import native
from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.cache.classify import DENIAL, SUCCESS, classify
from nodelocaldns.plugins.cache.entry import Entry, Mirrored
from nodelocaldns.plugins.cache.handler import CacheHandler
from nodelocaldns.plugins.cache.setup import CacheConfig
from nodelocaldns.server.listener import Block, Router
from nodelocaldns.server.native_index import NativeIndex
from support.inproc import query

pytestmark = pytest.mark.skipif(not native.native_available(), reason=native.native_status())

NOW = 1000.0


async def _chain(req: object) -> object:
    raise AssertionError("never called")


def _reply(name: str, nx: bool = False, ttl: int = 30, owner_case: str | None = None) -> bytes:
    qn = b"".join(bytes([len(x)]) + x.encode() for x in (owner_case or name).rstrip(".").split(".")) + b"\x00"
    head = struct.pack("!HHHHHH", 0, 0x8183 if nx else 0x81A0, 1, 0 if nx else 2, 1 if nx else 0, 0)
    q = qn + struct.pack("!HH", 1, 1)
    if nx:
        soa = b"\x02ns\x00\x04host\x00" + struct.pack("!IIIII", 1, 7200, 1800, 86400, ttl)
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 6, 1, ttl, len(soa)) + soa
    else:
        rr = b"".join(
            b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + bytes((198, 18, 0, i)) for i in (1, 2)
        )
    return head + q + rr


def _block(caps: tuple[int, int] = (8, 8), **cfg: object) -> Block:
    cache = CacheHandler(CacheConfig(**cfg), (".",), lambda: NOW)  # type: ignore[arg-type]
    cache.store.caps = caps
    return Block((".",), _chain, cache=cache, fast=True)


def _entry(name: str, nx: bool = False, ttl: int = 30, now: float = NOW, **kw: object) -> tuple[bytes, Entry]:
    reply = _reply(name, nx, ttl, **kw)  # type: ignore[arg-type]
    qname = wire.text_to_wire(name)
    verdict = classify(reply, qname, 1, CacheConfig())
    return qname + b"\x00\x01\x00\x01", Entry(reply, verdict, now, False, False, 1)


def _twins(caps: tuple[int, int] = (8, 8)) -> tuple[Block, Block, NativeIndex]:
    mirrored, plain = _block(caps), _block(caps)
    return mirrored, plain, NativeIndex(Router({".": mirrored}))


def _put(b: Block, name: str, now: float = NOW, **kw: object) -> bytes:
    assert b.cache is not None
    key, e = _entry(name, now=now, **kw)  # type: ignore[arg-type]
    b.cache.store.put(key, e, now)
    return key


def test_the_index_is_the_only_holder_of_a_mirrored_entrys_bytes() -> None:
    m, p, nix = _twins()
    key = _put(m, "a.example.")
    _put(p, "a.example.")
    assert m.cache is not None and p.cache is not None
    held, twin = m.cache.store.get(key), p.cache.store.get(key)
    assert isinstance(held, Mirrored) and isinstance(twin, Entry)
    body = twin.memo
    # Nothing the Python object refers to carries the records; the index returns them whole.
    assert not [r for r in gc.get_referents(held) if isinstance(r, bytes) and body in r]
    assert not hasattr(held, "memo") and not hasattr(held, "__dict__")
    assert nix.index.body(key) == body
    # The Python object is smaller than the one it replaced, bytes aside: its stored time (it is
    # a float) and a key slot, the index being its class's (one type per index), the rest read
    # back from it.
    assert Mirrored.__basicsize__ < Entry.__basicsize__
    assert type(held).__basicsize__ == float.__basicsize__ + 8 and type(held).src is nix.index
    # Another generation's index (a reload) gets its own type; the old entries keep reading theirs.
    m2, _p2, nix2 = _twins()
    key2 = _put(m2, "a.example.")
    assert m2.cache is not None
    held2 = m2.cache.store.get(key2)
    assert isinstance(held2, Mirrored) and type(held2).src is nix2.index and type(held2) is not type(held)
    nix2.index.clear()
    assert held.body_with_ttl(30) == body and held2.body_with_ttl(30) is None


@pytest.mark.parametrize("later", [0.0, 0.5, 1.0, 7.25, 29.9, 30.0, 45.0])
@pytest.mark.parametrize("name", ["a.example.", "nx.example.", "Mixed.Example."])
def test_python_reads_of_a_mirrored_entry_are_byte_identical(name: str, later: float) -> None:
    m, p, nix = _twins()
    kw = {"nx": name.startswith("nx."), "owner_case": name if name != name.lower() else None}
    key = _put(m, name.lower(), **kw)  # type: ignore[arg-type]
    _put(p, name.lower(), **kw)  # type: ignore[arg-type]
    assert m.cache is not None and p.cache is not None
    got, want = m.cache.store.get(key), p.cache.store.get(key)
    assert isinstance(got, Mirrored) and isinstance(want, Entry)
    now = NOW + later
    assert got.body(now) == want.body(now)
    assert got.ttl(now) == want.ttl(now) and got.expires == want.expires
    assert (got.kind, got.rcode, got.qtype, got.size, got.q) == (
        want.kind,
        want.rcode,
        want.qtype,
        want.size,
        want.q,
    )
    for ttl in (0, 3, 30):  # serve_stale's stale_response_ttl, any value
        assert got.body_with_ttl(ttl) == want.body_with_ttl(ttl)
    body = want.body(now)
    for qname in (name, name.upper(), name.lower()):
        for edns in (False, True):
            data = query(qname, 1, edns=edns, do=edns)
            if body is not None:  # the slow path's render (a client writing the name another way)
                q = wire.parse_query(data)
                assert got.render(data, q, body, 4096) == want.render(data, q, body, 4096)
            # The Python fast path (TCP past the index, a handed UDP packet) and the index agree.
            routes = [{fastpath.question_key(data, data.find(0, 12) + 5): (b.cache.store.maps[0], b.cache.store.maps[1],
                                                                         0, None, None, fastpath.NO_CAP)}
                      for b in (m, p) if b.cache is not None]  # fmt: skip
            a, b = (fastpath.answer(data, now, r, tcp=True) for r in routes)
            assert (a and a[0]) == (b and b[0])
            assert (
                nix.index.answer(data, now, True) == (b[0] if b and b[0] else None) or qname != qname.lower()
            )


def test_eviction_and_replacement_free_the_index_copy() -> None:
    m, _p, nix = _twins(caps=(2, 2))
    keys = [_put(m, f"n{i}.example.") for i in range(2)]
    size = nix.index.bytes
    assert m.cache is not None and len(nix.index) == 2
    first = m.cache.store.get(keys[0])
    assert isinstance(first, Mirrored)
    third = _put(m, "n2.example.")  # evicts n0 (FIFO): gone from the store and the index
    assert m.cache.store.get(keys[0]) is None and nix.index.body(keys[0]) is None
    assert len(nix.index) == 2 and nix.index.bytes == size and m.cache.store.evictions[SUCCESS] == 1
    assert first.body(NOW) is None  # whoever still holds the evicted object reads nothing
    old = m.cache.store.get(third)
    assert isinstance(old, Mirrored)
    _put(m, "n2.example.", now=NOW + 2, ttl=9)  # replaced: the old object never reads its successor
    new = m.cache.store.get(third)
    assert isinstance(new, Mirrored) and new is not old
    assert old.body_with_ttl(5) is None and new.body(NOW + 2) is not None and len(nix.index) == 2


def test_a_key_leaving_the_index_but_not_the_store_gets_its_bytes_back() -> None:
    # prefer_positive: a success and a denial side by side leave the index (the chain picks), so
    # a Mirrored success first becomes an Entry again with the same bytes.
    m = _block(serve_stale=60.0, prefer_positive=True)
    p = _block(serve_stale=60.0, prefer_positive=True)
    nix = NativeIndex(Router({".": m}))
    for b in (m, p):
        assert b.cache is not None
        key, e = _entry("a.example.")
        b.cache.store.put_preferring(key, e, NOW, True)
    assert m.cache is not None and p.cache is not None
    assert isinstance(m.cache.store.maps[SUCCESS][key], Mirrored)
    for b in (m, p):
        assert b.cache is not None
        _key, d = _entry("a.example.", nx=True)
        b.cache.store.put_preferring(key, d, NOW, False)
    back, twin = m.cache.store.maps[SUCCESS][key], p.cache.store.maps[SUCCESS][key]
    assert isinstance(back, Entry) and isinstance(twin, Entry)
    assert nix.index.body(key) is None and key in m.cache.store.maps[DENIAL]
    for later in (0.0, 3.0):
        assert back.body(NOW + later) == twin.body(NOW + later)


def test_index_body_patches_the_ttl_and_checks_the_entry() -> None:
    ix = native.new_index(4)
    key, e = _entry("a.example.")
    assert native.insert_entry(ix, key, e)
    assert ix.body(key) == e.memo and ix.body(key, 30, NOW) == e.memo
    assert ix.body(key, 7) == e.body_with_ttl(7)
    assert ix.body(key, 7, NOW + 1) is None  # another entry's stored time: not this one
    assert ix.body(key[:-1] + b"\x1c") is None
    with pytest.raises(ValueError):
        ix.body(key, 1 << 32)


@pytest.mark.parametrize("keepttl", [False, True])
@pytest.mark.parametrize("later", [0.0, 0.5, 1.0, 7.25])
def test_an_entry_goes_into_the_index_at_its_original_ttl_whatever_its_memo(
    later: float, keepttl: bool
) -> None:
    # A new entry's memo is handed over as it is (no copy); one whose memo body() moved on to a
    # later second (an entry mirrored after it served: attach, a reload) is copied back to orig.
    reply = _reply("a.example.", ttl=30)
    verdict = classify(reply, wire.text_to_wire("a.example."), 1, CacheConfig())
    e = Entry(reply, verdict, NOW, False, False, 1, keepttl)
    key = wire.text_to_wire("a.example.") + b"\x00\x01\x00\x01"
    at_orig = e.body_with_ttl(30)
    assert e.body(NOW + later) is not None
    assert e.orig_body() == at_orig and (later >= 1 and not keepttl) == (e.memo != at_orig)
    ix = native.new_index(4)
    assert native.insert_entry(ix, key, e)
    ttl = 30 if keepttl else 30 - int(later)
    assert ix.body(key) == at_orig and ix.body(key, ttl, NOW) == e.body(NOW + later)


def test_an_index_entry_spends_little_beyond_its_key_and_records() -> None:
    ix = native.new_index(4)
    key, e = _entry("a.example.")
    assert native.insert_entry(ix, key, e)
    payload = len(key) + len(e.memo) + 2 * len(e.offs)
    # The eight header variants follow head_index: one is stored, the rest derived when sent.
    assert ix.bytes - payload <= 48
    other = native.new_index(4)
    assert other.insert(key, bytes(80), e.memo, e.offs, NOW, 30)  # heads that follow no rule: kept whole
    assert other.bytes == ix.bytes + 80
