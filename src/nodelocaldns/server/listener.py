"""Listeners: one UDP and one TCP socket per ``dns://IP:port``, and where the cache's fast path runs.

The fast path itself (what a fresh hit is, the key codec, the splice) is the cache's:
plugins/cache/fastpath.py. TCP calls its reference function; the UDP thread inlines it (see
UDPWorker.run). Anything that is not a fresh hit goes to the slow path (``Listener.handle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from nodelocaldns.core.plugin import Next, Runtime
from nodelocaldns.core.ratelimit import RateLimiter
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns import wire
from nodelocaldns.errors import ShortHeader, WireError
from nodelocaldns.metrics.dnsstats import ServerStats, ZoneAcc, duration_bucket
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.cache.fastpath import DO_FLAGS, EDNS, NOEDNS, OPT_HEAD
from nodelocaldns.plugins.cache.handler import CacheHandler
from nodelocaldns.plugins.timeouts.setup import DEFAULT_WRITE as WRITE_TIMEOUT
from nodelocaldns.plugins.timeouts.setup import TimeoutsConfig
from nodelocaldns.plugins.timeouts.setup import for_listener as timeouts_for_listener
from nodelocaldns.server.settings import DEFAULT, ServerConfig

log = logging.getLogger("nodelocaldns")

_LEN = struct.Struct("!H")
_B0 = 0.00025
_UDP_BUF = 4097
_DRAIN_MAX = 65536  # datagrams read after the end-of-queue mark: bounded, whatever arrives
_perf = time.perf_counter
_ENABLE_CHAOS = frozenset({"chaos", "forward", "proxy"})  # CoreDNS dnsserver.EnableChaos


@dataclass(eq=False)
class Block:
    """A server block at runtime: its zones and its plugin chain (shared by all its listeners)."""

    zones: tuple[str, ...]
    chain: Next
    runtimes: list[Runtime] = field(default_factory=list)
    cache: CacheHandler | None = None  # the runtime that owns a fast path (see fast)
    fast: bool = False  # may the fast path answer for this block? (registry's fast-path-safe flags)
    metrics: bool = False  # count requests for coredns_dns_* (a block with prometheus)
    # What the plugins ahead of the cache make of a hit (core.plugin.Runtime): the fast path does it too.
    transform: Callable[[bytes], bytes] | None = None
    udp_max: int = fastpath.NO_CAP
    skips: frozenset[int] = frozenset()
    sockets: int = 0  # UDP sockets per listener address (multisocket); 0: the usable CPUs


class NativeSide(Protocol):
    """A listener's native UDP workers (server/native_udp.NativeUDPServer), as the listener uses them."""

    def lookup(self, data: bytes, now: float, tcp: bool) -> tuple[bytes, int] | None: ...

    def translate(self, k: int) -> tuple[int, ZoneAcc]: ...

    def shared_sockets(self) -> list[socket.socket]: ...

    @property
    def dropped(self) -> int: ...

    n_handed: int
    n_finished: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class Router:
    """Longest-suffix zone match for one listener; ``.`` is the catch-all if a block has it."""

    def __init__(self, zones: dict[str, Block]) -> None:
        self.zones = zones
        self.by_wire = {wire.text_to_wire(z): (z, b) for z, b in zones.items()}
        # lowercased question -> (success map, denial map, zone bits, zone accumulator); see Listener.fast
        self.memo: dict[bytes, fastpath.Route] = {}
        self.routes: dict[str, fastpath.Route] = {}  # one shared memo value per zone
        # CoreDNS lets other classes than IN in when any block of the listener has one of these.
        self.chaos = any(rt.name in _ENABLE_CHAOS for b in zones.values() for rt in b.runtimes)

    def route(self, qname: bytes, qtype: int) -> tuple[str, Block] | None:
        off = 0
        found: tuple[str, Block] | None = None
        while True:
            hit = self.by_wire.get(qname[off:])
            if hit is not None:
                # A DS query belongs to the parent side of a zone cut: keep looking for a parent zone.
                if qtype == 43 and off == 0 and found is None and qname != b"\x00":
                    found = hit
                else:
                    return hit
            if qname[off] == 0:
                return found
            off += qname[off] + 1


class Listener:
    """One ``dns://host:port``: owns its sockets, its router and its stats."""

    def __init__(
        self,
        host: str,
        port: int,
        router: Router,
        clock: Callable[[], float] = time.monotonic,
        config: ServerConfig = DEFAULT,
    ) -> None:
        self.host = host
        self.clock = clock  # the server's injected clock: every freshness and rate-limit decision
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.server = f"dns://{shown}:{port}"
        self.family = 2 if ":" in host else 1
        self.router = router
        self.stats = ServerStats(self.server, self.family)
        self.tasks: set[asyncio.Task[None]] = set()
        self.udp: UDPWorker | NativeSide | None = None
        self.native: NativeSide | None = None  # the native UDP workers, whose index TCP hits use too
        self.send_errors = 0
        self.fast_errors = 0
        self.tcp: asyncio.Server | None = None
        self.tcp_conns: set[TCPConnection] = set()
        self.max_tcp_conns = config.tcp_max_conns
        self.config = config
        self.tcp_idle = config.tcp_idle_timeout
        self.tcp_read_timeout = config.tcp_read_timeout
        self.tcp_write_timeout = WRITE_TIMEOUT
        self.tcp_max_queries = -1  # queries per connection; -1: unlimited
        self.memo_max = config.route_memo_max
        self.max_pending = config.slow_path_max
        self.tcp_pending = 0  # TCP queries spawned and not finished (the UDP thread keeps its own)
        self.tcp_paused: set[TCPConnection] = set()  # connections not read while tcp_pending is at the cap
        self.limiter = RateLimiter(burst=config.log_burst, window=config.log_window)
        self.malformed = 0
        self.panics = 0

    def blocks(self) -> dict[str, Block]:
        """zone -> block (the metrics view of a listener)."""
        return self.router.zones

    def set_router(self, router: Router) -> None:
        """Swap the zone table (a reload); sockets stay open, the hit memo starts empty."""
        self.router = router
        # ``timeouts`` of every block served here, in Corefile order (CoreDNS NewServer's walk).
        blocks = list(dict.fromkeys(router.zones.values()))
        base = TimeoutsConfig(self.config.tcp_read_timeout, WRITE_TIMEOUT, self.config.tcp_idle_timeout, -1)
        cfgs = [c for b in blocks for rt in b.runtimes for c in getattr(rt, "listener_timeouts", ())]
        t = timeouts_for_listener([base, *cfgs])
        self.tcp_read_timeout, self.tcp_write_timeout, self.tcp_idle = t.read, t.write, t.idle
        self.tcp_max_queries = t.max_tcp_queries

    # -- the fast path ---------------------------------------------------------------------------

    def fast(self, data: bytes, tcp: bool) -> bytes | None:
        """A fresh cache hit as final reply bytes (counted), or None: let the slow path decide."""
        t0 = _perf()
        nat = self.native
        if tcp and nat is not None:
            got = nat.lookup(data, self.clock(), True)
            if got is not None:
                return self._native_tcp_hit(nat, got, data, t0)
        hit = fastpath.answer(data, self.clock(), self.router.memo, tcp)
        if hit is None:
            return None
        reply, e, (_smap, _dmap, zb, acc, _tf, _cap), bits = hit
        dt = _perf() - t0
        # This runs in the event loop (TCP, and UDP datagrams read there: server/shared_udp.py), so
        # it counts in the loop's slots; ``stats.fast`` and ``acc[1]`` are the UDP thread's alone.
        if dt <= _B0:
            k = zb | e.sbase | (len(data) << 3) | (4 if tcp else 0) | bits
            fc = self.stats.fast_tcp
            fc[k] = fc.get(k, 0) + 1
        else:
            self._record_slow_hit(acc, e, data, reply, bool(bits & 2), "tcp" if tcp else "udp", dt)
        acc[2] += dt
        return reply

    def _native_tcp_hit(self, nat: NativeSide, got: tuple[bytes, int], data: bytes, t0: float) -> bytes:
        """A TCP hit the native index answered: counted as Listener.fast counts its own."""
        reply, raw = got
        k, acc = nat.translate(raw)
        k |= 4
        dt = _perf() - t0
        st = self.stats
        if dt <= _B0:
            st.fast_tcp[k] = st.fast_tcp.get(k, 0) + 1
        else:
            zone, _p, qtype, rcode, kind, do, qlen, _r = st.decode_fast(k)
            st.record((zone, "tcp", qtype, do, qlen, len(reply), rcode, "cache", duration_bucket(dt)), 0.0)
            st.hit_kinds[(zone, kind)] = st.hit_kinds.get((zone, kind), 0) + 1
        acc[2] += dt
        return reply

    def _record_slow_hit(
        self, acc: ZoneAcc, e: Any, data: bytes, reply: bytes, do: bool, proto: str, dt: float
    ) -> None:
        """A hit that took longer than the first duration bucket (the process was descheduled)."""
        self.stats.record(
            (acc.zone, proto, e.qtype, do, len(data), len(reply), e.rcode, "cache", duration_bucket(dt)), 0.0
        )
        self.stats.hit_kinds[(acc.zone, e.kind)] = self.stats.hit_kinds.get((acc.zone, e.kind), 0) + 1

    # -- the slow path ---------------------------------------------------------------------------

    def spawn(
        self,
        data: bytes,
        remote: tuple[str, int],
        proto: str,
        send: Callable[[bytes], None],
        done: Callable[[object], None] | None = None,
    ) -> None:
        t = asyncio.ensure_future(self.handle(data, remote, proto, send))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        if done is not None:
            t.add_done_callback(done)

    def dropped(self) -> dict[str, int]:
        """proto -> queries dropped unanswered at the slow path's cap; TCP is slowed down instead."""
        udp = self.udp.dropped if self.udp is not None else 0
        return {"udp": udp}

    def tcp_wake(self) -> None:
        """A TCP query finished: read the paused connections again while there is room."""
        while self.tcp_paused and self.tcp_pending < self.max_pending:
            self.tcp_paused.pop().resume()

    async def handle(
        self, data: bytes, remote: tuple[str, int], proto: str, send: Callable[[bytes], None]
    ) -> None:
        start = _perf()
        if len(data) >= wire.HEADER_LEN and not data[2] & 0x80:
            rejected = wire.reject(data)
            if rejected is not None:  # miekg/dns answers these itself: no chain, no metrics
                out = wire.bare_reply(data, rejected)
                if out is not None:
                    send(out)
                return
        try:
            q = wire.parse_query(data)
        except ShortHeader as e:  # too short, or a response: never answered
            self._bad(remote, str(e))
            return
        except WireError as e:
            self._bad(remote, str(e))
            out = wire.bare_reply(data, wire.FORMERR, question=True)
            if out is not None:
                send(out)
            return
        router = self.router
        if q.qclass != wire.CLASS_IN and not router.chaos:
            self._finish_error(data, q, wire.REFUSED, send, start, proto, "dropped")
            return
        if q.edns_version != 0:
            send(wire.badvers_reply(data, q))
            return
        router = self.router
        routed = router.route(q.qname, q.qtype)
        if routed is None:
            self._finish_error(data, q, wire.REFUSED, send, start, proto, "dropped")
            return
        zone, block = routed
        family = 2 if ":" in remote[0] else 1
        req = Request(data, q, remote, proto, family, self.server, zone, start)
        cache = block.cache
        qkey = b""
        if block.fast and cache is not None and q.qtype not in block.skips:
            qkey = fastpath.memo_key(data, q)
            if qkey:
                # The same bytes object keys the cache and the memo: ~80k names, one copy each.
                req.key = fastpath.flagged(qkey, q.do, q.cd)
        try:
            reply = await block.chain(req)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a plugin bug must cost one query, not the listener
            self.panics += 1
            log.exception("[ERROR] plugin panic while serving %s", req.qname)
            reply = Reply(None, wire.SERVFAIL, error=e)
        out = self.finalize(reply, req)
        send(out)
        if block.metrics:
            dt = _perf() - start
            self.stats.record(
                (
                    zone,
                    proto,
                    q.qtype,
                    q.do,
                    len(data),
                    len(out),
                    wire.rcode_of(out),
                    reply.plugin,
                    duration_bucket(dt),
                ),
                dt,
            )
        # Only a name the cache now holds is worth a memo entry: unique names that failed (a flood
        # toward a dead upstream) would otherwise fill the memo with routes to nothing.
        if qkey and cache is not None and cache.covers(q.qname) and cache.store.get(req.key) is not None:
            fastpath.remember(router.memo, router.routes, qkey, zone, cache.store.maps, self.stats.zone_acc(zone),
                              self.memo_max, block.transform, block.udp_max)  # fmt: skip

    def finalize(self, reply: Reply, req: Request) -> bytes:
        if reply.wire is None:
            return wire.error_reply(req.data, reply.rcode, req.q)
        if reply.final:
            return reply.wire
        try:
            body = wire.strip_opt(reply.wire)
            return wire.truncate(body, req.size_limit, wire.client_opt(req.q))
        except WireError:
            return wire.error_reply(req.data, wire.SERVFAIL, req.q)

    def _finish_error(self, data: bytes, q: wire.Query, rcode: int, send: Callable[[bytes], None], start: float,
                      proto: str, zone: str) -> None:  # fmt: skip
        out = wire.error_reply(data, rcode, q)
        send(out)
        dt = _perf() - start
        self.stats.record(
            (zone, proto, q.qtype, q.do, len(data), len(out), rcode, "", duration_bucket(dt)), dt
        )

    def fast_failed(self, exc: BaseException) -> None:
        """The fast path raised (a bug): the packet went to the slow path; say so, rate-limited."""
        self.fast_errors += 1
        ok, suppressed = self.limiter.allow("fast path", self.clock())
        if ok:
            log.error("[ERROR] fast path failed, packet served by the slow path: %r", exc, exc_info=exc)

    def _bad(self, remote: tuple[str, int], why: str) -> None:
        self.malformed += 1
        ok, suppressed = self.limiter.allow("malformed", self.clock())
        if suppressed:
            log.warning("[WARNING] %d more malformed packets suppressed", suppressed)
        if ok:
            log.warning("[WARNING] malformed query from %s:%d: %s", remote[0], remote[1], why)

    async def drain(self, timeout: float) -> None:
        """Wait for in-flight queries, including packets the UDP thread handed off and the loop has
        not started yet (they become tasks while we wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            pending = [t for t in self.tasks if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=left)
            elif self.udp is not None and self.udp.n_handed != self.udp.n_finished:
                await asyncio.sleep(0.005)
            else:
                return


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
        self.dropped = 0  # the slow path was full: dropped unanswered (written only by this thread)
        self.cap = listener.max_pending
        # Two lanes, drained in order: packets for a name the cache holds (expired: serve_stale or a
        # refresh) come before the rest, and may use a reserve above the cap, so a flood of names
        # nobody asked before cannot starve the names the cache is there for.
        self.lanes: tuple[deque[tuple[Callable[..., None], tuple[Any, ...]]], ...] = (deque(), deque())
        self.reserve = max(1, listener.max_pending // 4)
        self.scheduled = False  # a drain is due on the loop (one wakeup for a batch, not per packet)
        self.thread = threading.Thread(target=self.run, name=f"udp {listener.server}", daemon=True)

    def start(self) -> None:
        self.thread.start()

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
        for _ in range(_DRAIN_MAX):
            try:
                data, addr = self.sock.recvfrom(_UDP_BUF, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    return
                continue  # an ICMP error reported on the connected socket: not a datagram
            if data:
                self.to_slow(data, addr)

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
        self.n_handed += 1
        self.lanes[lane].append((fn, args))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon_threadsafe(self.drain)
        return True

    def drain(self, batch: int = 64) -> None:
        """On the loop: start up to ``batch`` handed-off packets, cached names first, then yield."""
        self.scheduled = False  # before looking: a packet appended from now on schedules a drain
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

    def to_slow(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.handoff(self.slow, data, addr):
            self.shed(data, addr)

    def to_slow_cached(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.handoff(self.slow, data, addr, lane=0):
            self.shed(data, addr)

    def shed(self, data: bytes, addr: tuple[str, int]) -> None:
        """The slow path is full: drop and count. Dropped, not answered: a REFUSED per packet from
        this thread (measured) made it fall behind the socket at 15k qps, and the cached names it is
        there for waited in the kernel's queue; a client retries a dropped query after its timeout."""
        self.dropped += 1

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
        while True:
            try:
                # A 64 KiB buffer costs ~1 us per packet in allocation; no sane query is near 4 KiB.
                # A datagram that fills the buffer was cut short and goes to the slow path (FORMERR).
                data, addr = recv(_UDP_BUF)
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
                if now >= e.memo_until and e.body(now) is None:
                    self.to_slow_cached(data, addr)  # expired: serve_stale or a refresh
                    continue
                if raw and data[2:4] == b"\x01\x00":
                    if edns:
                        t = e.tail_edns
                        if not t:
                            t = e.tail_edns = e.heads[5] + q + e.memo
                        reply = data[:2] + t + opt
                    else:
                        t = e.tail
                        if not t:
                            t = e.tail = e.heads[1] + q + e.memo
                        reply = data[:2] + t
                else:
                    head = e.heads[(data[2] & 1) | ((data[3] & 0x20) >> 4) | edns]
                    reply = b"".join((data[:2], head, data[12:qend], e.memo, opt if edns else b""))
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


class TCPConnection(asyncio.Protocol):
    """Length-framed queries, several per connection, answered as each completes (RFC 7766)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.inflight = 0
        self.queries = 0
        self.paused = False  # the listener's TCP slow path is full: not read until a query finishes
        self.timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        lst = self.listener
        if len(lst.tcp_conns) >= lst.max_tcp_conns:
            transport.abort()  # type: ignore[attr-defined]
            return
        lst.tcp_conns.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("", 0)
        self._arm(lst.tcp_idle)

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._timeout)

    def _timeout(self) -> None:
        if self.paused or self.inflight and (not self.buf or self._done_reading()):
            self._arm(self.listener.tcp_idle)
            return
        if self.transport is not None:
            self.transport.close()

    def _done_reading(self) -> bool:
        """``timeouts { maxtcpqueries N }``: after N queries the connection takes no more."""
        limit = self.listener.tcp_max_queries
        return limit != -1 and self.queries >= limit

    def data_received(self, data: bytes) -> None:
        if self._done_reading():
            return
        self.buf += data
        self._process()

    def _process(self) -> None:
        lst = self.listener
        while len(self.buf) >= 2 and not self._done_reading():
            if lst.tcp_pending >= lst.max_pending:
                # Backpressure instead of a queue: the kernel's receive window holds the rest.
                self.paused = True
                lst.tcp_paused.add(self)
                if self.transport is not None:
                    self.transport.pause_reading()
                break
            n = (self.buf[0] << 8) | self.buf[1]
            if len(self.buf) < 2 + n:
                break
            msg = bytes(self.buf[2 : 2 + n])
            del self.buf[: 2 + n]
            self.queries += 1
            try:
                out = lst.fast(msg, True)
            except Exception as exc:  # as on UDP: a fast-path bug costs a slow answer, never the connection
                lst.fast_failed(exc)
                out = None
            if out is not None:
                self.send(out)
            else:
                self.inflight += 1
                lst.tcp_pending += 1
                lst.spawn(msg, self.peer, "tcp", self.send, self._query_done)
        if self._done_reading():
            self.buf.clear()
            self._close_when_answered()
            return
        # A half-sent frame gets the short read timeout; a clean boundary (or a pause that is ours,
        # not the client's) gets the idle timeout.
        self._arm(lst.tcp_read_timeout if self.buf and not self.paused else lst.tcp_idle)

    def _close_when_answered(self) -> None:
        if self.inflight == 0 and self.transport is not None:
            self.transport.close()  # flushes what was written first

    def _query_done(self, _t: object) -> None:
        self.inflight -= 1
        self.listener.tcp_pending -= 1
        if self._done_reading():
            self._close_when_answered()
        self.listener.tcp_wake()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._process()

    def send(self, b: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(_LEN.pack(len(b)) + b)
            if t.get_write_buffer_size() and self.write_timer is None:
                # The kernel would not take the whole reply: the client must read it within ``write``.
                self.write_timer = asyncio.get_running_loop().call_later(
                    self.listener.tcp_write_timeout, self._write_timeout
                )

    def _write_timeout(self) -> None:
        self.write_timer = None
        t = self.transport
        if t is not None and t.get_write_buffer_size():
            t.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.tcp_conns.discard(self)
        self.listener.tcp_paused.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.write_timer is not None:
            self.write_timer.cancel()
        self.transport = None
