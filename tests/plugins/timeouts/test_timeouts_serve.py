"""timeouts, debug, pprof and trace wired: a real ``nodelocaldns serve``, real TCP clients, a real
unbound upstream (and a misbehaving UDP socket for debug's hexdump)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import dns.message
import dns.rcode

from support.server import serve
from support.upstreams import CLUSTER_ZONES, UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]
NAME = "kubernetes.default.svc.cluster.local."


def corefile(upstream: str, extra: str = "", more: str = "") -> str:
    return f".:{{PORT}} {{\n    bind 127.0.0.1\n    {extra}\n    forward . {upstream}\n}}\n{more}"


def closed_after(port: int, send: bytes, within: float) -> float | None:
    """Seconds until the server closes a TCP connection we sent ``send`` on (None: still open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=within) as c:
        t0 = time.monotonic()
        c.sendall(send)
        try:
            while c.recv(4096):
                pass
        except TimeoutError:
            return None
        return time.monotonic() - t0


def frame(name: str, qid: int) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = qid
    w = q.to_wire()
    return struct.pack("!H", len(w)) + w


def test_idle_and_read_timeouts_apply_to_the_tcp_listener(make_unbound: MakeUnbound) -> None:
    up = make_unbound(CLUSTER_ZONES)
    with serve(corefile(up.address, "timeouts {\n        idle 1s\n        read 1s\n    }")) as s:
        idle = closed_after(s.port, b"", 4)
        assert idle is not None and 0.8 < idle < 2.5
        half = closed_after(s.port, b"\x00", 4)  # half a length prefix: the read timeout
        assert half is not None and 0.8 < half < 2.5
    with serve(corefile(up.address)) as s:
        assert closed_after(s.port, b"", 2) is None  # the default idle timeout is longer


def test_maxtcpqueries_closes_after_that_many(make_unbound: MakeUnbound) -> None:
    up = make_unbound(CLUSTER_ZONES)
    with serve(corefile(up.address, "timeouts {\n        maxtcpqueries 2\n    }")) as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
            c.sendall(frame(NAME, 1) + frame(NAME, 2) + frame(NAME, 3))
            data = b""
            while chunk := c.recv(65535):
                data += chunk
        ids = []
        while data:
            n = struct.unpack("!H", data[:2])[0]
            ids.append(dns.message.from_wire(data[2 : 2 + n]).id)
            data = data[2 + n :]
        assert sorted(ids) == [1, 2]  # two answers, then the server closed the connection


def test_a_later_block_on_the_same_listener_overrides(make_unbound: MakeUnbound) -> None:
    up = make_unbound(CLUSTER_ZONES)
    more = f"example:{{PORT}} {{\n    bind 127.0.0.1\n    timeouts {{\n        idle 1s\n    }}\n    forward . {up.address}\n}}\n"
    with serve(corefile(up.address, "timeouts {\n        idle 30s\n    }", more)) as s:
        idle = closed_after(s.port, b"", 4)
        assert idle is not None and idle < 2.5


@contextlib.contextmanager
def wrong_question_upstream() -> Iterator[int]:
    """UDP: answers every query with its ID but another question, then never the right one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            q = dns.message.from_wire(data)
            r = dns.message.make_response(dns.message.make_query("other.example.", "A"))
            r.id = q.id
            sock.sendto(r.to_wire(), addr)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        t.join()
        sock.close()


def test_debug_logs_coredns_wrong_reply_hexdump() -> None:
    with wrong_question_upstream() as port:
        for extra, shown in (("debug", True), ("", False)):
            probe = "invalid:{PORT} {\n    bind 127.0.0.1\n}\n"  # answers serve()'s readiness probe
            text = corefile(f"127.0.0.1:{port} {{\n        max_fails 0\n    }}", extra, probe)
            with serve(text) as s:
                assert s.query("a.example.", timeout=6).rcode() == dns.rcode.SERVFAIL
                log = s.stderr()
            assert (
                "[DEBUG] Wrong reply for id: " in log and "a.example. 1\ndebug: 000000 " in log
            ) is shown, log


def test_pprof_and_trace_are_accepted_with_one_warning_each(make_unbound: MakeUnbound) -> None:
    up = make_unbound(CLUSTER_ZONES)
    extra = "pprof 127.0.0.1:6060 {\n        block 100\n    }\n    trace zipkin localhost:9411 {\n        every 100\n    }"
    more = f"example:{{PORT}} {{\n    bind 127.0.0.1\n    pprof\n    trace\n    forward . {up.address}\n}}\n"
    with serve(corefile(up.address, extra, more)) as s:
        assert s.query(NAME).answer  # the Corefile keeps working
        with socket.socket() as c:
            assert c.connect_ex(("127.0.0.1", 6060)) != 0  # nothing pretends to be pprof
        log = s.stderr()
    assert log.count("[WARNING] pprof: Go runtime profiling is not available") == 1, log
    assert log.count("[WARNING] trace: OpenTracing (zipkin, datadog) is not available") == 1, log
