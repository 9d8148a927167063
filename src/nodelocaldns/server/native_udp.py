"""A listener's UDP side on the native hot path (nodelocaldns._native, see native/README.md).

Per listener address: N sockets bound with SO_REUSEPORT, each served by a GIL-free worker that
answers fresh cache hits from a native index and hands everything else back to the event loop
in batches (the worker's eventfd is registered with the loop: one wake-up per batch). A handed
packet then takes exactly the Python UDP path: the cache's fast path (which also covers blocks
the native code cannot serve, e.g. loadbalance's prefer), else the plugin chain.

The index and how it mirrors the cache stores: server/native_index.py.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from nodelocaldns.core.request import Exchanged
from nodelocaldns.metrics.dnsstats import ZONE_SHIFT, ZoneAcc
from nodelocaldns.native import module
from nodelocaldns.plugins.cache.entry import Cached
from nodelocaldns.server.direct import start_many
from nodelocaldns.server.native_index import NativeIndex
from nodelocaldns.server.native_stale import start_refreshes
from nodelocaldns.server.settings import DRAIN_READS as _DRAIN_MAX
from nodelocaldns.server.settings import UDP_READ as _UDP_BUF
from nodelocaldns.server.slowgate import holds
from nodelocaldns.server.udp import refused_reply, reserve_for

if TYPE_CHECKING:
    from nodelocaldns._native import Worker
    from nodelocaldns.server.listener import Listener

_LOW = (1 << ZONE_SHIFT) - 1
_CANCELED = errno.ECANCELED
BATCH = 32  # datagrams per recvmmsg
# Misses a worker may queue for Python before it drops (and counts) them. A slot holds a query of up
# to 512 bytes (longer ones get their own copy), so a worker keeps ~170 KB resident once misses have
# cycled through the ring; Python cannot drain a deeper queue anyway.
RING = 256
# New names started per loop iteration. Each start runs the chain up to its first wait (~115 us
# here), so this keeps one iteration near 2 ms of such work, which is what a serve_stale answer (a
# name the cache holds: started at once) waits for; the loop goes round again while more wait.
PER_WAKE = 16


def _steer(s: socket.socket) -> bool:
    host, port = s.getsockname()[:2]
    if host in ("::", "0.0.0.0"):
        host = "::1" if s.family == socket.AF_INET6 else "127.0.0.1"
    try:
        s.connect((host, port))
        s.send(b"")
    except OSError:
        return False
    return True


class NativeUDPServer:
    """N sockets of one listener, one native worker each; the Python side of their misses."""

    def __init__(self, listener: Listener, socks: list[socket.socket], loop: asyncio.AbstractEventLoop,
                 nix: NativeIndex, open_socket: Callable[[], socket.socket] | None = None) -> None:  # fmt: skip
        self.listener = listener
        self.open_socket = open_socket
        self.socks = socks
        self.loop = loop
        self.nix = nix
        self.workers: list[tuple[Worker, socket.socket]] = []
        self.folded: dict[int, list[int]] = {}  # stopped workers' hits, in the listener's key space
        self.folded_stale: dict[int, list[int]] = {}  # and their serve_stale answers
        self.folded_counters: dict[str, int] = {}
        self.started = False
        self.stopping = False
        # The bounded slow path (as UDPWorker): misses spawned minus finished stay under the cap,
        # names the cache holds (expired: serve_stale, a refresh) may use a reserve above it.
        self.n_handed = 0  # waiting or running in the chain, until it finished
        self.n_finished = 0
        self.refused_here = 0  # past the cap: answered REFUSED at once (refused_reply)
        self.shed = 0  # past the cap and not a plain query: dropped
        self.cap = listener.max_pending
        self.reserve = reserve_for(self.cap)
        # The whole ring is read at every wake-up: a name the cache holds is started at once, new
        # names wait here (bounded: ServerConfig.udp_waiting, then Worker.shed) and start PER_WAKE
        # per iteration (a REFUSED from a worker is a copy of the question into its batch's sendmmsg).
        # In the ring's FIFO order a name the cache holds waited behind up to 192 new ones: tens
        # of ms of chain work, most of the serve_stale answers that took over 50 ms.
        self.waiting: deque[tuple[bytes, tuple[Any, ...], socket.socket]] = deque()
        self.scheduled = False
        self.shedding = False  # the workers refuse new names themselves (waiting_max of them wait)
        self.waiting_max = listener.config.udp_waiting
        # uid -> upstream key of the forward tables (server/native_exchange.py; the server sets it).
        self.upstreams: dict[int, object] = {}
        # The replies of one wake-up, sent in one sendmmsg (Worker.send) after it.
        self._batch: list[tuple[bytes, tuple[Any, ...]]] | None = None
        self._batch_sock: socket.socket | None = None
        self.batched = hasattr(module().Worker, "send")  # an extension with NX (native/README.md)
        listener.stats.native = self.items
        listener.stats.native_stale = self.stale_items

    def start(self) -> None:
        self.started = True
        for s in self.socks:
            self._start(s)

    def _start(self, s: socket.socket) -> None:
        s.setblocking(False)  # Python's replies to misses must never block the event loop
        w: Worker = module().serve_udp(s.fileno(), self.nix.index, BATCH, RING)
        if self.listener.clock is not time.monotonic:
            w.pin(self.listener.clock())
        w.shed(self.shedding)
        self.loop.add_reader(w.fileno(), self._ready, w, s)
        self.workers.append((w, s))

    def sync_clock(self) -> None:
        if self.listener.clock is not time.monotonic:
            for w, _s in self.workers:
                w.pin(self.listener.clock())

    def resize(self, n: int) -> None:
        """A reload changed multisocket: open or close sockets (the first one always stays)."""
        n = max(n, 1)
        if self.stopping or not self.started or self.open_socket is None or n == len(self.socks):
            return
        while len(self.socks) < n:
            s = self.open_socket()
            self.socks.append(s)
            self._start(s)
        while len(self.socks) > n:
            s = self.socks.pop()
            i = next(j for j, (_w, ws) in enumerate(self.workers) if ws is s)
            self._retire(*self.workers.pop(i), steer=True)
            s.close()

    def _retire(self, w: Worker, s: socket.socket, steer: bool = False) -> None:
        """Stop one worker, keep its counts and answer what it still queued.

        ``steer`` (the socket is going away): as UDPWorker.stop, the socket is first connected to
        its own address, so the kernel hashes new datagrams to the other sockets of the
        SO_REUSEPORT group (another agent's during a handover), and an empty datagram to itself
        marks the end of what was queued here; Python reads up to that mark.
        """
        marked = steer and _steer(s)
        self.loop.remove_reader(w.fileno())
        w.stop()
        for name, v in w.counters().items():
            if name != "nx_pending":  # a gauge, not a total
                self.folded_counters[name] = self.folded_counters.get(name, 0) + v
        for folded, raw in ((self.folded, w.stats()), (self.folded_stale, w.stale_stats())):
            for k, n, ns in self._translated(raw):
                f = folded.setdefault(k, [0, 0])
                f[0] += n
                f[1] += ns
        start_refreshes(self.listener, self.nix.index, w.refreshes())
        rest = w.drain(1 << 30)
        self._handle(rest, s, marked)
        if hasattr(w, "exchanged"):
            self._exchanged(w.exchanged(1 << 30), s)
        if marked and not any(not d for d, _a in rest):  # the worker stopped before the mark
            self._drain_socket(s)

    def _drain_socket(self, s: socket.socket) -> None:
        deadline = time.monotonic() + 1.0
        for _ in range(_DRAIN_MAX):
            try:
                data, addr = s.recvfrom(_UDP_BUF)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                select.select([s], [], [], 0.05)
                continue
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    return
                continue  # an ICMP error reported on the connected socket: not a datagram
            if not data:
                return
            self._handle([(data, addr)], s)

    def _stop_workers(self, steer: bool = False) -> None:
        for w, s in self.workers:
            self._retire(w, s, steer)
        self.workers = []

    def set_index(self, nix: NativeIndex) -> None:
        """A reload: the workers restart on the new generation's index (the sockets stay open)."""
        if nix is self.nix:
            return
        self._stop_workers()
        self.nix = nix
        if not self.stopping and self.started:
            for s in self.socks:
                self._start(s)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._stop_workers(steer=True)

    def close(self) -> None:
        self.stop()
        for s in self.socks:
            s.close()

    # -- misses ----------------------------------------------------------------------------------

    def _ready(self, w: Worker, s: socket.socket) -> None:
        batch: list[tuple[bytes, tuple[Any, ...]]] | None = [] if self.batched else None
        self._batch, self._batch_sock = batch, s
        try:
            self._handle(w.drain(RING), s)
            if self.upstreams:
                self._exchanged(w.exchanged(RING), s)
        finally:
            self._batch = self._batch_sock = None
            if batch:
                self.listener.send_errors += w.send(batch)
        start_refreshes(self.listener, self.nix.index, w.refreshes())

    def _exchanged(self, results: list[tuple[bytes, tuple[Any, ...], bytes | None, int, float, int]],
                   s: socket.socket) -> None:  # fmt: skip
        """Misses a worker sent upstream itself (server/native_exchange.py). A reply its block
        settles at once (Listener.settle: cache, then the forwarding plugin's first attempt) goes
        into this wake-up's batch without the chain; otherwise the chain runs with the reply (or
        the failure) in hand as forward's first attempt, and forward may try again (failover, a
        timeout)."""
        keys = self.upstreams
        lst = self.listener
        handle = lst.handle
        settle = lst.settle
        send = self._send
        coros = []
        for query, addr, reply, uid, seconds, err in results:
            key = keys.get(uid)
            snd = partial(send, s, addr=addr)
            # ECANCELED: its worker stopped with it in flight (a reload): no attempt was made.
            if key is None or err == _CANCELED:
                coros.append(handle(query, addr, "udp", snd))
            elif reply is None:
                coros.append(handle(query, addr, "udp", snd, Exchanged(key, reply, seconds, err)))
            else:
                co = settle(query, addr, snd, Exchanged(key, reply, seconds, err))
                if co is not None:
                    coros.append(co)
        if coros:
            self.n_handed += len(coros)
            start_many(coros, self.loop, lst.direct, lst.tasks, self._done)

    def _handle(
        self, batch: list[tuple[bytes, tuple[Any, ...]]], s: socket.socket, marked: bool = False
    ) -> None:
        lst = self.listener
        for data, addr in batch:
            if not data and marked:  # the end-of-queue mark (_retire)
                continue
            if len(data) >= _UDP_BUF and data[4:12] in (b"\x00\x01\x00\x00\x00\x00\x00\x00",
                                                        b"\x00\x01\x00\x00\x00\x00\x00\x01"):  # fmt: skip
                self._oversized(data, addr, s)
                continue
            try:
                out = lst.fast(data, False)
            except Exception as exc:  # as UDPWorker: a fast-path slip costs one slow answer
                lst.fast_failed(exc)
                out = None
            if out is not None:
                self._send(s, out, addr)
                continue
            cached = self._cached(data)
            if self.n_handed - self.n_finished >= (self.cap + self.reserve if cached else self.cap):
                self._refuse(data, addr, s)
                continue
            self.n_handed += 1
            if cached:  # started at once: its answer (serve_stale) waits for nothing but this
                self._spawn(data, addr, s)
            else:
                self.waiting.append((data, addr, s))
        if len(self.waiting) >= self.waiting_max and not self.shedding:
            self._shed(True)
        if self.waiting and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._pump)

    def _spawn(self, data: bytes, addr: tuple[Any, ...], s: socket.socket) -> None:
        try:
            self.listener.start_direct(data, addr, partial(self._send, s, addr=addr), self._done)
        except Exception as exc:  # counted done, so the cap and drain() stay right
            self._done()
            self.listener.fast_failed(exc)

    def _pump(self) -> None:
        """Start up to PER_WAKE waiting new names; come back next iteration for the rest."""
        self.scheduled = False
        waiting = self.waiting
        for _ in range(min(PER_WAKE, len(waiting))):
            self._spawn(*waiting.popleft())
        if self.shedding and len(waiting) <= self.waiting_max // 2:
            self._shed(False)
        if waiting and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._pump)

    def _shed(self, on: bool) -> None:
        self.shedding = on
        for w, _s in self.workers:
            w.shed(on)

    def _refuse(self, data: bytes, addr: tuple[Any, ...], s: socket.socket) -> None:
        """The slow path is at its cap: REFUSED at once (a plain query), else dropped; both counted."""
        out = refused_reply(data)
        if out is None:
            self.shed += 1
            return
        self.refused_here += 1
        self._send(s, out, addr)

    def _done(self, _t: object = None) -> None:
        self.n_finished += 1

    def _cached(self, data: bytes) -> bool:
        return holds(self.listener.router, data, self)

    @property
    def dropped(self) -> int:
        """Misses dropped unanswered (not a plain query): the slow path at its cap, or a ring full."""
        return self.shed + self.counters().get("dropped", 0)

    @property
    def refused(self) -> int:
        """Misses answered REFUSED at once: the slow path at its cap, or a worker's ring full."""
        return self.refused_here + self.counters().get("refused", 0)

    def shared_sockets(self) -> list[socket.socket]:
        """The sockets a peer agent may hold and read too (node/sockshare.py)."""
        return [] if self.stopping else list(self.socks)

    def _send(self, s: socket.socket, out: bytes, addr: tuple[Any, ...]) -> None:
        if self._batch is not None and s is self._batch_sock:
            self._batch.append((out, addr))
            return
        try:
            s.sendto(out, addr)
        except OSError:
            self.listener.send_errors += 1

    def _oversized(self, data: bytes, addr: tuple[Any, ...], s: socket.socket) -> None:
        from nodelocaldns.dns import wire

        self.listener._bad((addr[0], addr[1]), f"datagram of {_UDP_BUF} bytes or more")
        out = wire.bare_reply(data, wire.FORMERR)  # as UDPWorker.oversized
        if out is not None:
            self._send(s, out, addr)

    def holds(self, key: bytes, entry: Cached | None = None) -> bool:
        """Does the index hold an entry for ``key`` (fresh or not)? Then so does a cache store.

        ``entry``, what a store holds for ``key``: a Mirrored of this index is held (only the
        store's drops and replacements take a key out of the index), asked without a body copy."""
        if entry is not None and type(entry) is self.nix.mirrored:
            return True
        return self.nix.index.body(key) is not None

    def lookup(self, data: bytes, now: float, tcp: bool) -> tuple[bytes, int] | None:
        """The native index's answer to ``data`` and the key to count it under (TCP uses this)."""
        return self.nix.index.lookup(data, now, tcp)

    # -- metrics ---------------------------------------------------------------------------------

    def translate(self, k: int) -> tuple[int, ZoneAcc]:
        """A native counter key (index zone id) as the listener's own fast-path key, and its zone."""
        acc = self.listener.stats.zone_acc(self.nix.zones[(k >> ZONE_SHIFT) - 1])
        return (k & _LOW) | acc.bits, acc

    def _translated(self, raw: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        return [(self.translate(k)[0], n, ns) for k, n, ns in raw if k >> ZONE_SHIFT]

    def items(self, stale: bool = False) -> list[tuple[int, int, int]]:
        """Every native hit (``stale``: serve_stale answer) as (listener key, count, nanoseconds),
        summed over the workers."""
        out = {k: list(v) for k, v in (self.folded_stale if stale else self.folded).items()}
        for w, _s in self.workers:
            for k, n, ns in self._translated(w.stale_stats() if stale else w.stats()):
                f = out.setdefault(k, [0, 0])
                f[0] += n
                f[1] += ns
        return [(k, v[0], v[1]) for k, v in out.items()]

    def stale_items(self) -> list[tuple[int, int, int]]:
        return self.items(stale=True)

    def counters(self) -> dict[str, int]:
        """The workers' packet counters (packets, hits, handed, dropped, ...), summed."""
        tot = dict(self.folded_counters)
        for w, _s in self.workers:
            for name, v in w.counters().items():
                tot[name] = tot.get(name, 0) + v
        return tot
