"""NX: the native worker forwards index misses to plain UDP upstreams itself (Index.set_forward),
matches the replies and hands (query, reply) to Python (Worker.exchanged), which answers the
clients in one batch (Worker.send).

Real sockets on loopback only: the upstream is a real unbound, or a plain UDP socket the test
holds (to see the bytes the worker sends and to answer them as it likes); the clients are
dnspython and raw sockets. The index is empty unless a test stores a name in it.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dns.message
import dns.query
import dns.rrset
import pytest

from nodelocaldns import native
from support.upstreams import CLUSTER_ZONES, closed_port, unbound_server

pytestmark = pytest.mark.skipif(not native.native_available(), reason=native.native_status())

Result = tuple[bytes, tuple[Any, ...], bytes | None, int, float, int]


def _q(name: str, qid: int, rdtype: str = "A", **kw: Any) -> bytes:
    m = dns.message.make_query(name, rdtype, **kw)
    m.id = qid
    return m.to_wire()


def _wire(name: str) -> bytes:
    return dns.name.from_text(name).to_wire()


def _answer(query: bytes, addr: str = "192.0.2.1") -> bytes:
    """The reply an upstream sends to query (its ID, its question as sent)."""
    m = dns.message.from_wire(query)
    r = dns.message.make_response(m)
    r.answer.append(dns.rrset.from_text(m.question[0].name, 30, "IN", "A", addr))
    return r.to_wire()


class Capture:
    """A UDP socket on loopback acting as the upstream: the test reads and answers by hand."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(3)
        self.host, self.port = host, self.sock.getsockname()[1]

    def recv(self) -> tuple[bytes, tuple[Any, ...]]:
        return self.sock.recvfrom(65535)

    def quiet(self, seconds: float = 0.2) -> bool:
        """Nothing arrives for seconds."""
        self.sock.settimeout(seconds)
        try:
            self.sock.recvfrom(65535)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(3)
        return False


@pytest.fixture
def up() -> Iterator[Capture]:
    c = Capture()
    yield c
    c.sock.close()


@contextmanager
def serving(
    table: list[tuple[bytes, list[tuple[int, str, int]], int]] | None,
    *,
    timeout: float = 2.0,
    expire: float = 10.0,
    max_pending: int = 0,
    ring: int = 64,
    index: native.Index | None = None,
) -> Iterator[tuple[native.Worker, native.Index, tuple[str, int]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    ix = index if index is not None else native.new_index(16)
    ix.set_forward(table, timeout=timeout, expire=expire, max_pending=max_pending)
    worker = native.module().serve_udp(sock.fileno(), ix, batch=8, ring=ring)
    try:
        yield worker, ix, sock.getsockname()
    finally:
        worker.stop()
        sock.close()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    c.settimeout(3)
    yield c
    c.close()


def results(worker: native.Worker, n: int, wait: float = 5.0) -> list[Result]:
    """n results, collected as the Python consumer does: a wake-up, then exchanged()."""
    got: list[Result] = []
    deadline = time.monotonic() + wait
    while len(got) < n and time.monotonic() < deadline:
        worker.wait(0.1)
        got += worker.exchanged(64)
    assert len(got) == n, (got, worker.counters())
    return got


def counted(worker: native.Worker, key: str, n: int) -> dict[str, int]:
    deadline = time.monotonic() + 5
    while worker.counters()[key] < n and time.monotonic() < deadline:
        time.sleep(0.005)
    c = worker.counters()
    assert c[key] == n, c
    return c


def test_only_the_id_changes_upstream_and_the_clients_id_comes_back(
    up: Capture, client: socket.socket
) -> None:
    with serving([(b"\x00", [(7, up.host, up.port)], 0)]) as (worker, _ix, addr):
        q = _q("Example.ORG.", 0x1234, use_edns=0, payload=1232)
        client.sendto(q, addr)
        got, src = up.recv()
        assert got[2:] == q[2:] and len(got) == len(q)
        assert src[0] == "127.0.0.1" and src[1] != addr[1]  # the worker's own pooled socket
        reply = _answer(got)
        up.sock.sendto(reply, src)
        ((query, caddr, r, uid, seconds, err),) = results(worker, 1)
        assert (query, caddr, uid, err) == (q, client.getsockname(), 7, 0)
        assert r is not None and r[:2] == q[:2] and r[2:] == reply[2:]
        assert 0 < seconds < 3
        c = worker.counters()
        assert (c["nx_sent"], c["nx_replies"], c["nx_pending"], c["handed"], c["nx_mismatched"]) == (
            1,
            1,
            0,
            0,
            0,
        )
        assert worker.send([(r, caddr)]) == 0
        assert client.recv(4096) == r


def test_each_query_in_flight_gets_its_own_random_id(up: Capture, client: socket.socket) -> None:
    with serving([(b"\x00", [(1, up.host, up.port)], 0)], ring=256) as (worker, _ix, addr):
        for i in range(100):
            client.sendto(_q(f"n{i}.example.", 7), addr)
        ids = [struct.unpack("!H", up.recv()[0][:2])[0] for _ in range(100)]
        assert len(set(ids)) == 100  # unique while pending, and not the client's fixed 7 all along
        assert counted(worker, "nx_pending", 100)["nx_sent"] == 100


def test_a_real_unbound_answers_through_exchanged_and_send() -> None:
    with (
        unbound_server(CLUSTER_ZONES) as u,
        serving([(b"\x00", [(3, u.host, u.port)], 1)]) as (worker, _ix, addr),
    ):
        stop = threading.Event()

        def consume() -> None:  # the Python side: every result answered, in one send() per wake-up
            while not stop.is_set():
                if worker.wait(0.05):
                    done = worker.exchanged(64)
                    assert all(err == 0 and uid == 3 for _q, _a, _r, uid, _s, err in done)
                    assert worker.send([(r, a) for _q, a, r, _u, _s, _e in done if r is not None]) == 0

        t = threading.Thread(target=consume)
        t.start()
        try:
            for name in ("kubernetes.default.svc.cluster.local.", "KUBE-DNS.kube-system.svc.Cluster.Local."):
                q = dns.message.make_query(name, "A")
                r = dns.query.udp(q, addr[0], port=addr[1], timeout=3)
                assert r.id == q.id and r.question == q.question
                assert [rr.to_text() for rr in r.answer[0]] in (["198.18.0.1"], ["198.18.0.10"])
            r = dns.query.udp(
                dns.message.make_query("none.cluster.local.", "A"), addr[0], port=addr[1], timeout=3
            )
            assert r.rcode() == dns.rcode.NXDOMAIN
        finally:
            stop.set()
            t.join()
        c = worker.counters()
        assert (c["nx_sent"], c["nx_replies"], c["handed"], c["nx_pending"]) == (3, 3, 0, 0)
        assert u.queries()[-3:] == [q for q in u.queries()[-3:] if q.client.startswith("127.0.0.1")]


def test_what_is_no_reply_of_ours_is_dropped_and_counted(up: Capture, client: socket.socket) -> None:
    with serving([(b"\x00", [(1, up.host, up.port)], 0)]) as (worker, _ix, addr):
        q = _q("match.example.", 0x4242)
        client.sendto(q, addr)
        got, src = up.recv()
        good = _answer(got)
        qend = 12 + len(_wire("match.example.")) + 4
        bad = [
            struct.pack("!H", (struct.unpack("!H", good[:2])[0] + 1) & 0xFFFF) + good[2:],  # another ID
            good[:2] + _answer(_q("matcx.example.", 0))[2:],  # another name
            good[: qend - 4] + b"\x00\x1c" + good[qend - 2 :],  # another type
            good[: qend - 2] + b"\x00\x03" + good[qend:],  # another class
            good[:2] + bytes([good[2] & 0x7F]) + good[3:],  # QR clear
            good[:2] + good[2:4] + b"\x00\x02" + good[6:],  # two questions
            good[:11],  # shorter than a header
            good[:20],  # cut inside the question
        ]
        assert len({b[2:] for b in bad}) == len(bad)
        for b in bad:
            up.sock.sendto(b, src)
        counted(worker, "nx_mismatched", len(bad))
        assert worker.exchanged() == []
        # From the wrong source (another port) with the right ID: the connected socket never sees it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoof:
            spoof.sendto(good, src)
        time.sleep(0.05)
        assert worker.exchanged() == [] and worker.counters()["nx_pending"] == 1
        up.sock.sendto(good, src)
        ((_q2, _a, r, _u, _s, err),) = results(worker, 1)
        assert err == 0 and r is not None and r[2:] == good[2:]
        up.sock.sendto(good, src)  # a duplicate: no longer pending
        counted(worker, "nx_mismatched", len(bad) + 1)


def test_a_reply_matches_whatever_the_case_of_its_name(up: Capture, client: socket.socket) -> None:
    with serving([(b"\x00", [(1, up.host, up.port)], 0)]) as (worker, _ix, addr):
        client.sendto(_q("MiXed.Example.", 9), addr)
        got, src = up.recv()
        up.sock.sendto(got[:2] + bytes([got[2] | 0x80]) + got[3:12] + got[12:].lower(), src)
        ((_q2, _a, r, _u, _s, err),) = results(worker, 1)
        assert err == 0 and r is not None and r[:2] == b"\x00\x09"


def test_no_reply_is_etimedout_after_the_timeout(up: Capture, client: socket.socket) -> None:
    with serving([(b"\x00", [(5, up.host, up.port)], 0)], timeout=0.3) as (worker, _ix, addr):
        q = _q("slow.example.", 77)
        t0 = time.monotonic()
        client.sendto(q, addr)
        got, src = up.recv()
        ((query, _a, r, uid, seconds, err),) = results(worker, 1)
        waited = time.monotonic() - t0
        assert (query, r, uid, err) == (q, None, 5, errno.ETIMEDOUT)
        assert 0.3 <= seconds < 1.5 and waited >= 0.3
        up.sock.sendto(_answer(got), src)  # too late: dropped
        c = counted(worker, "nx_mismatched", 1)
        assert (c["nx_timeouts"], c["nx_replies"], c["nx_pending"]) == (1, 0, 0)


def test_a_closed_port_is_econnrefused(client: socket.socket) -> None:
    dead = closed_port()
    with serving([(b"\x00", [(2, dead.host, dead.port)], 0)], timeout=5.0) as (worker, _ix, addr):
        client.sendto(_q("refused.example.", 1), addr)
        ((_q1, _a, r, uid, seconds, err),) = results(worker, 1, wait=3)
        assert (r, uid, err) == (None, 2, errno.ECONNREFUSED) and seconds < 3
        assert worker.counters()["nx_errors"] == 1
        client.sendto(_q("again.example.", 2), addr)  # a new socket; refused again
        assert results(worker, 1, wait=3)[0][5] == errno.ECONNREFUSED
