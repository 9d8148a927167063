"""DNS over TCP (RFC 7766): pipelining, framing abuse, timeouts and the connection cap."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import dns.message
import dns.rcode
import pytest

from support.server import Served, serve
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
ZONES = {"cluster.local.": [f"s{i}.cluster.local. 30 IN A 198.18.0.{i}" for i in range(1, 20)]}
IDLE, READ = 10.0, 3.0  # the listener's TCP idle and read timeouts (CoreDNS: 10 s and 3 s)
MAX_CONNS = 1024


@pytest.fixture
def server(make_unbound: MakeUnbound) -> Iterator[Served]:
    up = make_unbound(ZONES)
    with serve(f".:{{PORT}} {{\n    bind 127.0.0.1\n    cache 30\n    forward . {up.address}\n}}\n") as s:
        yield s


def connect(port: int, timeout: float = 3.0) -> socket.socket:
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def frame(m: dns.message.Message) -> bytes:
    w = m.to_wire()
    return struct.pack("!H", len(w)) + w


def read_exact(c: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_msg(c: socket.socket) -> dns.message.Message:
    (n,) = struct.unpack("!H", read_exact(c, 2))
    return dns.message.from_wire(read_exact(c, n))


def closed_within(c: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer closes ``c`` (EOF or reset), or None if still open after ``seconds``."""
    t0 = time.monotonic()
    c.settimeout(seconds)
    try:
        while c.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


def test_pipelined_queries_on_one_connection_are_all_answered(server: Served) -> None:
    warm = dns.message.make_query("s1.cluster.local.", "A")
    with connect(server.port) as c:
        c.sendall(frame(warm))
        assert read_msg(c).answer  # s1 is now cached: the batch mixes hits and misses
        queries = [dns.message.make_query(f"s{i}.cluster.local.", "A") for i in range(1, 16)]
        queries.append(dns.message.make_query("nope.cluster.local.", "A"))
        c.sendall(b"".join(frame(q) for q in queries))  # one write, 16 queries
        replies = {}
        for _ in queries:
            r = read_msg(c)
            replies[r.id] = r
        for q in queries:
            r = replies[q.id]
            assert r.question == q.question
        assert sum(1 for r in replies.values() if r.answer) == 15
        # The connection is still good afterwards.
        c.sendall(frame(warm))
        assert read_msg(c).answer


def test_frames_split_across_writes_and_empty_frames(server: Served) -> None:
    q = dns.message.make_query("s2.cluster.local.", "A")
    data = frame(q)
    with connect(server.port) as c:
        for b in data:  # one byte per segment
            c.send(bytes([b]))
            time.sleep(0.002)
        assert read_msg(c).id == q.id
        # A zero-length frame and a short garbage frame get no reply and do not kill the connection.
        c.sendall(b"\x00\x00" + b"\x00\x05abcde" + frame(q))
        assert read_msg(c).id == q.id


def test_malformed_query_over_tcp_gets_formerr(server: Served) -> None:
    bad = struct.pack("!HHHHHH", 0x7777, 0x0100, 2, 0, 0, 0)
    with connect(server.port) as c:
        c.sendall(struct.pack("!H", len(bad)) + bad)
        r = read_msg(c)
        assert r.id == 0x7777 and r.rcode() == dns.rcode.FORMERR


def test_client_gone_before_the_reply_does_not_hurt(server: Served) -> None:
    for i in range(20):
        c = connect(server.port)
        c.sendall(frame(dns.message.make_query(f"s{i % 19 + 1}.cluster.local.", "A")))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # RST
    assert server.query("s3.cluster.local.", tcp=True).answer
    assert server.proc.poll() is None


@pytest.mark.slow
def test_idle_and_half_sent_connections_are_closed(server: Served) -> None:
    idle = connect(server.port)
    used = connect(server.port)
    half = connect(server.port)
    try:
        used.sendall(frame(dns.message.make_query("s4.cluster.local.", "A")))
        assert read_msg(used).answer
        data = frame(dns.message.make_query("s5.cluster.local.", "A"))
        half.sendall(data[:7])  # length prefix and part of the header, then nothing
        results: dict[str, float | None] = {}

        def watch(name: str, c: socket.socket) -> None:
            results[name] = closed_within(c, IDLE + 3)

        threads = [
            threading.Thread(target=watch, args=a) for a in (("idle", idle), ("used", used), ("half", half))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IDLE + 5)
    finally:
        for c in (idle, used, half):
            c.close()
    half_t, idle_t, used_t = results["half"], results["idle"], results["used"]
    assert half_t is not None and READ - 0.5 <= half_t <= READ + 1.5
    assert idle_t is not None and IDLE - 0.5 <= idle_t <= IDLE + 1.5
    assert used_t is not None and IDLE - 0.5 <= used_t <= IDLE + 1.5


def test_connection_cap(server: Served) -> None:
    conns: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNS):
            conns.append(connect(server.port))
        q = dns.message.make_query("s6.cluster.local.", "A")
        conns[-1].sendall(frame(q))
        assert read_msg(conns[-1]).answer  # the last one admitted works
        extra = connect(server.port)  # the kernel accepts it; the server drops it at once
        conns.append(extra)
        extra.sendall(frame(q))
        with pytest.raises((EOFError, ConnectionResetError)):
            extra.settimeout(3)
            read_msg(extra)
        for c in conns[:10]:
            c.close()
        time.sleep(0.2)
        again = connect(server.port)
        conns.append(again)
        again.sendall(frame(q))
        assert read_msg(again).answer  # room again once others left
        assert server.query("s6.cluster.local.").answer  # UDP never affected
    finally:
        for c in conns:
            c.close()


def test_a_burst_of_new_connections_is_not_dropped(server: Served) -> None:
    # A listen backlog of 100 (asyncio's default) dropped SYNs in a burst: 1 s retransmits.
    conns: list[socket.socket] = []
    worst = 0.0
    try:
        for _ in range(400):
            t0 = time.monotonic()
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conns.append(c)
            c.connect(("127.0.0.1", server.port))
            worst = max(worst, time.monotonic() - t0)
    finally:
        for c in conns:
            c.close()
    assert worst < 0.9, f"a connect took {worst:.2f} s: SYN dropped by a full backlog"
