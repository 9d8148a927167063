"""NX: which misses the worker forwards and where (routing, limits, the table's life), and what
stays on the old path (the miss ring, drain()). Real sockets on loopback only: the upstreams are
UDP sockets the test holds (see test_native_nx.py), the clients raw sockets.
"""

from __future__ import annotations

import errno
import socket
import struct
import time

import dns.message
import pytest

from nodelocaldns import native
from support.nx import Capture, answer_to, counted, query, results, serving, wire_name

pytestmark = pytest.mark.skipif(not native.native_available(), reason=native.native_status())

HEADS = bytes([0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]) * 8  # any heads: the entry is only ever expired


@pytest.fixture
def ups() -> list[Capture]:
    caps = [Capture() for _ in range(3)]
    yield caps  # type: ignore[misc]
    for c in caps:
        c.sock.close()


@pytest.fixture
def client() -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    c.settimeout(3)
    yield c  # type: ignore[misc]
    c.close()


def _drained(worker: native.Worker, n: int) -> list[bytes]:
    """The next n misses handed to Python, as its consumer reads them."""
    got: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(got) < n and time.monotonic() < deadline:
        worker.wait(0.05)
        got += [d for d, _a in worker.drain(256)]
    assert len(got) == n, (got, worker.counters())
    return got


def _padded(name: str, qid: int, length: int) -> bytes:
    """A plain query with one OPT (a padding option) of exactly length bytes."""
    q = query(name, qid)
    pad = length - len(q) - 15
    return (
        q[:11]
        + b"\x01"
        + q[12:]
        + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00"
        + struct.pack("!HHH", pad + 4, 12, pad)
        + bytes(pad)
    )


def test_what_is_not_exchanged_goes_to_the_miss_ring(ups: list[Capture], client: socket.socket) -> None:
    a = ups[0]
    table = [(b"\x00", [(1, a.host, a.port)], 0), (wire_name("local."), [], 0)]
    ix = native.new_index(16)
    assert ix.insert(b"\x05known\x07example\x00\x00\x01\x00\x01", HEADS, b"", (), 1.0, 1)  # expired long ago
    with serving(table, index=ix) as (worker, _ix, addr):
        other = [
            query("x.local.", 1),  # its zone has no upstreams
            query("Sub.LOCAL.", 2),
            query("known.example.", 3),  # the index holds it (expired): serve_stale and friends are Python's
            _padded("big.example.", 4, 513),  # over 512 bytes
            query("two.example.", 5)[:5]
            + b"\x02"
            + query("two.example.", 5)[6:]
            + query("two.example.", 5)[12:],
            query("notify.example.", 6)[:2] + b"\x20\x00" + query("notify.example.", 6)[4:],  # opcode NOTIFY
            query("resp.example.", 7)[:2] + b"\x81\x00" + query("resp.example.", 7)[4:],  # QR set
            query("junk.example.", 8) + b"junk",
        ]
        for q in other:
            client.sendto(q, addr)
        assert _drained(worker, len(other)) == other
        assert a.quiet() and worker.counters()["nx_sent"] == 0
        fits = _padded("fits.example.", 9, 512)  # exactly 512: forwarded
        client.sendto(fits, addr)
        got, _src = a.recv()
        assert got[2:] == fits[2:]
        worker.shed(True)  # Python's queue is full: a new name gets REFUSED here, never forwarded
        client.sendto(query("shed.example.", 10), addr)
        assert dns.message.from_wire(client.recv(512)).rcode() == dns.rcode.REFUSED
        assert a.quiet(0.1) and worker.counters()["nx_sent"] == 1


def test_routing_by_longest_suffix_with_the_ds_rule(ups: list[Capture], client: socket.socket) -> None:
    root, org, sub = ups
    table = [
        (b"\x00", [(10, root.host, root.port)], 2),
        (wire_name("example.org."), [(20, org.host, org.port)], 2),
        (wire_name("deep.example.org."), [(30, sub.host, sub.port)], 2),
        (wire_name("none.example.org."), [], 2),
    ]
    cases = [
        ("www.example.org.", "A", org),
        ("WWW.Example.ORG.", "AAAA", org),
        ("example.org.", "A", org),
        ("example.org.", "DS", root),  # DS: the parent side of the cut
        ("deep.example.org.", "DS", org),
        ("x.deep.example.org.", "DS", sub),  # not the zone's own name: the zone itself
        ("a.b.deep.example.org.", "A", sub),
        ("notexample.org.", "A", root),  # a label boundary, not a string suffix
        ("other.net.", "A", root),
        (".", "DS", root),  # the root has no parent: its own zone
    ]
    with serving(table) as (worker, _ix, addr):
        for i, (name, rdtype, want) in enumerate(cases):
            q = query(name, i, rdtype)
            client.sendto(q, addr)
            got, src = want.recv()
            assert got[2:] == q[2:], name
            want.sock.sendto(answer_to(got), src)
            ((_q2, _a, r, uid, _s, err),) = results(worker, 1)
            assert err == 0 and uid == {root: 10, org: 20, sub: 30}[want] and r is not None and r[:2] == q[:2]
        client.sendto(query("x.none.example.org.", 99), addr)  # the longest suffix has no upstreams: Python
        assert _drained(worker, 1) == [query("x.none.example.org.", 99)]
        assert all(c.quiet(0.05) for c in ups)


def test_policies_pick_upstreams(ups: list[Capture], client: socket.socket) -> None:
    listed = [(i, c.host, c.port) for i, c in enumerate(ups)]
    for policy, want in ((1, [0, 1, 2, 0, 1, 2]), (2, [0] * 6)):
        with serving([(b"\x00", listed, policy)]) as (worker, _ix, addr):
            seen = []
            for i in range(6):
                client.sendto(query(f"p{i}.example.", i), addr)
                deadline = time.monotonic() + 3
                while worker.counters()["nx_sent"] < i + 1 and time.monotonic() < deadline:
                    time.sleep(0.005)
            for c in ups:
                while not c.quiet(0.05):
                    seen.append(ups.index(c))
            assert sorted(seen) == sorted(want)
            if policy == 1:
                assert sorted(seen) == [0, 0, 1, 1, 2, 2]
    with serving([(b"\x00", listed, 0)], ring=128) as (worker, _ix, addr):  # random: all of them, in time
        for i in range(60):
            client.sendto(query(f"r{i}.example.", i), addr)
        counted(worker, "nx_sent", 60)
        assert all(not c.quiet(0.05) for c in ups)


def test_max_pending_and_the_result_ring_bound_what_is_in_flight(
    ups: list[Capture], client: socket.socket
) -> None:
    a = ups[0]
    with serving([(b"\x00", [(1, a.host, a.port)], 0)], max_pending=2) as (worker, _ix, addr):
        qs = [query(f"m{i}.example.", i) for i in range(5)]
        for q in qs:
            client.sendto(q, addr)
        assert _drained(worker, 3) == qs[2:]
        assert worker.counters()["nx_pending"] == 2
    # ring=4: at most 4 in flight or waiting in exchanged(); the miss ring takes 3 new names.
    with serving([(b"\x00", [(1, a.host, a.port)], 0)], ring=4, timeout=0.2) as (worker, _ix, addr):
        qs = [query(f"r{i}.example.", i) for i in range(6)]
        for q in qs:
            client.sendto(q, addr)
        assert _drained(worker, 2) == qs[4:]
        counted(worker, "nx_timeouts", 4)  # four results wait undrained: nothing more is taken
        client.sendto(query("later.example.", 9), addr)
        assert _drained(worker, 1) == [query("later.example.", 9)]
        assert [e for *_x, e in worker.exchanged()] == [errno.ETIMEDOUT] * 4
        client.sendto(query("room.example.", 10), addr)
        counted(worker, "nx_sent", 5)


def test_expire_rotates_the_upstream_socket(ups: list[Capture], client: socket.socket) -> None:
    a = ups[0]
    with serving([(b"\x00", [(1, a.host, a.port)], 0)], expire=0.3) as (worker, _ix, addr):
        ports = []
        for i, pause in enumerate((0.0, 0.0, 0.4, 0.0)):
            time.sleep(pause)
            client.sendto(query(f"e{i}.example.", i), addr)
            got, src = a.recv()
            ports.append(src[1])
            if i == 2:
                held = (got, src)  # left pending across the next rotation check
                continue
            a.sock.sendto(answer_to(got), src)
            results(worker, 1)
        assert ports[0] == ports[1] != ports[2] == ports[3]
        time.sleep(0.4)  # the socket of query 2 is too old for new queries, but query 2 still gets its reply
        client.sendto(query("e4.example.", 4), addr)
        _got4, src4 = a.recv()
        assert src4[1] != ports[2]
        a.sock.sendto(answer_to(held[0]), held[1])
        ((q2, _a, r, _u, _s, err),) = results(worker, 1)
        assert err == 0 and r is not None and q2 == query("e2.example.", 2)


def test_expire_zero_gives_every_query_its_own_socket(ups: list[Capture], client: socket.socket) -> None:
    a = ups[0]
    with serving([(b"\x00", [(1, a.host, a.port)], 0)], expire=0.0) as (worker, _ix, addr):
        for i in range(3):
            client.sendto(query(f"z{i}.example.", i), addr)
        held = [a.recv() for _ in range(3)]
        assert len({src for _got, src in held}) == 3
        for got, src in reversed(held):
            a.sock.sendto(answer_to(got), src)
        assert sorted(q for q, _a, _r, _u, _s, e in results(worker, 3) if e == 0) == sorted(
            query(f"z{i}.example.", i) for i in range(3)
        )


def test_a_new_table_takes_effect_while_queries_finish(ups: list[Capture], client: socket.socket) -> None:
    a, b, _c = ups
    with serving([(b"\x00", [(1, a.host, a.port)], 0)]) as (worker, ix, addr):
        client.sendto(query("old.example.", 1), addr)
        got, src = a.recv()
        ix.set_forward([(b"\x00", [(2, b.host, b.port)], 0)], timeout=2.0, expire=10.0, max_pending=0)
        client.sendto(query("new.example.", 2), addr)
        got2, src2 = b.recv()
        assert got2[2:] == query("new.example.", 2)[2:]
        a.sock.sendto(answer_to(got), src)  # in flight on a retired socket: still matched
        b.sock.sendto(answer_to(got2), src2)
        assert sorted((uid, e) for _q2, _a, _r, uid, _s, e in results(worker, 2)) == [(1, 0), (2, 0)]
        ix.set_forward(None, timeout=2.0, expire=10.0, max_pending=0)
        client.sendto(query("off.example.", 3), addr)
        assert _drained(worker, 1) == [query("off.example.", 3)]
        ix.set_forward([], timeout=2.0, expire=10.0, max_pending=0)  # empty: off too
        client.sendto(query("off2.example.", 4), addr)
        assert _drained(worker, 1) == [query("off2.example.", 4)]
        assert worker.counters()["nx_sent"] == 2


def test_stop_with_queries_pending_and_results_undrained(ups: list[Capture], client: socket.socket) -> None:
    a = ups[0]
    with serving([(b"\x00", [(1, a.host, a.port)], 0)]) as (worker, _ix, addr):
        for i in range(6):
            client.sendto(query(f"s{i}.example.", i), addr)
        sent = [a.recv() for _ in range(6)]
        for got, src in sent[:3]:
            a.sock.sendto(answer_to(got), src)
        counted(worker, "nx_replies", 3)
        worker.stop()  # three results undrained; the three in flight become ECANCELED results
        assert not worker.running and worker.counters()["nx_pending"] == 0
        got = worker.exchanged(64)
        assert [(r is not None, err) for _q, _a, r, _u, _s, err in got] == [(True, 0)] * 3 + [
            (False, errno.ECANCELED)
        ] * 3
        assert sorted(q[2:] for q, *_ in got[3:]) == sorted(
            query(f"s{i}.example.", i)[2:] for i in range(3, 6)
        )
        c = worker.counters()
        assert c["nx_errors"] == 0 and c["nx_timeouts"] == 0  # a cancel is no failed exchange


def test_an_ipv6_upstream_on_the_loopback(client: socket.socket) -> None:
    up6 = Capture("::1")
    try:
        with serving([(b"\x00", [(6, "::1", up6.port)], 0)]) as (worker, _ix, addr):
            q = query("six.example.", 66)
            client.sendto(q, addr)
            got, src = up6.recv()
            assert got[2:] == q[2:] and src[0] == "::1"
            up6.sock.sendto(answer_to(got), src)
            ((_q2, _a, r, uid, _s, err),) = results(worker, 1)
            assert (uid, err) == (6, 0) and r is not None and r[:2] == q[:2]
    finally:
        up6.sock.close()


def test_a_client_on_ipv6_gets_its_address_back_for_send(ups: list[Capture]) -> None:
    a = ups[0]
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    ix = native.new_index(4)
    ix.set_forward([(b"\x00", [(4, a.host, a.port)], 0)], timeout=2.0, expire=10.0, max_pending=0)
    worker = native.module().serve_udp(sock.fileno(), ix, batch=8, ring=16)
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
            c.bind(("::1", 0))
            c.settimeout(3)
            q = query("v6client.example.", 0x66)
            c.sendto(q, sock.getsockname()[:2])
            got, src = a.recv()
            a.sock.sendto(answer_to(got), src)
            ((q2, caddr, r, uid, _s, err),) = results(worker, 1)
            assert (q2, uid, err) == (q, 4, 0) and caddr[:2] == c.getsockname()[:2] and len(caddr) == 4
            assert r is not None and worker.send([(r, caddr)]) == 0
            assert c.recv(4096) == r
    finally:
        worker.stop()
        sock.close()


@pytest.mark.parametrize(
    "row",
    [
        (b"\x03org", [], 0),  # no root label
        (b"\x03org\x00\x00", [], 0),  # bytes after it
        (b"\x00", [(1, "not-an-ip", 53)], 0),
        (b"\x00", [(1, "127.0.0.1", 0)], 0),
        (b"\x00", [(70000, "127.0.0.1", 53)], 0),
        (b"\x00", [(1, "127.0.0.1", 53)], 3),
        (b"\x00", [("1", "127.0.0.1", 53)], 0),
    ],
)
def test_a_bad_row_is_a_value_error(row: tuple[bytes, list[tuple[int, str, int]], int]) -> None:
    ix = native.new_index(4)
    with pytest.raises((ValueError, TypeError)):
        ix.set_forward([row], timeout=2.0, expire=10.0, max_pending=0)


def test_send_counts_what_it_could_not_send(client: socket.socket) -> None:
    with serving(None) as (worker, _ix, _addr):
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind(("127.0.0.1", 0))
        try:
            assert worker.send([(b"one", client.getsockname()), (b"two", other.getsockname())]) == 0
            assert (client.recv(64), other.recv(64)) == (b"one", b"two")
            assert worker.send([(b"x", ("127.0.0.1", 0)), (b"three", client.getsockname())]) == 1
            assert client.recv(64) == b"three" and worker.counters()["send_errors"] == 1
            with pytest.raises(ValueError):
                worker.send([(b"x", ("nowhere", 53))])
        finally:
            other.close()
