"""The native extension: built, switchable, a bounded index, and the GIL-free UDP worker.

The worker tests use real sockets on 127.0.0.1 and real dnspython and dig clients.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from nodelocaldns import native
from support.cachefill import STORED, Warm, warm

needs_native = pytest.mark.skipif(not native.native_available(), reason=native.native_status())


def test_extension_is_built_and_in_use_unless_disabled() -> None:
    if os.environ.get("NODELOCALDNS_NATIVE", "1").strip() == "0":
        assert not native.native_available()
        return
    import nodelocaldns._native as mod  # make install / CI must have compiled it

    assert native.native_available() and native.native_status() == "native"
    assert mod.HEADS_LEN == 80


def test_native_0_selects_the_pure_python_path() -> None:
    code = "from nodelocaldns import native; print(native.native_available(), native.native_status())"
    env = {**os.environ, "NODELOCALDNS_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False disabled by NODELOCALDNS_NATIVE=0"
    code = "from nodelocaldns import native; native.module()"
    err = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stderr
    assert "RuntimeError: native path unavailable: disabled by NODELOCALDNS_NATIVE=0" in err


# -- the index --------------------------------------------------------------------------------

HEADS = bytes(80)
KEY = b"\x07example\x03org\x00\x00\x01\x00\x01"


@needs_native
def test_index_insert_replace_remove_clear_len() -> None:
    ix = native.new_index(4)
    assert len(ix) == 0 and ix.capacity == 4
    assert ix.insert(KEY, HEADS, b"\x00" * 16, (4,), 1.0, 30)
    size = ix.bytes
    assert ix.insert(KEY, HEADS, b"\x00" * 32, (4, 20), 2.0, 30)  # same key: replaced, not added
    assert len(ix) == 1 and ix.bytes == size + 16 + 2
    assert ix.insert(KEY + b"\x01", HEADS, b"", (), 1.0, 30)
    assert ix.remove(KEY) and not ix.remove(KEY) and len(ix) == 1
    ix.clear()
    assert len(ix) == 0 and ix.bytes == 0


@needs_native
def test_index_is_bounded_in_entries_and_bytes() -> None:
    ix = native.new_index(3)
    keys = [b"\x01" + bytes((ord("a") + i,)) + b"\x00\x00\x01\x00\x01" for i in range(5)]
    assert [ix.insert(k, HEADS, b"x" * 8, (), 1.0, 5) for k in keys] == [True, True, True, False, False]
    assert len(ix) == 3
    assert ix.insert(keys[0], HEADS, b"y" * 8, (), 1.0, 5)  # replacing never needs a free slot
    small = native.new_index(100, max_bytes=ix.bytes)
    got = [small.insert(k, HEADS, b"x" * 8, (), 1.0, 5) for k in keys]
    assert got == [True, True, True, False, False] and small.bytes <= ix.bytes


@needs_native
@pytest.mark.parametrize(
    ("key", "body", "offs", "why"),
    [
        (b"\x07Example\x03org\x00\x00\x01\x00\x01", b"", (), "cache key"),  # the fast path lowercases
        (b"\x07example\x03org\x00\x00\x01\x00", b"", (), "cache key"),  # no class
        (b"\x07example\x03org\x00\x00\x01\x00\x01\x04", b"", (), "cache key"),  # DO/CD byte is 1..3
        (b"\x03a\x00b\x00\x00\x01\x00\x01", b"", (), "cache key"),  # zero byte inside a label
        (b"\x05ab\x00\x00\x01\x00\x01", b"", (), "cache key"),  # label runs past the name
        (b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", b"", (), "cache key"),  # label > 63
        (KEY, b"\x00" * 8, (5,), "TTL offset"),
        (KEY, b"\x00" * 8, (70000,), "TTL offset"),
        (KEY, b"\x00" * 8, (0, 0, 0), "TTL offsets"),
    ],
)
def test_index_rejects_what_the_fast_path_could_never_serve(key: bytes, body: bytes, offs: tuple[int, ...],
                                                            why: str) -> None:  # fmt: skip
    ix = native.new_index(4)
    with pytest.raises(ValueError, match=why):
        ix.insert(key, HEADS, body, offs, 1.0, 30)
    with pytest.raises(ValueError, match="heads"):
        ix.insert(KEY, HEADS[:79], b"", (), 1.0, 30)
    assert len(ix) == 0


# -- the UDP worker -------------------------------------------------------------------------------


class Misses:
    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[object, ...]]] = []
        self.cond = threading.Condition()

    def __call__(self, batch: list[tuple[bytes, tuple[object, ...]]]) -> None:
        with self.cond:
            self.got += batch
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, timeout), self.got


def udp_socket(port: int = 0, reuse: bool = False) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    return s


@pytest.fixture
def served() -> Iterator[tuple[Warm, native.Index]]:
    """A warm cache mirrored into an index whose entries were stored 'now' on the real clock."""
    w = warm()
    shift = time.monotonic() - STORED  # the worker's clock is CLOCK_MONOTONIC, like the event loop's
    for m in w.cache.store.maps:
        for e in m.values():
            e.stored += shift
    ix = native.new_index(256)
    w.mirror(ix)
    yield w, ix


@needs_native
def test_worker_answers_hits_natively_and_hands_misses_to_python(served: tuple[Warm, native.Index]) -> None:
    w, ix = served
    sock = udp_socket()
    port = sock.getsockname()[1]
    misses = Misses()
    srv = native.NativeUDP(sock, ix, misses)
    try:
        # Asked in the stored case (another case is the chain's: owner names keep the stored case).
        r = dns.query.udp(dns.message.make_query("example.org.", "A"), "127.0.0.1", port=port, timeout=2)
        assert r.rcode() == dns.rcode.NOERROR and str(r.question[0].name) == "example.org."
        assert [rr.to_text() for rr in r.answer[0]] == ["192.0.2.1"] and 0 < r.answer[0].ttl <= 30
        dig = subprocess.run(["dig", "+tries=1", "+time=2", "-p", str(port), "@127.0.0.1", "nx.example.org", "A"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        assert "status: NXDOMAIN" in dig.stdout and "flags: qr aa rd;" in dig.stdout  # RA as upstream sent it
        assert srv.counters()["hits"] == 2 and misses.got == []
        miss = dns.message.make_query("uncached.example.org.", "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.bind(("127.0.0.1", 0))
            c.sendto(miss.to_wire(), ("127.0.0.1", port))
            misses.wait_for(1)
            data, addr = misses.got[0]
            assert data == miss.to_wire() and addr == c.getsockname()
            # Python answers a miss on the same socket; the client sees one normal exchange.
            sock.sendto(dns.message.make_response(miss).to_wire(), addr)
            assert dns.message.from_wire(c.recv(512)).id == miss.id
        assert srv.counters() | {"batches": 0} == {"packets": 3, "hits": 2, "handed": 1, "refused": 0, "dropped": 0,
                                                  "send_errors": 0, "recv_errors": 0, "batches": 0, "stale": 0,
                                                  "refreshes": 0, "nx_sent": 0, "nx_replies": 0, "nx_timeouts": 0,
                                                  "nx_errors": 0, "nx_mismatched": 0, "nx_pending": 0}  # fmt: skip
    finally:
        srv.stop()
        sock.close()
    assert not srv.worker.running


@needs_native
def test_a_full_ring_answers_refused_instead_of_queueing(served: tuple[Warm, native.Index]) -> None:
    _w, ix = served
    sock = udp_socket()
    worker = native.module().serve_udp(sock.fileno(), ix, batch=4, ring=4)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(2)
            for i in range(10):
                c.sendto(dns.message.make_query(f"m{i}.example.org.", "A").to_wire(), sock.getsockname())
                time.sleep(0.01)  # keep the loopback queue short: the ring is what must refuse
            # Names the index does not hold fill 3 of the 4 slots: the last quarter is kept for names
            # it holds (expired, or asked in another case), as UDPWorker's first lane.
            refused = [dns.message.from_wire(c.recv(512)) for _ in range(7)]
            assert [(r.rcode(), r.question[0].name.to_text()) for r in refused] == [
                (dns.rcode.REFUSED, f"m{i}.example.org.") for i in range(3, 10)
            ]
        c = worker.counters()
        assert (c["packets"], c["handed"], c["refused"], c["dropped"], c["hits"]) == (10, 3, 7, 0, 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c2:
            c2.sendto(dns.message.make_query("EXAMPLE.ORG.", "A").to_wire(), sock.getsockname())
            c2.sendto(dns.message.make_query("m11.example.org.", "A").to_wire(), sock.getsockname())
            c2.settimeout(2)
            assert dns.message.from_wire(c2.recv(512)).rcode() == dns.rcode.REFUSED
        c = worker.counters()
        assert (c["packets"], c["handed"], c["refused"], c["dropped"]) == (12, 4, 8, 0)
        assert worker.wait(1.0)
        got = worker.drain()
        assert [dns.message.from_wire(d).question[0].name.to_text() for d, _a in got] == [
            *(f"m{i}.example.org." for i in range(3)),
            "EXAMPLE.ORG.",
        ]
        assert worker.drain() == [] and not worker.wait(0.05)
    finally:
        worker.stop()
        sock.close()


@needs_native
def test_stop_ends_an_idle_worker_promptly_and_twice_is_harmless(served: tuple[Warm, native.Index]) -> None:
    _w, ix = served
    sock = udp_socket()
    worker = native.module().serve_udp(sock.fileno(), ix)
    assert worker.running
    t0 = time.monotonic()
    worker.stop()
    worker.stop()
    assert not worker.running and time.monotonic() - t0 < 1.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(0.3)
        c.sendto(dns.message.make_query("example.org.", "A").to_wire(), sock.getsockname())
        with pytest.raises(TimeoutError):
            c.recv(512)  # nobody serves after stop
    sock.close()


@needs_native
def test_two_workers_on_reuseport_sockets_both_serve(served: tuple[Warm, native.Index]) -> None:
    _w, ix = served
    first = udp_socket(reuse=True)
    port = first.getsockname()[1]
    second = udp_socket(port, reuse=True)
    workers = [native.module().serve_udp(s.fileno(), ix) for s in (first, second)]
    try:
        # The kernel spreads by source address/port hash: many client sockets reach both.
        for _ in range(64):
            r = dns.query.udp(dns.message.make_query("example.org.", "A"), "127.0.0.1", port=port, timeout=2)
            assert r.answer and r.rcode() == dns.rcode.NOERROR
        hits = [w.counters()["hits"] for w in workers]
        assert sum(hits) == 64 and min(hits) > 0, hits
    finally:
        for w in workers:
            w.stop()
        first.close()
        second.close()


@needs_native
def test_index_writes_while_workers_read(served: tuple[Warm, native.Index]) -> None:
    """Python replaces and removes entries under a live worker: every reply is whole or absent."""
    w, ix = served
    sock = udp_socket()
    misses = Misses()
    srv = native.NativeUDP(sock, ix, misses)
    stop = threading.Event()
    entries = [(k, e) for m in w.cache.store.maps for k, e in m.items()]

    def churn() -> None:
        while not stop.is_set():
            for k, e in entries:
                ix.remove(k)
                native.insert_entry(ix, k, e)

    t = threading.Thread(target=churn)
    t.start()
    try:
        answered = 0
        for _ in range(200):
            try:
                r = dns.query.udp(dns.message.make_query("example.org.", "A"), "127.0.0.1",
                                  port=sock.getsockname()[1], timeout=0.05)  # fmt: skip
            except dns.exception.Timeout:
                continue  # removed at that instant: handed to Python, which does not answer here
            assert [rr.to_text() for rr in r.answer[0]] == ["192.0.2.1"]
            answered += 1
        assert answered > 0
    finally:
        stop.set()
        t.join()
        srv.stop()
        sock.close()
    # A hit answered after the client's 50 ms gave up (a loaded machine) is counted but not seen.
    assert answered <= srv.counters()["hits"] <= 200


@pytest.mark.parametrize("required", ["0", "1"])
def test_a_missing_compiler_falls_back_unless_the_build_requires_it(tmp_path: Path, required: str) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "CC": "/bin/false", "NODELOCALDNS_NATIVE_REQUIRED": required}
    cmd = [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", f"{tmp_path}/lib", "--build-temp",
           f"{tmp_path}/tmp"]  # fmt: skip
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    built = list((tmp_path / "lib").rglob("_native*.so")) if (tmp_path / "lib").exists() else []
    assert built == []
    if required == "0":
        assert out.returncode == 0 and "using the pure-Python path" in out.stderr, out.stderr
    else:
        assert out.returncode != 0


@needs_native
def test_worker_on_ipv6_loopback(served: tuple[Warm, native.Index]) -> None:
    _w, ix = served
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    misses = Misses()
    srv = native.NativeUDP(sock, ix, misses)
    try:
        port = sock.getsockname()[1]
        r = dns.query.udp(dns.message.make_query("example.org.", "AAAA"), "::1", port=port, timeout=2)
        assert sorted(rr.to_text() for rr in r.answer[0]) == ["2001:db8::1", "2001:db8::2"]
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
            c.bind(("::1", 0))
            c.sendto(dns.message.make_query("miss.example.org.", "A").to_wire(), ("::1", port))
            misses.wait_for(1)
            assert misses.got[0][1] == c.getsockname()  # (host, port, flowinfo, scope_id) as recvfrom gives
    finally:
        srv.stop()
        sock.close()


@needs_native
def test_hits_are_answered_while_python_holds_the_gil(served: tuple[Warm, native.Index]) -> None:
    """The main thread spins holding the GIL (no thread switch for 10 s): dig is answered anyway."""
    _w, ix = served
    sock = udp_socket()
    srv = native.NativeUDP(sock, ix, lambda batch: None)
    interval = sys.getswitchinterval()
    try:
        cmd = [
            "dig",
            "+tries=1",
            "+time=3",
            "-p",
            str(sock.getsockname()[1]),
            "@127.0.0.1",
            "example.org",
            "A",
        ]
        sys.setswitchinterval(10.0)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        start = time.monotonic()
        done_after = None
        while time.monotonic() - start < 2.5:  # poll() is a plain waitpid: the GIL stays here
            if p.poll() is not None:
                done_after = time.monotonic() - start
                break
        sys.setswitchinterval(interval)
        out = p.communicate(timeout=10)[0]
        assert done_after is not None and "status: NOERROR" in out and "192.0.2.1" in out
        assert srv.counters()["hits"] == 1
    finally:
        sys.setswitchinterval(interval)
        srv.stop()
        sock.close()


def _tasks() -> set[str]:
    return set(os.listdir("/proc/self/task"))


@needs_native
def test_the_worker_thread_blocks_signals_so_python_threads_get_them(
    served: tuple[Warm, native.Index],
) -> None:
    _w, ix = served
    sock = udp_socket()
    before = _tasks()
    worker = native.module().serve_udp(sock.fileno(), ix)
    try:
        (tid,) = _tasks() - before
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:  # past start-up, into its loop
            c.sendto(b"\x00" * 12, sock.getsockname())
        deadline = time.monotonic() + 5
        while worker.counters()["packets"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(f"/proc/self/task/{tid}/status") as f:
            blocked = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            assert blocked & (1 << (sig - 1)), sig
    finally:
        worker.stop()
        sock.close()
