"""The worker's miss ring: small slots for queries, a copy of its own for a longer datagram.

Real sockets on 127.0.0.1. Every datagram the index does not answer reaches Python byte for byte
and in order, whatever its length (up to the 4097-byte receive buffer); the ring's resident
memory, once misses have cycled through every slot, is what the slots hold, not 4 KB each.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from nodelocaldns import native

pytestmark = pytest.mark.skipif(not native.native_available(), reason=native.native_status())


def _query(i: int, length: int = 0) -> bytes:
    """A query for q<i>.example. (a miss: the index is empty); length > 0: padded (an OPT with a
    padding option) to exactly that many bytes."""
    label = b"q" + str(i).encode()
    q = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 1 if length else 0)
    q += bytes([len(label)]) + label + b"\x07example\x00\x00\x01\x00\x01"
    if not length:
        return q
    pad = length - len(q) - 15
    return q + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00" + struct.pack("!HHH", pad + 4, 12, pad) + bytes(pad)


def _wait_handed(worker: native.Worker, n: int) -> None:
    deadline = time.monotonic() + 5
    while worker.counters()["handed"] < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert worker.counters()["handed"] >= n, worker.counters()


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.fixture
def sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s  # type: ignore[misc]
    s.close()


def test_every_length_reaches_python_whole_and_in_order(sock: socket.socket) -> None:
    worker = native.module().serve_udp(sock.fileno(), native.new_index(4), batch=4, ring=8)
    sizes = [0, 512, 513, 1000, 4097, 5000, 300]  # around the 512-byte slot, the buffer and past it
    sent: list[bytes] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.bind(("127.0.0.1", 0))
            for rnd in range(4):  # the ring of 8 cycled several times, big and small in every slot
                batch = [_query(rnd * 10 + k, n) for k, n in enumerate(sizes[rnd % 3 :][:5])]
                for q in batch:
                    c.sendto(q, sock.getsockname())
                sent += batch
                _wait_handed(worker, len(sent))
                got = worker.drain()
                # A datagram longer than the receive buffer reaches Python cut at 4097 bytes.
                assert [d for d, _a in got] == [q[: native.module().UDP_BUF] for q in batch]
                assert all(a == c.getsockname() for _d, a in got)
            assert {512, 513, 4097, 5000} <= {len(q) for q in sent}
            # Big copies left in the ring when the worker stops are freed with it.
            for k, n in enumerate(sizes[:5]):
                c.sendto(_query(100 + k, n), sock.getsockname())
            _wait_handed(worker, len(sent) + 5)
        c2 = worker.counters()
        assert (c2["refused"], c2["dropped"]) == (0, 0)
    finally:
        worker.stop()


def test_a_cycled_ring_keeps_little_resident(sock: socket.socket) -> None:
    ring = 1024  # 4 MiB resident at 4 KB a slot, 0.6 MiB at the real slot size
    before = _rss_kib()
    worker = native.module().serve_udp(sock.fileno(), native.new_index(4), batch=32, ring=ring)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.bind(("127.0.0.1", 0))
            handed = 0
            while handed < 2 * ring:  # every slot written (at most 3/4 of the ring waits at once)
                for i in range(64):
                    c.sendto(_query(handed + i), sock.getsockname())
                handed += 64
                _wait_handed(worker, handed)
                assert len(worker.drain(ring)) == 64
        grown = _rss_kib() - before
        assert grown < 2048, f"{grown} KiB resident for a ring of {ring}"
    finally:
        worker.stop()
