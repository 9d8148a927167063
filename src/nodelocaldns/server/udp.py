"""The UDP receive thread: fresh cache hits answered in the thread, the rest handed to the loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from nodelocaldns.dns import wire
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.cache.fastpath import DO_FLAGS, EDNS, NOEDNS, OPT_HEAD
from nodelocaldns.server.listener import _B0, Listener, _perf
from nodelocaldns.server.settings import DRAIN_READS as _DRAIN_MAX
from nodelocaldns.server.settings import UDP_READ as _UDP_BUF


def reserve_for(cap: int) -> int:
    """Room above the slow path's cap for names the cache holds (expired: serve_stale, a refresh)."""
    return max(1, cap // 4)


def refused_reply(data: bytes) -> bytes | None:
    """REFUSED to a plain query the slow path has no room for; None: not a plain query (drop it).

    The bytes the server writes past forward's ``max_concurrent`` (wire.error_reply: the client's
    ID, RD and CD, its question, its OPT echoed with its size and DO), built without parsing; the
    native worker's ``refuse`` (native/udp.c) is the same function for its full ring. Plain: QR and
    opcode 0, one question of uncompressed labels, nothing after it but one OPT ending the packet.
    """
    n = len(data)
    if n < 17 or n >= _UDP_BUF or data[2] & 0xF8 or data[4:11] != _ONE_Q or data[11] > 1:
        return None
    i = 12
    while ln := data[i]:
        if ln > 63 or i + ln + 1 >= n or i + ln - 11 > 254:  # labels; the name <= 255 bytes
            return None
        i += ln + 1
    qend = i + 5
    if qend > n:
        return None
    edns = data[11]
    opt = b""
    if edns:
        if (
            n < qend + 11
            or data[qend : qend + 3] != OPT_HEAD
            or n != qend + 11 + ((data[qend + 9] << 8) | data[qend + 10])
        ):
            return None
        opt = OPT_HEAD + data[qend + 3 : qend + 5] + DO_FLAGS[1 if data[qend + 7] & 0x80 else 0]
    elif n != qend:
        return None
    head = bytes((0x80 | (data[2] & 1), (data[3] & 0x10) | wire.REFUSED, 0, 1, 0, 0, 0, 0, 0, edns))
    return data[:2] + head + data[12:qend] + opt


_ONE_Q = b"\x00\x01\x00\x00\x00\x00\x00"  # QD=1, AN=NS=0, then AR's high byte
# Datagrams read in a row without the socket's queue running empty, at which the thread counts as
# behind its socket: ~17 ms of a 15k QPS flood, far below the ~10k datagrams the 4 MiB receive
# buffer holds before the kernel drops (never read, never answered). While behind, new names are
# refused in the thread and the loop starts none, so the GIL goes to reading the socket.
BEHIND = 256
# The GIL switch interval while the thread runs. A thread waiting for the GIL gets it only when the
# holder blocks or after this interval; the loop, busy with a flood's chain work, never blocks, and
# each recvfrom/sendto hands the GIL back to it (CPython's convoy effect, bpo-7946). At the 5 ms
# default a 15k QPS flood queues 75 datagrams per wait; the cached names wait behind them.
SWITCH_INTERVAL = 0.001


_DONTWAIT = socket.MSG_DONTWAIT


def drain_queue(sock: socket.socket, handle: Callable[[bytes, tuple[str, int]], None]) -> None:
    """Hand every datagram still queued on ``sock`` to ``handle``, without blocking (bounded)."""
    for _ in range(_DRAIN_MAX):
        try:
            data, addr = sock.recvfrom(_UDP_BUF, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EBADF:
                return
            continue  # an ICMP error reported on the connected socket: not a datagram
        if data:
            handle(data, addr)


class UDPWorker:
    """The UDP hot path: a thread blocked in recvfrom on the listener's socket.

    Serving a fresh hit costs recvfrom + sendto and no event-loop wakeup; measured here this is
    ~2 us/query cheaper than an asyncio datagram protocol at 50k qps (fewer syscalls, no epoll).
    Everything that is not a fresh cache hit is handed to the event loop (``Listener.spawn``).
    The thread holds the GIL only while it processes a packet; dict reads are atomic under the GIL,
    and the counters it writes (``stats.fast``) are written by nobody else.

    The steps are plugins/cache/fastpath.answer, inlined: one more Python call per packet costs
    ~0.3 us, several percent of a hit at ~100k qps on one core, so this loop is the one place the
    reference is copied (and the reason this file is over the size budget).
    tests/plugins/cache/test_fastpath_differential.py feeds the same packets here, to the reference and to the
    slow path, and requires the same bytes. A client that writes its question in lowercase and sets
    only RD (what stub resolvers send) gets a reply tail joined once per entry and TTL second.
    """

    def __init__(self, listener: Listener, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.listener = listener
        self.sock = sock
        self.loop = loop
        self.stopping = False
        # Packets handed to the loop and not yet finished there: handed (written only by this
        # thread) minus finished (written only by the loop), so neither needs a lock.
        self.n_handed = 0
        self.n_finished = 0
        # The slow path was full: answered REFUSED, or dropped unanswered (not a plain query); [0]
        # written only by this thread, [1] only by the loop (new names it did not start, behind).
        self.refused_by = [0, 0]
        self.dropped_by = [0, 0]
        self.behind = False  # the socket's queue has not run empty for BEHIND datagrams (see run)
        self.cap = listener.max_pending
        self.waiting_max = listener.config.udp_waiting  # new names not started: past it, REFUSED here
        # Two lanes, drained in order: packets for a name the cache holds (expired: serve_stale or a
        # refresh) come before the rest, and may use a reserve above the cap, so a flood of names
        # nobody asked before cannot starve the names the cache is there for.
        self.lanes: tuple[deque[tuple[Callable[..., None], tuple[Any, ...]]], ...] = (deque(), deque())
        self.reserve = reserve_for(listener.max_pending)
        self.scheduled = False  # a drain is due on the loop (one wakeup for a batch, not per packet)
        self.thread = threading.Thread(target=self.run, name=f"udp {listener.server}", daemon=True)

    def start(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self.thread.start()

    @property
    def refused(self) -> int:
        return self.refused_by[0] + self.refused_by[1]

    @property
    def dropped(self) -> int:
        return self.dropped_by[0] + self.dropped_by[1]

    def stop(self) -> None:
        """Stop reading, without dropping what the kernel already queued to this socket.

        Another process may share the port (SO_REUSEPORT: a handover, a redundant agent), and a
        datagram the kernel hashed to this socket dies with it. So, first, the socket is connected
        to its own address: a connected UDP socket only matches that one remote, so the kernel
        hashes every new datagram to the other sockets of the group (with none left it refuses
        them, as a closed port would). Then the socket sends itself an empty datagram, which queues
        behind everything already there: the thread answers what came before it, reads whatever
        raced in after without blocking (``_drain_rest``), and exits. Replies can still be sent.
        """
        if self.stopping:
            return
        self.stopping = True
        if not self.thread.is_alive():
            return  # never started: a later listener of the same start-up failed to bind
        host, port = self.sock.getsockname()[:2]
        if host in ("::", "0.0.0.0"):
            host = "::1" if self.sock.family == socket.AF_INET6 else "127.0.0.1"
        try:
            self.sock.connect((host, port))
            self.sock.send(b"")
        except OSError:  # cannot steer: wake the thread from outside, as a last resort
            with contextlib.suppress(OSError), socket.socket(self.sock.family, socket.SOCK_DGRAM) as w:
                w.sendto(b"", (host, port))
        self.thread.join(1.0)

    def _drain_rest(self) -> None:
        """After the end-of-queue mark: what is still queued, without blocking, to the slow path."""
        drain_queue(self.sock, self.to_slow)

    def close(self) -> None:
        self.stop()
        self.sock.close()

    def shared_sockets(self) -> list[socket.socket]:
        """The socket a peer agent may hold and read too (node/sockshare.py)."""
        return [] if self.stopping else [self.sock]

    def send(self, out: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(out, addr)

    def handoff(self, fn: Callable[..., None], *args: Any, lane: int = 1) -> bool:
        """Run ``fn(*args)`` on the loop, unless ``cap`` packets are already there (then False).

        ``fn`` must count itself finished (``_done``). Without the cap a flood of packets that are
        not hits (malformed, or unique names toward a dead upstream) queues without limit: hundreds
        of MB within seconds, and every cached name waits behind the queue.
        """
        if self.n_handed - self.n_finished >= (self.cap + self.reserve if lane == 0 else self.cap):
            return False
        if lane and (self.behind or len(self.lanes[1]) >= self.waiting_max):
            return False  # the loop cannot start them in time: REFUSED here is ~10x cheaper
        self.n_handed += 1
        self.lanes[lane].append((fn, args))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon_threadsafe(self.drain)
        return True

    def drain(self, batch: int = 64) -> None:
        """On the loop: start up to ``batch`` handed-off packets, cached names first, then yield.

        While the thread is behind its socket, the new names waiting are refused rather than
        started (the chain's work would take the GIL the thread needs to read)."""
        self.scheduled = False  # before looking: a packet appended from now on schedules a drain
        if self.behind:
            self._refuse_waiting()
        for lane in self.lanes:
            while lane and batch:
                fn, args = lane.popleft()
                batch -= 1
                try:
                    fn(*args)
                except Exception as exc:  # each fn counts itself done; a bug must not strand the rest
                    self.listener.fast_failed(exc)
        if (self.lanes[0] or self.lanes[1]) and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.drain)

    def _done(self, _t: object = None) -> None:
        self.n_finished += 1

    def _refuse_waiting(self) -> None:
        """On the loop: the new names waiting get REFUSED (counted) instead of the chain."""
        new = self.lanes[1]
        keep: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        for _ in range(len(new)):  # the thread appends no new names while behind
            fn, args = new.popleft()
            if fn == self.slow:
                self.shed(args[0], args[1], side=1)
                self._done()
            else:  # counting a slow hit, a FORMERR, a fast-path error: cheap, and owed
                keep.append((fn, args))
        new.extendleft(reversed(keep))

    def to_slow(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.handoff(self.slow, data, addr):
            self.shed(data, addr)

    def to_slow_cached(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.handoff(self.slow, data, addr, lane=0):
            self.shed(data, addr)

    def shed(self, data: bytes, addr: tuple[str, int], side: int = 0) -> None:
        """The slow path is full: REFUSED at once to a plain query, as forward past max_concurrent
        answers; anything else is dropped. Both counted (``side`` 1: on the loop)."""
        out = refused_reply(data)
        if out is None:
            self.dropped_by[side] += 1
            return
        self.refused_by[side] += 1
        try:
            self.sock.sendto(out, addr)
        except OSError:
            self.listener.send_errors += 1

    def slow(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.listener.spawn(data, addr, "udp", partial(self.send, addr=addr), self._done)
        except BaseException:
            self._done()
            raise

    def record_slow_hit(self, *args: Any) -> None:
        try:
            self.listener._record_slow_hit(*args)
        finally:
            self._done()

    def fast_failed(self, exc: BaseException) -> None:
        try:
            self.listener.fast_failed(exc)
        finally:
            self._done()

    def oversized(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram that filled the receive buffer was cut short: FORMERR, never a guess."""
        try:
            self.listener._bad(addr, f"datagram of {_UDP_BUF} bytes or more")
            out = wire.bare_reply(data, wire.FORMERR)
            if out is not None:
                self.send(out, addr)
        finally:
            self._done()

    def run(self) -> None:  # noqa: C901 - the hot loop is deliberately one function
        lst = self.listener
        recv = self.sock.recvfrom
        sendto = self.sock.sendto
        handoff = self.handoff
        slow = self.to_slow
        clock = lst.clock
        flagged = fastpath.flagged
        streak = 0  # datagrams read since the socket's queue was last empty
        while True:
            try:
                # A 64 KiB buffer costs ~1 us per packet in allocation; no sane query is near 4 KiB.
                # A datagram that fills the buffer was cut short and goes to the slow path (FORMERR).
                # Not blocking first: whether the queue was empty is how the thread knows it keeps up.
                try:
                    data, addr = recv(_UDP_BUF, _DONTWAIT)
                except BlockingIOError:
                    streak = 0
                    self.behind = False
                    data, addr = recv(_UDP_BUF)
                else:
                    streak += 1
                    if streak >= BEHIND:
                        self.behind = True
            except OSError:
                if self.stopping:
                    self._drain_rest()
                    return
                continue
            if self.stopping and not data:  # the end-of-queue mark (see stop)
                self._drain_rest()
                return
            try:
                t0 = _perf()
                counts = data[4:12]
                if counts == NOEDNS:
                    edns = 0
                elif counts == EDNS:
                    edns = 4
                else:
                    slow(data, addr)
                    continue
                if len(data) >= _UDP_BUF:
                    if not handoff(self.oversized, data, addr):
                        self.shed(data, addr)
                    continue
                qend = data.find(0, 12) + 5
                if data[2] & 0xFE or qend < 17:  # QR, opcode, AA or TC set; no name end
                    slow(data, addr)
                    continue
                q = data[12:qend]
                memo = lst.router.memo
                route = memo.get(q)
                raw = True
                if route is None:
                    q = q[:-4].lower() + q[-4:]
                    route = memo.get(q)
                    if route is None:
                        slow(data, addr)
                        continue
                    raw = False
                smap, dmap, zb, acc, tf, cap = route
                if edns:
                    if (
                        data[qend : qend + 3] != OPT_HEAD
                        or len(data) < qend + 11  # a cut-off OPT would raise IndexError and end this thread
                        or data[qend + 6]
                        or len(data) != qend + 11 + ((data[qend + 9] << 8) | data[qend + 10])
                    ):
                        slow(data, addr)
                        continue
                    do = data[qend + 7] & 0x80
                    limit = (data[qend + 3] << 8) | data[qend + 4]  # below 512 means 512 (see below)
                    opt = OPT_HEAD + data[qend + 3 : qend + 5] + (DO_FLAGS[1] if do else DO_FLAGS[0])
                    if limit > cap:  # bufsize: the chain sees (and echoes) the lowered size
                        limit = cap
                        opt = OPT_HEAD + cap.to_bytes(2, "big") + (DO_FLAGS[1] if do else DO_FLAGS[0])
                elif len(data) != qend:
                    slow(data, addr)
                    continue
                else:
                    do = 0
                    limit = 512
                if do or data[3] & 0x10:
                    key = flagged(q, do, data[3] & 0x10)
                    e = smap.get(key) or dmap.get(key)
                else:
                    e = smap.get(q) or dmap.get(q)
                if e is None:
                    slow(data, addr)
                    continue
                if raw:  # owner names keep their stored case: see fastpath.answer
                    if e.q is not None:
                        slow(data, addr)
                        continue
                elif e.q != data[12:qend]:
                    slow(data, addr)
                    continue
                now = clock()
                body = e.memo if now < e.memo_until else e.body(now)
                if body is None:
                    self.to_slow_cached(data, addr)  # expired: serve_stale or a refresh
                    continue
                if raw and data[2:4] == b"\x01\x00":
                    if edns:
                        t = e.tail_edns
                        if not t:
                            t = e.tail_edns = e.heads[5] + q + body
                        reply = data[:2] + t + opt
                    else:
                        t = e.tail
                        if not t:
                            t = e.tail = e.heads[1] + q + body
                        reply = data[:2] + t
                else:
                    head = e.heads[(data[2] & 1) | ((data[3] & 0x20) >> 4) | edns]
                    reply = b"".join((data[:2], head, data[12:qend], body, opt if edns else b""))
                if len(reply) > 512 and len(reply) > limit:
                    slow(data, addr)
                    continue
                if tf is not None:  # loadbalance's shuffle: the same function its handler runs
                    reply = tf(reply)
                # Counted before the write, so a client that scrapes /metrics right after its answer
                # already sees it; the duration therefore ends when the reply is ready.
                dt = _perf() - t0
                if dt <= _B0:
                    k = zb | e.sbase | (len(data) << 3) | (do >> 6) | (edns >> 2)
                    fc = lst.stats.fast
                    fc[k] = fc.get(k, 0) + 1
                else:
                    if not handoff(self.record_slow_hit, acc, e, data, reply, bool(do), "udp", dt):
                        # The loop is full: count the hit in the first bucket rather than queue it.
                        k = zb | e.sbase | (len(data) << 3) | (do >> 6) | (edns >> 2)
                        fc = lst.stats.fast
                        fc[k] = fc.get(k, 0) + 1
                acc[1] += dt
                try:
                    sendto(reply, addr)
                except OSError:
                    lst.send_errors += 1
            except Exception as exc:  # a slip here must cost one packet, never the UDP thread
                handoff(self.fast_failed, exc)
                slow(data, addr)
