"""Reading a UDP socket that another process owns and reads too (a peer agent's, see node/sockshare.py).

Two agents of one node bind the same addresses with SO_REUSEPORT, and the kernel hashes each flow to
one socket of the group. A socket dies with its process's last descriptor, and with it every datagram
queued to it: a SIGKILLed agent would lose what the kernel hashed to it in the milliseconds before
its descriptors close. So each agent also holds and reads its peers' sockets: a socket stays in the
group while any process holds it, so when its owner is killed its queue is still read here.

The reader runs in the event loop (``add_reader``; the socket's blocking flag is shared with the
owner and is never touched) and takes one datagram at a time: each is answered, or handed to the
slow path, before the next is read, so a process that dies here holds at most the one it is on.
The slow path is bounded as the listener's own receive path is (server/slowgate.py): past the
listener's cap, counting what its own sockets already have in flight, a plain query is answered
REFUSED at once and anything else is dropped, both counted; names the cache holds have a reserve.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from functools import partial

from nodelocaldns.dns import wire
from nodelocaldns.server.listener import Listener
from nodelocaldns.server.settings import UDP_READ as _UDP_BUF
from nodelocaldns.server.slowgate import gate_of, holds, in_flight
from nodelocaldns.server.udp import drain_queue

log = logging.getLogger("nodelocaldns")

_PER_WAKE = 64  # datagrams per loop callback; more stay readable for the next one
RETIRE_TIMEOUT = 2.0  # a retired socket whose end mark never comes back is closed after this
ANSWER_TIMEOUT = 10.0  # how long a socket no longer read stays open for slow-path answers in flight


class SharedReader:
    """Serves datagrams from ``sock`` (a peer's socket) through ``listener``, from the event loop."""

    def __init__(self, listener: Listener, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.listener = listener
        self.sock = sock
        self.loop = loop
        self.own = sock.getsockname()
        self.reading = False
        self.retiring = False
        self.closed = False
        self.done: asyncio.Future[None] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closer: asyncio.Task[None] | None = None
        self.gate = gate_of(listener)  # one per listener, for every peer socket read here

    def start(self) -> None:
        self.reading = True
        self.loop.add_reader(self.sock.fileno(), self._ready)

    def release(self) -> None:
        """The owner leaves cleanly and drains its own socket: stop reading (between datagrams, so
        nothing read is dropped) and close this copy."""
        self._close()

    def retire(self) -> None:
        """The owner is gone (killed): this copy is the socket's last. Steer new datagrams to the
        other sockets of the group and answer everything queued before closing, as UDPWorker.stop
        does for its own socket: connect to its own address, then queue an empty end mark."""
        if self.closed or self.retiring:
            return
        self.retiring = True
        host, port = self.own[:2]
        if host in ("::", "0.0.0.0"):
            host = "::1" if self.sock.family == socket.AF_INET6 else "127.0.0.1"
        try:
            self.sock.connect((host, port))
            self.sock.send(b"")
        except OSError as exc:
            log.warning("[WARNING] cannot steer a departed peer's socket %s away: %s", self.own, exc)
            self._drain_rest()
            self._close()
            return
        self._timer = self.loop.call_later(RETIRE_TIMEOUT, self._retire_timeout)

    def _retire_timeout(self) -> None:
        self._timer = None
        self._drain_rest()
        self._close()

    def _ready(self) -> None:
        recv = self.sock.recvfrom
        for _ in range(_PER_WAKE):
            try:
                data, addr = recv(_UDP_BUF, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return  # the owner (or another peer) took it: all of them read this socket
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    self._close()
                    return
                continue  # an ICMP error reported on a connected socket
            if not data and self.retiring:  # the end mark (see retire)
                self._drain_rest()
                self._close()
                return
            if data:
                self.handle(data, addr)

    def _drain_rest(self) -> None:
        drain_queue(self.sock, self.handle)

    def handle(self, data: bytes, addr: tuple[str, int]) -> None:
        """The datagram's answer: a fresh hit at once, else the slow path (as UDPWorker)."""
        lst = self.listener
        if len(data) >= _UDP_BUF:
            lst._bad(addr, f"datagram of {_UDP_BUF} bytes or more")
            bad = wire.bare_reply(data, wire.FORMERR)
            if bad is not None:
                self.send(bad, addr)
            return
        try:
            out = lst.fast(data, False)
        except Exception as exc:  # a fast-path slip costs one slow answer, never the reader
            lst.fast_failed(exc)
            out = None
        if out is not None:
            self.send(out, addr)
            return
        send = partial(self.send, addr=addr)
        if not self.gate.admit(holds(lst.router, data, lst.native), in_flight(lst)):
            self.gate.shed(data, send)
            return
        # Listener.spawn's task, also tracked here: the socket stays open until it has answered.
        t = asyncio.ensure_future(lst.handle(data, addr, "udp", send))
        t.add_done_callback(self.gate.done)
        for tasks in (lst.tasks, self._inflight):
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    def send(self, out: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(out, addr)
        except OSError:
            self.listener.send_errors += 1

    def _close(self) -> None:
        """Stop reading now; close once the slow-path answers in flight are sent (bounded)."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.reading:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sock.fileno())
            self.reading = False
        if self._inflight:
            self._closer = self.loop.create_task(self._close_after_answers())
        else:
            self._final_close()

    async def _close_after_answers(self) -> None:
        await asyncio.wait(list(self._inflight), timeout=ANSWER_TIMEOUT)
        self._final_close()

    def _final_close(self) -> None:
        self.sock.close()
        if not self.done.done():
            self.done.set_result(None)
