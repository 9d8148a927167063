"""loadbalance round_robin in the native index (native/lb.c) against the Python transform.

The Python transform (plugins/loadbalance) stays the one reference. A block whose only plugin
ahead of the cache is a plain ``loadbalance`` gets its entries mirrored with the shuffle flag;
every native reply must be byte for byte what the reference sends for the same hit under some
draws (support/lbref: the draws are read back from the order the native reply has), over answers
with A/AAAA/MX/CNAME/TXT/NS mixes written by three encoders (ours, dnspython's, none). Over many
replies every record reaches every place of its run.
"""

from __future__ import annotations

import gc
import itertools
import struct
from collections import Counter

import dns.message
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nodelocaldns import native
from nodelocaldns.dns import message, wire
from nodelocaldns.metrics.dnsstats import ZoneAcc
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.cache.classify import classify
from nodelocaldns.plugins.cache.entry import Entry, Mirrored
from nodelocaldns.plugins.cache.handler import CacheHandler
from nodelocaldns.plugins.cache.setup import CacheConfig
from nodelocaldns.plugins.loadbalance import fast
from nodelocaldns.plugins.loadbalance.runtime import LoadBalanceRuntime
from nodelocaldns.plugins.loadbalance.setup import LoadBalanceConfig
from nodelocaldns.server.listener import Block, Router
from nodelocaldns.server.native_index import NativeIndex
from support.inproc import query
from support.lbref import reference_could_send

pytestmark = pytest.mark.skipif(not native.native_available(), reason=native.native_status())

NOW = 1000.0
ZONE = "example.org."
QNAME = "m." + ZONE
NAMES = [QNAME, "x." + ZONE, "c." + ZONE, "mail." + ZONE, "a.mx." + ZONE, "b.mx." + ZONE]
SHUFFLED = (1, 28, 15)  # A, AAAA, MX


async def _chain(req: object) -> object:
    raise AssertionError("never called")


def lb_block() -> tuple[Block, NativeIndex, LoadBalanceRuntime]:
    rt = LoadBalanceRuntime(LoadBalanceConfig(), lambda: NOW)
    assert rt.native_shuffle is not None
    cache = CacheHandler(CacheConfig(), (".",), lambda: NOW)
    block = Block((".",), _chain, cache=cache, fast=True, transform=rt.transform, shuffle=rt.native_shuffle)  # type: ignore[arg-type]
    return block, NativeIndex(Router({".": block})), rt


def store(block: Block, reply: bytes, qname: str, qtype: int) -> bytes:
    """Put ``reply`` in the block's cache as the cache plugin does; the key."""
    assert block.cache is not None
    qn = wire.text_to_wire(qname)
    verdict = classify(reply, qn, qtype, CacheConfig())
    key = qn + struct.pack("!HH", qtype, 1)
    if verdict.kind is not None:
        block.cache.store.put(key, Entry(reply, verdict, NOW, False, False, qtype), NOW)
    return key


def plain_hit(block: Block, data: bytes) -> bytes | None:
    """The Python fast path's reply before any transform: what the reference shuffles."""
    assert block.cache is not None
    smap, dmap = block.cache.store.maps
    memo = {fastpath.question_key(data, data.find(0, 12) + 5):
            (smap, dmap, 0, ZoneAcc([".", 0.0, 0.0]), None, fastpath.NO_CAP)}  # fmt: skip
    hit = fastpath.answer(data, NOW, memo, tcp=False)
    return None if hit is None else hit[0]


def rdata_text(rtype: int, k: int) -> str:
    if rtype == 1:
        return f"192.0.2.{k}"
    if rtype == 28:
        return f"2001:db8::{k:x}"
    if rtype == 15:
        return f"{k % 3 * 10} {NAMES[k % len(NAMES)]}"
    if rtype == 5:
        return NAMES[k % len(NAMES)]
    if rtype == 2:
        return NAMES[3 + k % 3]
    return f'"t{k}"'


record = st.tuples(
    st.integers(0, len(NAMES) - 1), st.sampled_from((1, 1, 28, 15, 5, 16, 2)), st.integers(0, 9)
)
section = st.lists(record, max_size=6)


def uncompressed(m: message.Message) -> bytes:
    """The same message with every name written out (as some servers send it)."""
    out = bytearray(
        struct.pack("!HHHHHH", m.id, m.flags, 1, len(m.answer), len(m.authority), len(m.additional))
    )
    out += m.question
    for rr in (*m.answer, *m.authority, *m.additional):
        out += rr.name + struct.pack("!HHIH", rr.rtype, rr.rclass, rr.ttl, len(rr.rdata)) + rr.rdata
    return bytes(out)


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, str, int]:
    qtype = draw(st.sampled_from(SHUFFLED))
    qname = draw(st.sampled_from((QNAME, "M.Example.ORG.")))
    q = dns.message.make_query(qname, dns.rdatatype.RdataType(qtype))
    r = dns.message.make_response(q)
    answer = draw(section)
    # An answer the cache stores: a record of the question's type owned by the name asked.
    answer.insert(draw(st.integers(0, len(answer))), (0, qtype, draw(st.integers(0, 9))))
    for sec, recs in ((r.answer, answer), (r.authority, draw(section)), (r.additional, draw(section))):
        if draw(st.integers(0, 5)):  # mostly in the order the reference writes (else: Python's)
            recs.sort(key=lambda t: 0 if t[1] == 5 else 2 if t[1] in (1, 28) else 3 if t[1] == 15 else 1)
        for owner, rtype, k in recs:
            name = qname if owner == 0 else NAMES[owner]
            sec.append(
                dns.rrset.from_text(name, 30, "IN", dns.rdatatype.RdataType(rtype), rdata_text(rtype, k))
            )
    reply = r.to_wire()
    how = draw(st.sampled_from(("dnspython", "ours", "uncompressed")))
    if how == "ours":
        reply = message.encode(message.decode(reply))
    elif how == "uncompressed":
        reply = uncompressed(message.decode(reply))
    event(how)
    return reply, qname, qtype


def records(reply: bytes) -> list[list[message.RR]]:
    m = message.decode(reply)
    return [m.answer, m.authority, m.additional]


def check_one(rt: LoadBalanceRuntime, plain: bytes, got: bytes) -> None:
    assert reference_could_send(rt, plain, got), (plain.hex(), got.hex())
    # What that means, spelled out: same length, header and question; per section the same
    # records (TTLs included, the OPT's bytes too), and every record that is not A/AAAA/MX (or
    # the OPT, which the reference moves in front of the additional addresses) in its place.
    qend = plain.find(0, 12) + 5
    assert len(got) == len(plain) and got[:qend] == plain[:qend]
    for a, b in zip(records(plain), records(got), strict=True):
        assert Counter(map(repr, a)) == Counter(map(repr, b))
        fixed = [(i, r) for i, r in enumerate(a) if r.rtype not in (*SHUFFLED, message.TYPE_OPT)]
        assert all(b[i] == r for i, r in fixed)


SETTINGS = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(r=replies(), flags=st.sampled_from((0x0000, 0x0100, 0x0120, 0x0020)), edns=st.booleans())
def test_native_shuffle_is_a_reply_the_reference_could_send(r: tuple[bytes, str, int], flags: int,
                                                             edns: bool) -> None:  # fmt: skip
    reply, qname, qtype = r
    block, nix, rt = lb_block()
    key = store(block, reply, qname, qtype)
    data = query(qname, qtype, flags=flags, edns=edns)
    plain = plain_hit(block, data)
    got = nix.index.answer(data, NOW)
    event("native" if got is not None else "left to Python" if plain is not None else "not cached")
    if got is None:
        if plain is not None:  # a hit left to Python: only because the mirror or the C side refused it
            e = block.cache.store.get(key) if block.cache else None
            assert e is not None
            if nix.mirrors[0]._shuffles(key, e):
                with pytest.raises(ValueError, match="loadbalance"):
                    native.insert_entry(native.new_index(4), key, e, shuffle=True)
        return
    assert plain is not None
    for _ in range(6):
        check_one(rt, plain, nix.index.answer(data, NOW) or b"")
    nix.close()


def _reply(answer: list[tuple[str, str, str]], additional: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
           qname: str = QNAME, qtype: str = "A") -> bytes:  # fmt: skip
    r = dns.message.make_response(dns.message.make_query(qname, qtype))
    for sec, recs in ((r.answer, answer), (r.additional, additional)):
        for name, t, text in recs:
            sec.append(dns.rrset.from_text(name, 30, "IN", t, text))
    return r.to_wire()


def positions(nix: NativeIndex, data: bytes, n: int) -> Counter[tuple[str, int]]:
    seen: Counter[tuple[str, int]] = Counter()
    for _ in range(n):
        got = nix.index.answer(data, NOW)
        assert got is not None
        for sec in records(got):
            addrs = [r for r in sec if r.rtype in SHUFFLED]
            for i, rr in enumerate(addrs):
                seen[(rr.rdata.hex(), i)] += 1
    return seen


@pytest.mark.parametrize("n", [2, 3, 5])
def test_every_record_reaches_every_place(n: int) -> None:
    block, nix, rt = lb_block()
    reply = _reply([(QNAME, "A", f"192.0.2.{i}") for i in range(n)])
    store(block, reply, QNAME, 1)
    data = query(QNAME, 1)
    plain = plain_hit(block, data)
    assert plain is not None
    seen = positions(nix, data, 200 * n)
    assert len(seen) == n * n, seen  # each of n records in each of n places
    assert min(seen.values()) > 200 * n / n / n / 3  # and not rarely: roughly 1/n each
    for _ in range(20):
        check_one(rt, plain, nix.index.answer(data, NOW) or b"")


def test_cname_then_addresses_and_mx_runs_each_shuffle() -> None:
    """A CNAME chain stays first; its addresses shuffle (their owner points into the CNAME)."""
    block, nix, rt = lb_block()
    reply = _reply([(QNAME, "CNAME", "c." + ZONE)] + [("c." + ZONE, "AAAA", f"2001:db8::{i}") for i in range(1, 4)],
                   qtype="AAAA")  # fmt: skip
    store(block, reply, QNAME, 28)
    data = query(QNAME, 28, edns=True)
    plain = plain_hit(block, data)
    assert plain is not None and nix.index.answer(data, NOW) is not None
    orders = set()
    for _ in range(60):
        got = nix.index.answer(data, NOW) or b""
        check_one(rt, plain, got)
        orders.add(got)
    assert len(orders) == 6  # 3! orders


def test_edns_reply_moves_the_opt_in_front_of_the_additional_addresses() -> None:
    """The reference treats the OPT as an "other" record of the additional section."""
    block, nix, rt = lb_block()
    reply = _reply([(QNAME, "A", "192.0.2.1"), (QNAME, "A", "192.0.2.2")], [("ns." + ZONE, "A", "192.0.2.9")])
    store(block, reply, QNAME, 1)
    data = query(QNAME, 1, edns=True, do=False)
    plain = plain_hit(block, data)
    got = nix.index.answer(data, NOW)
    assert plain is not None and got is not None
    check_one(rt, plain, got)
    assert [r.rtype for r in records(got)[2]] == [message.TYPE_OPT, 1]
    noedns = query(QNAME, 1)
    assert [r.rtype for r in records(nix.index.answer(noedns, NOW) or b"")[2]] == [1]


def test_pointers_into_records_that_move_are_left_to_python() -> None:
    """MX glue whose owner points into an MX exchange: moving the MX would break it."""
    block, nix, rt = lb_block()
    reply = _reply([(QNAME, "MX", "10 a.mx." + ZONE), (QNAME, "MX", "20 b.mx." + ZONE)],
                   [("a.mx." + ZONE, "A", "192.0.2.1")], qtype="MX")  # fmt: skip
    assert reply.count(b"\x02mx") == 1  # dnspython compressed b.mx. and the glue against a.mx.
    key = store(block, reply, QNAME, 15)
    assert block.cache is not None and block.cache.store.get(key) is not None
    assert nix.index.answer(query(QNAME, 15), NOW) is None
    e = block.cache.store.get(key)
    assert e is not None
    with pytest.raises(ValueError, match="compression pointer"):
        native.insert_entry(nix.index, key, e, shuffle=True)


def test_uncompressed_replies_are_left_to_python() -> None:
    """The reference's encoder would compress them: its bytes are not these, moved or not."""
    block, nix, _rt = lb_block()
    m = message.decode(_reply([(QNAME, "A", f"192.0.2.{i}") for i in range(3)]))
    reply = uncompressed(m)
    assert not fast.native_ok(reply)
    key = store(block, reply, QNAME, 1)
    assert block.cache is not None and block.cache.store.get(key) is not None
    assert nix.index.answer(query(QNAME, 1), NOW) is None


def test_replies_the_reference_leaves_alone_are_served_plain() -> None:
    block, nix, _rt = lb_block()
    reply = _reply([(QNAME, "A", "192.0.2.1")])
    store(block, reply, QNAME, 1)
    data = query(QNAME, 1, edns=True)
    assert nix.index.answer(data, NOW) == plain_hit(block, data)


# loadbalance on compact, one-copy entries (issue 9): a shuffled entry keeps its plan last in the
# native entry (after the cased question and any whole heads); its Python side is a Mirrored.


def test_a_shuffled_entry_is_mirrored_and_python_reads_the_plain_bytes() -> None:
    block, nix, rt = lb_block()
    reply = _reply([(QNAME, "A", f"192.0.2.{i}") for i in range(1, 4)])
    key = store(block, reply, QNAME, 1)
    assert block.cache is not None
    held = block.cache.store.get(key)
    assert isinstance(held, Mirrored)
    body = reply[reply.find(0, 12) + 5 :]
    assert not [r for r in gc.get_referents(held) if isinstance(r, bytes) and body in r]
    assert held.body_with_ttl(30) == body == nix.index.body(key)  # never a shuffled copy
    data = query(QNAME, 1)
    plain = plain_hit(block, data)  # the Python fast path, reading through Index.body
    assert plain is not None and plain[plain.find(0, 12) + 5 :] == body
    orders = set()
    for _ in range(80):
        got = nix.index.answer(data, NOW) or b""
        check_one(rt, plain, got)
        orders.add(got)
    assert len(orders) == 6


def _heads(n: int, whole: bool) -> bytes:
    """Eight heads for n answers; ``whole``: AD without AD asked, so no head_index rule holds."""
    out = b""
    for idx in range(8):
        flags = 0x8180 | (idx & 1) << 8 | (0x20 if whole and idx == 1 else 0)
        out += struct.pack("!HHHHH", flags, 1, n, 0, 1 if idx >= 4 else 0)
    return out


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize("name", ["m.example.", "Mx.Example.", "Mxy.Example."])
def test_the_plan_follows_the_cased_question_and_whole_heads(name: str, whole: bool) -> None:
    n = 3
    qname = b"".join(bytes([len(x)]) + x.encode() for x in name.rstrip(".").split(".")) + b"\x00"
    key = qname.lower() + b"\x00\x01\x00\x01"
    recs = [b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + bytes((192, 0, 2, i)) for i in range(n)]
    body, offs = b"".join(recs), [16 * i + 6 for i in range(n)]
    q = qname + b"\x00\x01\x00\x01" if name != name.lower() else None
    ix, plain_ix = native.new_index(4), native.new_index(4)
    mod = native.module()
    assert ix.insert(key, _heads(n, whole), body, offs, NOW, 30, mod.FLAG_SHUFFLE, q)
    assert plain_ix.insert(key, _heads(n, whole), body, offs, NOW, 30, 0, q)
    # The plan (28 bytes + 2 per run and per record) and at most one byte to align it: nothing else.
    assert ix.bytes - plain_ix.bytes - (28 + 2 * (n + 1)) in (0, 1)
    assert ix.body(key) == body
    want = {b"".join(p) for p in itertools.permutations(recs)}
    for rd in (0, 0x0100):
        data = query(name, 1, flags=rd)
        plain = plain_ix.answer(data, NOW)
        head = 0x8180 | rd | (0x20 if whole and rd else 0)  # heads[1]: RD (and the odd AD)
        assert plain is not None and plain[2:4] == struct.pack("!H", head)
        seen = set()
        for _ in range(60):
            got = ix.answer(data, NOW)
            assert got is not None and got[: -16 * n] == plain[: -16 * n]
            seen.add(got[-16 * n :])
        assert seen == want
