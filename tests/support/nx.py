"""NX test helpers (tests/native/test_native_nx*.py): a hand-held UDP upstream on loopback, a
worker with a forward table, and the Python consumer's side of the result ring."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dns.message
import dns.name
import dns.rrset

from nodelocaldns import native

if TYPE_CHECKING:  # the extension may be absent or disabled (NODELOCALDNS_NATIVE=0)
    from nodelocaldns._native import Index, Worker

Result = tuple[bytes, tuple[Any, ...], bytes | None, int, float, int]


def query(name: str, qid: int, rdtype: str = "A", **kw: Any) -> bytes:
    m = dns.message.make_query(name, rdtype, **kw)
    m.id = qid
    return m.to_wire()


def wire_name(name: str) -> bytes:
    return dns.name.from_text(name).to_wire()


def answer_to(query: bytes, addr: str = "192.0.2.1") -> bytes:
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


@contextmanager
def serving(
    table: list[tuple[bytes, list[tuple[int, str, int]], int]] | None,
    *,
    timeout: float = 2.0,
    expire: float = 10.0,
    max_pending: int = 0,
    ring: int = 64,
    index: Index | None = None,
) -> Iterator[tuple[Worker, Index, tuple[str, int]]]:
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


def results(worker: Worker, n: int, wait: float = 5.0) -> list[Result]:
    """n results, collected as the Python consumer does: a wake-up, then exchanged()."""
    got: list[Result] = []
    deadline = time.monotonic() + wait
    while len(got) < n and time.monotonic() < deadline:
        worker.wait(0.1)
        got += worker.exchanged(64)
    assert len(got) == n, (got, worker.counters())
    return got


def counted(worker: Worker, key: str, n: int) -> dict[str, int]:
    deadline = time.monotonic() + 5
    while worker.counters()[key] < n and time.monotonic() < deadline:
        time.sleep(0.005)
    c = worker.counters()
    assert c[key] == n, c
    return c
