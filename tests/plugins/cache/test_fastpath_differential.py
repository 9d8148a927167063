"""The cache fast path, three ways: the UDP path, the reference function, the slow path.

A real in-process server (fake clock, real unbound upstream) is warmed through the slow path, then
every packet is given to ``fastpath.answer`` (the reference), sent to the UDP socket and to
``Listener.handle`` (the plugin chain), and all three must answer with the same bytes. Every
server runs twice: with the Python UDP thread (the inlined loop in UDPWorker.run) and with the
integrated native path (native workers pinned to the fake clock, the index mirrored from the
cache, misses handed back to Python), where the native index's own answer must match as well.
Golden vectors pin the splice itself byte for byte.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodelocaldns.native import native_available
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.cache.classify import classify
from nodelocaldns.plugins.cache.entry import Entry
from nodelocaldns.plugins.cache.setup import CacheConfig
from support.inproc import Harness, inproc, query
from support.lbref import ReplayRng, check_native_shuffle
from support.taught import taught
from support.upstreams import unbound_server

ZONES = {
    "cluster.local.": [
        "a.cluster.local. 30 IN A 198.18.0.1",
        "a.cluster.local. 30 IN AAAA fd00::1",
        'a.cluster.local. 30 IN TXT "hello"',
        "b.cluster.local. 30 IN A 198.18.0.2",
        "c.cluster.local. 30 IN A 198.18.0.3",
        "c.cluster.local. 30 IN AAAA fd00::3",
        'c.cluster.local. 30 IN TXT "mixed"',
        *[f'big.cluster.local. 30 IN TXT "{i:03d}{"z" * 90}"' for i in range(30)],
    ]
}
NAMES = (
    "a.cluster.local.",
    "b.cluster.local.",
    "big.cluster.local.",
    "nx.cluster.local.",
    "c.cluster.local.",
)
# The case each name is first asked (and so stored) in: owner names keep it on every hit.
STORED = {n: n for n in NAMES} | {"c.cluster.local.": "C.Cluster.LOCAL."}
TYPES = (1, 28, 16)
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


Env = Harness


MODES = [
    "python",
    pytest.param("native", marks=pytest.mark.skipif(not native_available(), reason="no native extension")),
]


@contextlib.contextmanager
def serving(
    zones: dict[str, list[str]], extra: str = "", names: tuple[str, ...] = NAMES, native: bool = False
) -> Iterator[Harness]:
    """An in-process server (``extra`` directives in its one block) over unbound, warmed for ``names``."""
    with unbound_server(zones) as up:
        text = f".:{{PORT}} {{\n    bind 127.0.0.1\n{extra}    cache 30\n    forward . {up.address}\n}}\n"
        with inproc(text, native=native) as e:
            assert (e.lst.native is not None) == native
            # Warm every key a drawn packet can have (name, type, DO, CD) through the slow path.
            for name in names:
                for qtype in TYPES:
                    for do in (False, True):
                        for cd in (0, 0x10):
                            e.slow(query(STORED.get(name, name), qtype, flags=0x0100 | cd, edns=do, do=do))
            yield e


@pytest.fixture(scope="module", params=MODES)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with serving(ZONES, native=request.param == "native") as e:
        yield e


def native_answer(env: Env, data: bytes, tcp: bool = False) -> bytes | None:
    """What the native index itself answers (None in Python mode, or when it is not a native hit)."""
    nat = env.lst.native
    return None if nat is None else nat.nix.index.answer(data, env.clock(), tcp)


def fast_hits(env: Env) -> int:
    return env.call(lambda: sum(n for _k, n in env.lst.stats.fast_items()))


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(NAMES))
    # The stored case, all lowercase, or any mix: the reply echoes the client's question and
    # keeps the owner names as stored.
    case = draw(st.sampled_from(("stored", "lower", "mixed")))
    if case == "stored":
        name = STORED[name]
    elif case == "mixed":
        name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    flags = draw(st.sampled_from((0x0000, 0x0100))) | draw(st.sampled_from((0, 0x10, 0x20, 0x30, 0x40)))
    edns = draw(st.booleans())
    return query(
        name,
        draw(st.sampled_from(TYPES)),
        qid=draw(st.integers(0, 0xFFFF)),
        flags=flags,
        edns=edns,
        do=draw(st.booleans()),
        size=draw(st.sampled_from((0, 100, 512, 600, 1232, 4096, 65535))),
        version=draw(st.sampled_from((0, 0, 0, 1))),
    )


@SETTINGS
@given(data=packets())
def test_udp_path_reference_and_slow_path_agree(env: Env, data: bytes) -> None:
    ref = fastpath.answer(data, env.clock(), taught(env), tcp=False)
    nat = native_answer(env, data)
    got_udp = env.udp(data)
    got_slow = env.slow(data)
    if ref is not None:
        assert got_udp == ref[0]
    if nat is not None:
        assert nat == got_udp
    assert got_udp == got_slow


@SETTINGS
@given(data=packets())
def test_tcp_path_is_the_reference(env: Env, data: bytes) -> None:
    ref = fastpath.answer(data, env.clock(), taught(env), tcp=True)
    got = env.lst.fast(data, True)
    if ref is not None or env.lst.native is None:
        assert got == (ref[0] if ref is not None else None)
    nat = native_answer(env, data, tcp=True)
    if nat is not None:  # the index may hold keys the memo has not been taught (a fresh store)
        assert got == nat
    if got is not None:
        assert got == env.slow(data, "tcp")  # TCP never truncates


@SETTINGS
@given(data=st.binary(min_size=0, max_size=80) | packets().map(lambda p: p[: len(p) // 2]))
def test_reference_never_raises_on_garbage(env: Env, data: bytes) -> None:
    assert fastpath.answer(data, env.clock(), taught(env), tcp=False) is None or len(data) >= 17


def test_the_fast_path_served_the_warm_hits(env: Env) -> None:
    """A warmed lowercase query is a reference hit, and the UDP path counts it as a fast hit
    (natively answered in native mode: the worker counted it, not Python)."""
    data = query("a.cluster.local.", 1)
    assert fastpath.answer(data, env.clock(), taught(env), tcp=False) is not None
    before, py_before = fast_hits(env), sum(env.lst.stats.fast.values())
    env.udp(data)
    assert fast_hits(env) == before + 1
    if env.lst.native is not None:
        assert native_answer(env, data) is not None
        assert sum(env.lst.stats.fast.values()) == py_before
        assert env.call(env.lst.native.counters)["hits"] >= 1


# -- golden splice vectors ----------------------------------------------------------------------

LOWER = "01610665786d706c6500"  # a.exmple.
MIXED = "01410645586d706c6500"  # A.EXmple.


def upstream_a(name: str) -> bytes:
    return bytes.fromhex(
        "0000" "8180" "0001" "0001" "0000" "0000"  # id 0, QR RD RA, QD=1 AN=1
        + name + "0001" "0001"  # a.exmple. A IN, in the case the first client asked
        "c00c" "0001" "0001" "0000001e" "0004" "c6120001"  # a.exmple. 30 A 198.18.0.1
    )  # fmt: skip


GOLDEN = [
    # (stored case, query, seconds after storing, reply): client ID and question echoed, AA set,
    # RD copied, TTL counted down from the stored second, OPT echoed with the client's size and DO.
    (
        MIXED,
        "beef" "0100" "0001" "0000" "0000" "0000" + MIXED + "0001" "0001",
        0.5,
        "beef" "8580" "0001" "0001" "0000" "0000" + MIXED + "0001" "0001"
        "c00c" "0001" "0001" "0000001e" "0004" "c6120001",
    ),
    (
        LOWER,
        "0007" "0000" "0001" "0000" "0000" "0000" + LOWER + "0001" "0001",
        2.5,
        "0007" "8480" "0001" "0001" "0000" "0000" + LOWER + "0001" "0001"
        "c00c" "0001" "0001" "0000001c" "0004" "c6120001",
    ),
    (
        LOWER,
        "0102" "0100" "0001" "0000" "0000" "0001" + LOWER + "0001" "0001" "0000290200" "0000" "8000" "0000",
        1.0,
        "0102" "8580" "0001" "0001" "0000" "0001" + LOWER + "0001" "0001"
        "c00c" "0001" "0001" "0000001d" "0004" "c6120001" "0000290200" "0000" "8000" "0000",
    ),
    (
        MIXED,  # an OPT size below 512 is echoed as sent (CoreDNS SizeAndDo)
        "0103" "0100" "0001" "0000" "0000" "0001" + MIXED + "0001" "0001" "0000290064" "0000" "0000" "0000",
        1.0,
        "0103" "8580" "0001" "0001" "0000" "0001" + MIXED + "0001" "0001"
        "c00c" "0001" "0001" "0000001d" "0004" "c6120001" "0000290064" "0000" "0000" "0000",
    ),
]  # fmt: skip

# A client that writes the name in another case than stored is not spliced: the owner keeps the
# stored case, written out in full (a case-sensitive compression finds no suffix to point at).
RECASED = [
    (
        MIXED,
        "beef" "0100" "0001" "0000" "0000" "0000" + LOWER + "0001" "0001",
        "beef" "8580" "0001" "0001" "0000" "0000" + LOWER + "0001" "0001"
        + MIXED + "0001" "0001" "0000001e" "0004" "c6120001",
    ),
    (
        LOWER,
        "beef" "0100" "0001" "0000" "0000" "0000" + MIXED + "0001" "0001",
        "beef" "8580" "0001" "0001" "0000" "0000" + MIXED + "0001" "0001"
        + LOWER + "0001" "0001" "0000001e" "0004" "c6120001",
    ),
]  # fmt: skip


def _golden_entries(now: float, stored: str) -> tuple[bytes, dict[bytes, Entry]]:
    qname = bytes.fromhex(LOWER)
    up = upstream_a(stored)
    verdict = classify(up, qname, 1, CacheConfig())
    qkey = qname + b"\x00\x01\x00\x01"
    smap = {
        qkey: Entry(up, verdict, now, False, False, 1),
        fastpath.flagged(qkey, 1, 0): Entry(up, verdict, now, True, False, 1),
    }
    return qkey, smap


class _Acc(list):  # type: ignore[type-arg]
    bits = 0


def _install(env: Harness, stored: str, later: float) -> None:
    """Put the golden entries, stored ``later`` seconds ago, into the running cache and memo."""
    cache = env.lst.router.zones["."].cache
    assert cache is not None
    qkey, smap = _golden_entries(env.clock() - later, stored)
    for k, e in smap.items():  # through the store, so the native index mirrors them
        env.call(lambda k=k, e=e: cache.store.put(k, e, env.clock()))
    fastpath.remember(env.lst.router.memo, env.lst.router.routes, qkey, ".", cache.store.maps,
                      env.lst.stats.zone_acc("."), 10**6)  # fmt: skip


@pytest.mark.parametrize(("stored", "query_hex", "later", "reply_hex"), GOLDEN)
def test_golden_splices(env: Harness, stored: str, query_hex: str, later: float, reply_hex: str) -> None:
    q, expected = bytes.fromhex(query_hex), bytes.fromhex(reply_hex)
    qkey, smap = _golden_entries(1000.0, stored)
    hit = fastpath.answer(q, 1000.0 + later, {qkey: (smap, {}, 0, _Acc(), None, fastpath.NO_CAP)}, tcp=False)
    assert hit is not None and hit[0] == expected
    # The UDP thread splices the same bytes from the same entries, put in the running cache.
    _install(env, stored, later)
    assert env.udp(q) == expected
    assert env.lst.fast(q, True) == expected
    assert env.slow(q) == expected
    if env.lst.native is not None:
        assert native_answer(env, q) == expected


@pytest.mark.parametrize(("stored", "query_hex", "reply_hex"), RECASED)
def test_owner_names_keep_the_stored_case(env: Harness, stored: str, query_hex: str, reply_hex: str) -> None:
    q, expected = bytes.fromhex(query_hex), bytes.fromhex(reply_hex)
    qkey, smap = _golden_entries(1000.0, stored)
    assert fastpath.answer(q, 1000.0, {qkey: (smap, {}, 0, _Acc(), None, fastpath.NO_CAP)}, tcp=False) is None
    _install(env, stored, 0.0)
    assert env.lst.fast(q, True) is None
    assert env.udp(q) == expected
    assert env.slow(q) == expected
    assert env.slow(q, "tcp") == expected


def test_a_client_sees_the_case_the_name_was_first_asked_in(env: Harness) -> None:
    """dnspython over UDP and TCP: question as asked, owners as stored (CoreDNS item.toMsg)."""
    for name in ("c.cluster.local.", "C.CLUSTER.LOCAL.", "C.Cluster.LOCAL."):
        for via in (dns.query.udp, dns.query.tcp):
            r = via(dns.message.make_query(name, "A"), "127.0.0.1", port=env.port, timeout=3)
            assert r.question[0].name.to_text() == name
            assert [rr.name.to_text() for rr in r.answer] == ["C.Cluster.LOCAL."]
    r = dns.query.udp(
        dns.message.make_query("A.Cluster.Local.", "TXT"), "127.0.0.1", port=env.port, timeout=3
    )
    assert [rr.name.to_text() for rr in r.answer] == ["a.cluster.local."]


# -- a block with plugins ahead of the cache: loadbalance shuffles hits, bufsize lowers the size ----

LB_ZONES = {
    "cluster.local.": [
        *ZONES["cluster.local."],
        *[f"m.cluster.local. 30 IN A 198.18.1.{i}" for i in range(1, 6)],
        *[f"m.cluster.local. 30 IN AAAA fd00::1:{i}" for i in range(1, 4)],
        "c.cluster.local. 30 IN CNAME m.cluster.local.",
        *[f'm.cluster.local. 30 IN TXT "t{i}"' for i in range(3)],
    ]
}
LB_NAMES = (*NAMES, "m.cluster.local.", "c.cluster.local.")
BUFSIZE = 1100  # below big.cluster.local.'s TXT answer (~2.9 kB): the cap decides truncation


@pytest.fixture(scope="module", params=MODES)
def lb_env(request: pytest.FixtureRequest) -> Iterator[tuple[Env, ReplayRng]]:
    extra = f"    bufsize {BUFSIZE}\n    loadbalance\n"
    with serving(LB_ZONES, extra, LB_NAMES, native=request.param == "native") as e:
        rng = ReplayRng()
        block = e.lst.router.zones["."]
        (lb,) = [rt for rt in block.runtimes if rt.name == "loadbalance"]
        lb.rng = rng  # type: ignore[attr-defined]
        assert block.fast and block.transform is not None and block.udp_max == BUFSIZE
        if e.lst.native is not None:  # round_robin alone: the native index shuffles
            assert len(e.lst.native.nix.index) > 0 and block.shuffle is not None
        yield e, rng


@st.composite
def lb_packets(draw: st.DrawFn) -> tuple[bytes, int]:
    name = draw(st.sampled_from(LB_NAMES))
    if draw(st.booleans()):  # else as stored: the case the native index answers
        name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    flags = draw(st.sampled_from((0x0000, 0x0100))) | draw(st.sampled_from((0, 0x10, 0x20)))
    data = query(
        name,
        draw(st.sampled_from(TYPES)),
        qid=draw(st.integers(0, 0xFFFF)),
        flags=flags,
        edns=draw(st.booleans()),
        do=draw(st.booleans()),
        size=draw(st.sampled_from((512, 600, 1099, 1100, 1101, 1232, 4096, 65535))),
    )
    return data, draw(st.integers(0, 2**32))


@pytest.fixture(scope="module", params=MODES)
def cap_env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """bufsize alone: the native index applies the cap itself."""
    with serving(LB_ZONES, f"    bufsize {BUFSIZE}\n", LB_NAMES, native=request.param == "native") as e:
        if e.lst.native is not None:
            assert len(e.lst.native.nix.index) > 0
        yield e


@SETTINGS
@given(p=lb_packets())
def test_bufsize_block_udp_reference_native_and_slow_agree(cap_env: Env, p: tuple[bytes, int]) -> None:
    env = cap_env
    data, _seed = p
    ref = fastpath.answer(data, env.clock(), taught(env), tcp=False)
    nat = native_answer(env, data)
    got_udp = env.udp(data)
    if ref is not None:
        assert got_udp == ref[0]
    if nat is not None:
        assert nat == got_udp
    assert got_udp == env.slow(data)


@SETTINGS
@given(p=lb_packets())
def test_loadbalance_bufsize_block_udp_reference_and_slow_agree(lb_env: tuple[Env, ReplayRng],
                                                                p: tuple[bytes, int]) -> None:  # fmt: skip
    env, rng = lb_env
    data, seed = p
    nat = native_answer(env, data)
    rng.restart(seed)
    ref = fastpath.answer(data, env.clock(), taught(env), tcp=False)
    rng.restart(seed)
    got_udp = env.udp(data)
    if nat is not None:  # the native worker shuffled with its own draws
        check_native_shuffle(env, rng, data, nat, got_udp, False)
        return
    rng.restart(seed)
    got_slow = env.slow(data)
    if ref is not None:
        assert got_udp == ref[0]
    assert got_udp == got_slow


@SETTINGS
@given(p=lb_packets())
def test_loadbalance_bufsize_block_tcp_is_the_reference(lb_env: tuple[Env, ReplayRng],
                                                        p: tuple[bytes, int]) -> None:  # fmt: skip
    env, rng = lb_env
    data, seed = p
    nat = native_answer(env, data, True)
    if nat is not None:  # TCP asks the native index first
        got = env.lst.fast(data, True)
        assert got is not None
        check_native_shuffle(env, rng, data, nat, got, True)
        return
    rng.restart(seed)
    ref = fastpath.answer(data, env.clock(), taught(env), tcp=True)
    rng.restart(seed)
    got = env.lst.fast(data, True)
    assert got == (ref[0] if ref is not None else None)
    if got is not None:
        rng.restart(seed)
        assert got == env.slow(data, "tcp")


def test_loadbalance_fast_hits_are_shuffled(lb_env: tuple[Env, ReplayRng]) -> None:
    """The fast path serves the multi-address name and its order follows the draws."""
    env, rng = lb_env
    data = query("m.cluster.local.", 1)
    before = fast_hits(env)
    orders = set()
    for seed in range(12):
        rng.restart(seed)
        reply = dns.message.from_wire(env.udp(data))
        orders.add(tuple(rr.address for rrs in reply.answer for rr in rrs))
    assert fast_hits(env) == before + 12
    assert len(orders) > 3 and all(sorted(o) == [f"198.18.1.{i}" for i in range(1, 6)] for o in orders)


def test_bufsize_fast_hits_echo_and_fit_the_lowered_size(lb_env: tuple[Env, ReplayRng]) -> None:
    env, _ = lb_env
    small = dns.message.from_wire(env.udp(query("a.cluster.local.", 1, edns=True, size=4096)))
    assert small.payload == BUFSIZE  # the OPT echoes what bufsize left, not the client's 4096
    big = dns.message.from_wire(env.udp(query("big.cluster.local.", 16, edns=True, size=4096)))
    assert big.flags & dns.flags.TC and not big.answer  # 2.9 kB does not fit 1100
