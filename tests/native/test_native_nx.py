"""NX: the native worker forwards index misses to plain UDP upstreams itself (Index.set_forward),
matches the replies and hands (query, reply) to Python (Worker.exchanged), which answers the
clients in one batch (Worker.send).

Real sockets on loopback only: the upstream is a real unbound, or a plain UDP socket the test
holds (to see the bytes the worker sends and to answer them as it likes); the clients are
dnspython and raw sockets. The index is empty unless a test stores a name in it.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rrset
import pytest

from nodelocaldns import native
from support.nx import Capture, answer_to, counted, query, results, serving, wire_name
from support.upstreams import CLUSTER_ZONES, closed_port, unbound_server

pytestmark = pytest.mark.skipif(not native.native_available(), reason=native.native_status())


@pytest.fixture
def up() -> Iterator[Capture]:
    c = Capture()
    yield c
    c.sock.close()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    c.settimeout(3)
    yield c
    c.close()


def test_only_the_id_changes_upstream_and_the_clients_id_comes_back(
    up: Capture, client: socket.socket
) -> None:
    with serving([(b"\x00", [(7, up.host, up.port)], 0)]) as (worker, _ix, addr):
        q = query("Example.ORG.", 0x1234, use_edns=0, payload=1232)
        client.sendto(q, addr)
        got, src = up.recv()
        assert got[2:] == q[2:] and len(got) == len(q)
        assert src[0] == "127.0.0.1" and src[1] != addr[1]  # the worker's own pooled socket
        reply = answer_to(got)
        up.sock.sendto(reply, src)
        ((sent_q, caddr, r, uid, seconds, err),) = results(worker, 1)
        assert (sent_q, caddr, uid, err) == (q, client.getsockname(), 7, 0)
        assert r is not None and r[:2] == q[:2] and r[2:] == reply[2:]
        # the worker stamps a batch once: a reply read in the batch that sent it is 0.0 s
        assert 0 <= seconds < 3
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
            client.sendto(query(f"n{i}.example.", 7), addr)
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
        asked = [
            "kubernetes.default.svc.cluster.local.",
            "kube-dns.kube-system.svc.cluster.local.",
            "none.cluster.local.",
        ]
        assert [(q.name.lower(), q.qtype) for q in u.queries()] == [(n, "A") for n in asked]  # once each


def test_what_is_no_reply_of_ours_is_dropped_and_counted(up: Capture, client: socket.socket) -> None:
    with serving([(b"\x00", [(1, up.host, up.port)], 0)]) as (worker, _ix, addr):
        q = query("match.example.", 0x4242)
        client.sendto(q, addr)
        got, src = up.recv()
        good = answer_to(got)
        qend = 12 + len(wire_name("match.example.")) + 4
        bad = [
            struct.pack("!H", (struct.unpack("!H", good[:2])[0] + 1) & 0xFFFF) + good[2:],  # another ID
            good[:2] + answer_to(query("matcx.example.", 0))[2:],  # another name
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
        client.sendto(query("MiXed.Example.", 9), addr)
        got, src = up.recv()
        up.sock.sendto(got[:2] + bytes([got[2] | 0x80]) + got[3:12] + got[12:].lower(), src)
        ((_q2, _a, r, _u, _s, err),) = results(worker, 1)
        assert err == 0 and r is not None and r[:2] == b"\x00\x09"


def test_no_reply_is_etimedout_after_the_timeout(up: Capture, client: socket.socket) -> None:
    with serving([(b"\x00", [(5, up.host, up.port)], 0)], timeout=0.3) as (worker, _ix, addr):
        q = query("slow.example.", 77)
        t0 = time.monotonic()
        client.sendto(q, addr)
        got, src = up.recv()
        ((sent_q, _a, r, uid, seconds, err),) = results(worker, 1)
        waited = time.monotonic() - t0
        assert (sent_q, r, uid, err) == (q, None, 5, errno.ETIMEDOUT)
        assert 0.3 <= seconds < 1.5 and waited >= 0.3
        up.sock.sendto(answer_to(got), src)  # too late: dropped
        c = counted(worker, "nx_mismatched", 1)
        assert (c["nx_timeouts"], c["nx_replies"], c["nx_pending"]) == (1, 0, 0)


def test_a_closed_port_is_econnrefused(client: socket.socket) -> None:
    dead = closed_port()
    with serving([(b"\x00", [(2, dead.host, dead.port)], 0)], timeout=5.0) as (worker, _ix, addr):
        client.sendto(query("refused.example.", 1), addr)
        ((_q1, _a, r, uid, seconds, err),) = results(worker, 1, wait=3)
        assert (r, uid, err) == (None, 2, errno.ECONNREFUSED) and seconds < 3
        assert worker.counters()["nx_errors"] == 1
        client.sendto(query("again.example.", 2), addr)  # a new socket; refused again
        assert results(worker, 1, wait=3)[0][5] == errno.ECONNREFUSED


def test_results_wake_the_same_eventfd_as_misses(up: Capture, client: socket.socket) -> None:
    table = [(b"\x00", [(1, up.host, up.port)], 0), (wire_name("local."), [], 0)]
    with serving(table) as (worker, _ix, addr):
        fd = worker.fileno()
        assert select.select([fd], [], [], 0.05)[0] == []
        client.sendto(query("up.example.", 1), addr)
        got, src = up.recv()
        up.sock.sendto(answer_to(got), src)
        assert select.select([fd], [], [], 3)[0] == [fd]  # a result alone wakes the consumer
        assert len(worker.exchanged()) == 1
        assert select.select([fd], [], [], 0.05)[0] == []  # re-armed, nothing left
        client.sendto(query("x.local.", 2), addr)  # a miss (no upstreams there) ...
        client.sendto(query("up2.example.", 3), addr)  # ... and a result, one wake-up for both
        got, src = up.recv()
        up.sock.sendto(answer_to(got), src)
        counted(worker, "nx_replies", 2)
        assert select.select([fd], [], [], 3)[0] == [fd]
        assert [d for d, _a in worker.drain()] == [query("x.local.", 2)]
        assert select.select([fd], [], [], 0.05)[0] == [fd]  # drain() re-arms, but a result still waits
        assert len(worker.exchanged()) == 1
        assert select.select([fd], [], [], 0.05)[0] == []


def test_drain_and_exchanged_batch_by_max_alike(up: Capture, client: socket.socket) -> None:
    # Both read max (positional or keyword, 64 by default) the same way: a batch holds at most max,
    # the rest waits, in order, for the next call; a max that is not a number is a TypeError.
    table = [(b"\x00", [(1, up.host, up.port)], 0), (wire_name("local."), [], 0)]
    with serving(table) as (worker, _ix, addr):
        misses = [query(f"m{i}.local.", 10 + i) for i in range(3)]
        for q in misses:
            client.sendto(q, addr)
        counted(worker, "handed", 3)
        assert [d for d, _a in worker.drain(max=2)] == misses[:2]
        assert [d for d, _a in worker.drain(2)] == misses[2:]
        sent = [query(f"x{i}.example.", 20 + i) for i in range(3)]
        for n, q in enumerate(sent, 1):  # one at a time: the results come back in this order
            client.sendto(q, addr)
            got, src = up.recv()
            up.sock.sendto(answer_to(got), src)
            counted(worker, "nx_replies", n)
        assert [r[0] for r in worker.exchanged(max=2)] == sent[:2]
        assert [r[0] for r in worker.exchanged()] == sent[2:]
        for method in (worker.drain, worker.exchanged):
            with pytest.raises(TypeError):
                method(max="2")
            with pytest.raises(TypeError):
                method(limit=2)
