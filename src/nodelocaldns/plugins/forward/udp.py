"""The UDP exchange with one upstream: pooled connected sockets, one timer, no task per query.

As CoreDNS's forward does, a connected UDP socket carries one query at a time and goes back to
the pool when its reply came; the last one used is taken first, so the pool is as large as the
peak of concurrent queries and idle sockets age out: a sweep every ``expire`` closes those idle
that long, and a socket older than ``max_age`` is closed instead of reused. A socket whose query
failed (timeout, ICMP error, cancellation) is closed, never reused.

A reply completes a query only if it comes from the upstream (the kernel enforces that on a
connected socket), is a response, and carries the query's fresh random ID and its question; any
other datagram on the socket (a late reply to an earlier query, a spoof) is read and dropped.
docs/compatibility.md weighs this against a fresh socket per query.

Each socket's descriptor stays registered with the event loop for its whole life (no epoll change
per query); a reply resolves the waiting future straight from the reader callback. A query whose
chain is stepped by hand (core/direct.py: a UDP miss, no Task) parks instead of awaiting a future,
and the reader callback (or the deadline timer) resumes its coroutine right there. Deadlines of
all the pool's queries sit in one heap behind a single loop timer.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import socket
from collections.abc import Callable
from typing import Any

from nodelocaldns.core.direct import driving, park
from nodelocaldns.errors import UpstreamError
from nodelocaldns.plugins.forward import matching
from nodelocaldns.plugins.forward.matching import go_addr, op_error, upstream_error
from nodelocaldns.plugins.forward.metrics import ForwardCounters

_MIN_BUF = 4096  # what a reply read asks for at least (as the fresh-socket exchange did)
# Datagrams read per wake-up of one socket; a flood of junk toward one port cannot hold the loop.
_READS_PER_WAKE = 16
# Deadlines are checked at most this often: under load a deadline (mostly of an answered query)
# passes every few hundred microseconds, and a timeout may run this much late instead.
_TICK = 0.02


class _Sock:
    """One pooled connected socket and the query it carries, if any."""

    __slots__ = ("sock", "fd", "local", "created", "used", "fut", "qid", "question", "bufsize", "gen")

    def __init__(self, sock: socket.socket, local: str, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.local = local
        self.created = now
        self.used = now
        # What waits for the reply: a future, or the driver of a parked coroutine (core/direct.py).
        self.fut: Any = None
        self.qid = 0
        self.question = b""
        self.bufsize = _MIN_BUF
        self.gen = 0  # bumped per query: a heap entry for an earlier query of this socket is stale


class Deadlines:
    """Every pending query's deadline in one heap, behind one loop timer (not one per query).

    Entries are dropped lazily: a query that finished leaves its entry until that deadline passes,
    when ``expired`` sees the socket has moved on (another generation, or idle). The timer wakes
    at most once per ``_TICK``, so a timeout fires up to that much after its deadline.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[_Sock, int], None]) -> None:
        self.loop = loop
        self.expired = expired
        self.heap: list[tuple[float, int, _Sock, int]] = []
        self.seq = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.armed = float("inf")

    def add(self, when: float, s: _Sock) -> None:
        heapq.heappush(self.heap, (when, next(self.seq), s, s.gen))
        if when < self.armed:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.armed = when
        self.timer = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.armed = float("inf")
        heap = self.heap
        now = self.loop.time()
        while heap and heap[0][0] <= now:
            _when, _n, s, gen = heapq.heappop(heap)
            if s.gen == gen and s.fut is not None:
                self.expired(s, gen)
        if heap:  # at most one wake-up per tick, however many deadlines fall inside it
            self._arm(max(heap[0][0], now + _TICK))

    def __len__(self) -> int:
        return len(self.heap)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.heap.clear()


class UDPPool:
    """The pooled UDP sockets to one upstream, on one event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        addr: str,
        counters: ForwardCounters,
        clock: Callable[[], float],
        expire: float,
        max_age: float = 0.0,
        max_idle: int = 0,
    ) -> None:
        self.loop = loop
        self.dest = (host, port)
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.addr = addr
        self.counters = counters
        self.clock = clock
        self.expire = expire
        self.max_age = max_age
        self.max_idle = max_idle
        self.idle: list[_Sock] = []  # last used on top
        self.busy: set[_Sock] = set()
        self.deadlines = Deadlines(loop, self._timed_out)
        self.sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    # -- one query -------------------------------------------------------------------------------

    async def exchange(self, msg: bytes, qid: int, question: bytes, timeout: float, bufsize: int) -> bytes:
        """Send ``msg`` (ID ``qid``) and return the reply that matches it, within ``timeout``."""
        s = self._take()
        try:
            s.sock.send(msg)
        except OSError as e:
            self._discard(s)
            raise upstream_error(e, "write", "udp", s.local, self.addr, "write") from None
        driver = driving(self.loop)
        fut: Any = self.loop.create_future() if driver is None else driver
        s.gen += 1
        s.fut, s.qid, s.question = fut, qid, question
        s.bufsize = bufsize if bufsize > _MIN_BUF else _MIN_BUF
        self.deadlines.add(self.loop.time() + timeout, s)
        try:
            if driver is not None:
                data: bytes = await park()
                return data
            return await fut  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            if s.fut is fut:  # the caller gave up: this socket may still get the reply, drop it
                self._discard(s)
            raise

    def _take(self) -> _Sock:
        now = self.clock()
        idle = self.idle
        if idle:
            s = idle[-1]
            if now - s.used < self.expire:
                idle.pop()
                if not (self.max_age > 0 and now - s.created > self.max_age):
                    self.counters.conn_cache(self.addr, "udp", hit=True)
                    self.busy.add(s)
                    return s
                self._close(s)
            else:  # the most recently used is past expire: every idle one is (CoreDNS clears them all)
                while idle:
                    self._close(idle.pop())
        self.counters.conn_cache(self.addr, "udp", hit=False)
        s = self._dial(now)
        self.busy.add(s)
        return s

    def _dial(self, now: float) -> _Sock:
        try:
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
        except OSError as e:
            raise upstream_error(e, "dial", "udp", None, self.addr, "socket") from None
        try:
            sock.setblocking(False)
            sock.connect(self.dest)
            local = go_addr(sock.getsockname())
        except OSError as e:
            sock.close()
            raise upstream_error(e, "dial", "udp", None, self.addr, "connect") from None
        s = _Sock(sock, local, now)
        self.loop.add_reader(s.fd, self._readable, s)
        return s

    def _readable(self, s: _Sock) -> None:
        """Read what is queued on ``s`` (bounded): the reply completes its query, the rest is dropped."""
        sock = s.sock
        for _ in range(_READS_PER_WAKE):
            try:
                data = sock.recv(s.bufsize)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # an ICMP error for what this socket sent (port unreachable, ...)
                if s.fut is not None:
                    self._fail(s, upstream_error(e, "read", "udp", s.local, self.addr, "read"))
                    return
                if s.fd < 0:
                    return
                continue  # about an earlier query of an idle socket: nothing waits for it
            fut = s.fut
            if fut is None:
                continue  # late or spoofed: nothing on this socket waits now
            if matching.reply_matches(data, s.qid, s.question):
                s.fut = None
                self._release(s)
                if isinstance(fut, asyncio.Future):
                    if not fut.done():
                        fut.set_result(data)
                else:
                    fut.resume(data)  # the rest of that query's chain runs now, in this callback
                # Anything queued after the reply is stale: the next read finds it (the socket
                # stays readable) and drops it on ID and question, as it would now.
                return
            matching.wrong_reply(data, s.qid, s.question)

    def _timed_out(self, s: _Sock, _gen: int) -> None:
        self._fail(s, UpstreamError(op_error("read", "udp", s.local, self.addr, "i/o timeout"), self.addr))

    def _fail(self, s: _Sock, err: UpstreamError) -> None:
        fut = s.fut
        s.fut = None
        self._discard(s)
        if isinstance(fut, asyncio.Future):
            if not fut.done():
                fut.set_exception(err)
        elif fut is not None:
            fut.fail(err)

    # -- the pool --------------------------------------------------------------------------------

    def _release(self, s: _Sock) -> None:
        """Back on top of the pool (CoreDNS Transport.Yield), unless closed or max_idle are idle."""
        self.busy.discard(s)
        s.used = self.clock()
        if self.closed or (self.max_idle > 0 and len(self.idle) >= self.max_idle):
            self._close(s)
            return
        self.idle.append(s)
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(self.expire, self._sweep)

    def _discard(self, s: _Sock) -> None:
        self.busy.discard(s)
        s.fut = None
        self._close(s)

    def _close(self, s: _Sock) -> None:
        if s.fd >= 0:
            self.loop.remove_reader(s.fd)
            s.fd = -1
            s.sock.close()

    def _sweep(self) -> None:
        """Close the sockets idle for ``expire`` (the oldest are at the bottom of the stack)."""
        self.sweeper = None
        now = self.clock()
        idle = self.idle
        n = 0
        while n < len(idle) and now - idle[n].used >= self.expire:
            self._close(idle[n])
            n += 1
        del idle[:n]
        if idle and not self.closed:
            self.sweeper = self.loop.call_later(self.expire, self._sweep)

    def open_sockets(self) -> int:
        return len(self.idle) + len(self.busy)

    def close(self) -> None:
        """Close the idle sockets now; a query in flight keeps its socket until it ends."""
        self.closed = True
        while self.idle:
            self._close(self.idle.pop())
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        if not self.busy:
            self.deadlines.close()
