"""An in-process server with a fake clock, for unit tests of the query pipeline.

``inproc(corefile)`` starts a real ``Server`` (real sockets on loopback, real upstreams) on a
private event loop thread, with a ``FakeClock`` injected as its clock: every TTL, freshness,
prefetch and serve_stale decision reads that clock, and the clock moves only when the test calls
``advance``. Queries go in three ways: real UDP and TCP over loopback (so the UDP thread's inlined
fast path and the TCP fast path run) and ``Listener.handle`` (the slow path, the plugin chain).
``stop`` shuts the server down (lameduck, drain), stops the loop and closes it, so nothing of it outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache.handler import CacheHandler
from nodelocaldns.server.listener import Listener
from nodelocaldns.server.server import Server
from nodelocaldns.server.settings import DEFAULT, ServerConfig

from .ports import free_port

T = TypeVar("T")


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, t: float = 5000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        assert seconds >= 0, "a monotonic clock never goes back"
        self.t += seconds
        return self.t


def query(name: str, qtype: int, qid: int = 0x1234, flags: int = 0x0100, edns: bool = False,
          do: bool = False, size: int = 1232, version: int = 0) -> bytes:  # fmt: skip
    """A query as wire bytes, built by hand so any header flag or OPT field can be set; the name
    keeps the case it is written in (wire.text_to_wire would lowercase it)."""
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".") if label)
    q = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0) + qname + b"\x00"
    q += struct.pack("!HH", qtype, 1)
    if edns:
        q += b"\x00\x00\x29" + struct.pack("!HBBHH", size, 0, version, 0x8000 if do else 0, 0)
    return q


def answer_ttls(reply: bytes) -> list[int]:
    """The TTL of every answer record in ``reply``."""
    _id, _fl, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", reply)
    off = wire.HEADER_LEN
    for _ in range(qd):
        _name, off = wire.read_name(reply, off)
        off += 4
    ttls = []
    for _ in range(an):
        _name, off = wire.read_name(reply, off)
        _t, _c, ttl, rdlen = struct.unpack_from("!HHIH", reply, off)
        ttls.append(ttl)
        off += 10 + rdlen
    return ttls


@dataclass
class Harness:
    inst: Server
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    clock: FakeClock
    port: int
    host: str = "127.0.0.1"

    @property
    def lst(self) -> Listener:
        return self.inst.listeners[(self.host, self.port)]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the loop thread (where the server mutates its state) and return its result."""

        async def wrap() -> T:
            return fn()

        return self.run(wrap(), timeout)

    def advance(self, seconds: float) -> float:
        """Move the server's clock; the next query sees the new time (native workers too)."""

        def move() -> float:
            t = self.clock.advance(seconds)
            self.inst.sync_clock()
            return t

        return self.call(move)

    def udp(self, data: bytes, timeout: float = 3.0) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, (self.host, self.port))
            return s.recv(65535)

    def tcp(self, data: bytes, timeout: float = 3.0) -> bytes:
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            head = _recv_exact(s, 2)
            return _recv_exact(s, struct.unpack("!H", head)[0])

    def slow(self, data: bytes, proto: str = "udp") -> bytes:
        """The plugin chain's answer (``Listener.handle``), the fast path bypassed."""
        out: list[bytes] = []
        self.run(self.lst.handle(data, ("127.0.0.1", 5300), proto, out.append))
        assert len(out) == 1, f"the slow path sent {len(out)} replies"
        return out[0]

    def cache(self, zone: str = ".") -> CacheHandler:
        """The running cache of ``zone``'s block."""
        c = self.lst.router.zones[zone].cache
        assert isinstance(c, CacheHandler), f"no cache in block {zone!r}"
        return c

    def wait_until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll ``pred`` until it holds (background work such as a prefetch), bounded by ``timeout``.

        ``pred`` runs in the caller's thread, so it may send queries; read server state in it
        through ``call``.
        """
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            time.sleep(0.01)

    def stop(self, drain: float = 1.0) -> None:
        try:
            if not self.loop.is_closed():
                self.run(self.inst.shutdown(drain=drain), timeout=drain + 15)
        finally:
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(5)
                self.loop.close()  # else its self-pipe sockets are finalised (and warned about) later


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


@contextlib.contextmanager
def inproc(corefile: str, start: float = 5000.0, port: int | None = None, native: bool = False,
           config: ServerConfig = DEFAULT) -> Iterator[Harness]:  # fmt: skip
    """Start ``corefile`` (``{PORT}`` replaced by a free port) in process on a fake clock at ``start``.

    ``native``: UDP is served by the native workers (pinned to the fake clock), not UDPWorker.
    """
    port = port or free_port("both")
    clock = FakeClock(start)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="inproc-loop")
    thread.start()
    inst = Server(corefile.replace("{PORT}", str(port)), clock=clock, native=native, config=config)
    h = Harness(inst, loop, thread, clock, port)
    try:
        h.run(inst.start())
        yield h
    finally:
        h.stop()
