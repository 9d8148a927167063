"""Listeners: one UDP and one TCP socket per ``dns://IP:port``, and where the cache's fast path runs.

The fast path itself (what a fresh hit is, the key codec, the splice) is the cache's:
plugins/cache/fastpath.py. TCP (server/tcp.py) calls its reference function; the UDP thread
(server/udp.py UDPWorker.run) inlines it. Anything that is not a fresh hit goes to the slow path
(``Listener.handle``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from nodelocaldns.core.direct import need_task
from nodelocaldns.core.plugin import Next, Runtime
from nodelocaldns.core.ratelimit import RateLimiter
from nodelocaldns.core.request import Exchanged, Reply, Request
from nodelocaldns.core.timeouts import DEFAULT_WRITE as WRITE_TIMEOUT
from nodelocaldns.core.timeouts import TimeoutsConfig
from nodelocaldns.core.timeouts import for_listener as timeouts_for_listener
from nodelocaldns.dns import wire
from nodelocaldns.errors import ShortHeader, WireError
from nodelocaldns.metrics.dnsstats import ServerStats, ZoneAcc, duration_bucket
from nodelocaldns.plugins.cache import fastpath
from nodelocaldns.plugins.cache.handler import CacheHandler
from nodelocaldns.server.direct import Driver
from nodelocaldns.server.rcvqueue import queue_drops
from nodelocaldns.server.settings import DEFAULT, ServerConfig
from nodelocaldns.server.sides import NativeSide, SharedGate, TCPSide, UDPSide

log = logging.getLogger("nodelocaldns")

_LEN = struct.Struct("!H")
_B0 = 0.00025
_perf = time.perf_counter
# A routed query on its way into its block: (request, block, the router that routed it, memo key).
_Admitted = tuple[Request, "Block", "Router", bytes]
_NX_COUNTERS = ("nx_sent", "nx_replies", "nx_timeouts", "nx_errors", "nx_mismatched")  # Worker.counters()


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
    shuffle: Callable[[bytes], bool] | None = None  # transform is round_robin alone: the native index's
    udp_max: int = fastpath.NO_CAP
    skips: frozenset[int] = frozenset()
    sockets: int = 0  # UDP sockets per listener address (multisocket); 0: the usable CPUs
    after_cache: Next | None = None  # the chain behind the cache (a refresh the native worker asks for)
    # May a UDP miss run this chain without a Task (server/direct.py)? Only in-tree plugins: their
    # waits either park on forward's UDP pool or hand off to a Task (core/direct.need_task).
    direct: bool = False
    chaos: bool = False  # a plugin here lets other classes than IN in (core.plugin.Plugin.chaos)
    # A native exchange's result answered without the chain (server/native_exchange.settler).
    settle: Callable[[Request], Reply | None] | None = None


class Router:
    """Longest-suffix zone match for one listener; ``.`` is the catch-all if a block has it."""

    def __init__(self, zones: dict[str, Block]) -> None:
        self.zones = zones
        self.by_wire = {wire.text_to_wire(z): (z, b) for z, b in zones.items()}
        self._lens = frozenset(len(w) for w in self.by_wire)  # a suffix of another length is no zone
        # lowercased question -> (success map, denial map, zone bits, zone accumulator); see Listener.fast
        self.memo: dict[bytes, fastpath.Route] = {}
        self.routes: dict[str, fastpath.Route] = {}  # one shared memo value per zone
        # CoreDNS lets other classes than IN in when any block of the listener has a plugin that
        # asks for it (Plugin.chaos: forward's).
        self.chaos = any(b.chaos for b in zones.values())

    def route(self, qname: bytes, qtype: int) -> tuple[str, Block] | None:
        off = 0
        n = len(qname)
        lens = self._lens
        found: tuple[str, Block] | None = None
        while True:
            hit = self.by_wire.get(qname[off:]) if n - off in lens else None
            if hit is not None:
                # A DS query belongs to the parent side of a zone cut: keep looking for a parent zone.
                if qtype == 43 and off == 0 and found is None and qname != b"\x00":
                    found = hit
                else:
                    return hit
            c = qname[off]
            if c == 0:
                return found
            off += c + 1


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
        self.direct: set[Driver] = set()  # slow-path queries stepped by hand, not (yet) Tasks
        self.udp: UDPSide | None = None
        self.shared: SharedGate | None = None  # the slow path's bound for peers' sockets (slowgate.py)
        self.native: NativeSide | None = None  # the native UDP workers, whose index TCP hits use too
        self.send_errors = 0
        self.fast_errors = 0
        self.tcp: asyncio.Server | None = None
        self.tcp_conns: set[TCPSide] = set()
        self.max_tcp_conns = config.tcp_max_conns
        self.config = config
        self.tcp_idle = config.tcp_idle_timeout
        self.tcp_read_timeout = config.tcp_read_timeout
        self.tcp_write_timeout = WRITE_TIMEOUT
        self.tcp_max_queries = -1  # queries per connection; -1: unlimited
        self.memo_max = config.route_memo_max
        self.max_pending = config.slow_path_max
        self.tcp_pending = 0  # TCP queries spawned and not finished (the UDP thread keeps its own)
        self.tcp_paused: set[TCPSide] = set()  # connections not read while tcp_pending is at the cap
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
        cfgs = [c for b in blocks for rt in b.runtimes for c in rt.listener_timeouts]
        t = timeouts_for_listener([base, *cfgs])
        self.tcp_read_timeout, self.tcp_write_timeout, self.tcp_idle = t.read, t.write, t.idle
        self.tcp_max_queries = t.max_tcp_queries

    # -- the fast path ---------------------------------------------------------------------------

    def fast(self, data: bytes, tcp: bool) -> bytes | None:
        """A fresh cache hit as final reply bytes (counted), or None: let the slow path decide."""
        t0 = _perf()
        nat = self.native
        if nat is not None:
            # The index's names are not in the memo (see handle): TCP, a datagram the loop read
            # (shared_udp) and one a worker handed over before its answer was stored look here.
            got = nat.lookup(data, self.clock(), tcp)
            if got is not None:
                return self._native_hit(nat, got, data, t0, tcp)
        memo = self.router.memo
        if not memo:  # answer() finds nothing in an empty memo (the native index's names are not in it)
            return None
        hit = fastpath.answer(data, self.clock(), memo, tcp)
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

    def _native_hit(
        self, nat: NativeSide, got: tuple[bytes, int], data: bytes, t0: float, tcp: bool
    ) -> bytes:
        """A hit the native index answered in the loop: counted as Listener.fast counts its own."""
        reply, raw = got
        k, acc = nat.translate(raw)
        if tcp:
            k |= 4
        dt = _perf() - t0
        st = self.stats
        if dt <= _B0:
            st.fast_tcp[k] = st.fast_tcp.get(k, 0) + 1
        else:
            zone, _p, qtype, rcode, kind, do, qlen, _r = st.decode_fast(k)
            proto = "tcp" if tcp else "udp"
            st.record((zone, proto, qtype, do, qlen, len(reply), rcode, "cache", duration_bucket(dt)), 0.0)
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
        t = asyncio.get_running_loop().create_task(self.handle(data, remote, proto, send))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        if done is not None:
            t.add_done_callback(done)

    def start_direct(
        self,
        data: bytes,
        remote: tuple[str, int],
        send: Callable[[bytes], None],
        done: Callable[[object], None] | None = None,
    ) -> None:
        """A UDP query into the slow path without a Task (server/direct.py); ``done`` as spawn's."""
        coro = self.handle(data, remote, "udp", send)
        Driver(coro, asyncio.get_running_loop(), self.direct, self.tasks, done).start()

    def cancel_direct(self) -> None:
        """Shutdown: cancel the hand-stepped queries still waiting (their Tasks' fate, see drain)."""
        for d in list(self.direct):
            d.cancel()

    def dropped(self) -> dict[str, int]:
        """proto -> queries dropped unanswered at the slow path's cap; TCP is slowed down instead."""
        udp = self.udp.dropped if self.udp is not None else 0
        return {"udp": udp + (self.shared.dropped if self.shared is not None else 0)}

    def refused(self) -> dict[str, int]:
        """proto -> queries answered REFUSED at once at the slow path's cap (UDP only, as dropped)."""
        udp = self.udp.refused if self.udp is not None else 0
        return {"udp": udp + (self.shared.refused if self.shared is not None else 0)}

    def native_exchanges(self) -> dict[str, int]:
        """result -> misses the native workers sent upstream themselves (server/native_exchange.py)."""
        c = self.native.counters() if self.native is not None else {}
        return {k[3:]: c.get(k, 0) for k in _NX_COUNTERS}

    def queue_drops(self) -> dict[str, int]:
        """proto -> datagrams the kernel dropped at this listener's full UDP receive queues (never
        read, so neither answered nor in any other count)."""
        return {"udp": queue_drops(self.udp.shared_sockets()) if self.udp is not None else 0}

    def tcp_wake(self) -> None:
        """A TCP query finished: read the paused connections again while there is room."""
        while self.tcp_paused and self.tcp_pending < self.max_pending:
            self.tcp_paused.pop().resume()

    async def handle(self, data: bytes, remote: tuple[str, int], proto: str, send: Callable[[bytes], None],
                     pre: Exchanged | None = None) -> None:  # fmt: skip
        got = self._admit(data, remote, proto, send, pre)
        if got is not None:
            await self._chain(got, send)

    def settle(self, data: bytes, remote: tuple[str, int], send: Callable[[bytes], None],
               pre: Exchanged) -> Coroutine[Any, Any, None] | None:  # fmt: skip
        """A native worker's exchange of a UDP query (``pre``), answered, counted and sent now
        when its block settles it without the chain (Block.settle); else the coroutine that runs
        the chain with it, as ``handle`` would. None: nothing left to run."""
        got = self._admit(data, remote, "udp", send, pre)
        if got is None:
            return None
        settle = got[1].settle
        if settle is None:
            return self._chain(got, send)
        try:
            reply = settle(got[0])
        except Exception as e:  # as in _chain: a plugin bug costs one query
            reply = self._panic(got[0], e)
        if reply is None:
            return self._chain(got, send)
        self._complete(reply, got, send)
        return None

    def _admit(self, data: bytes, remote: tuple[str, int], proto: str, send: Callable[[bytes], None],
               pre: Exchanged | None) -> _Admitted | None:  # fmt: skip
        """The query parsed and routed into a Request for its block's chain; None: answered (an
        error reply) or dropped here."""
        start = _perf() if pre is None else _perf() - pre.seconds  # it arrived before the upstream asked
        # A native worker exchanges only plain queries (QUERY, one question, no answer or
        # authority records, at most an OPT): reject() passes them all.
        if pre is None and len(data) >= wire.HEADER_LEN and not data[2] & 0x80:
            rejected = wire.reject(data)
            if rejected is not None:  # miekg/dns answers these itself: no chain, no metrics
                out = wire.bare_reply(data, rejected)
                if out is not None:
                    send(out)
                return None
        try:
            q = wire.parse_query(data)
        except ShortHeader as e:  # too short, or a response: never answered
            self._bad(remote, str(e))
            return None
        except WireError as e:
            self._bad(remote, str(e))
            out = wire.bare_reply(data, wire.FORMERR, question=True)
            if out is not None:
                send(out)
            return None
        router = self.router
        if q.qclass != wire.CLASS_IN and not router.chaos:
            self._finish_error(data, q, wire.REFUSED, send, start, proto, "dropped")
            return None
        if q.edns_version != 0:
            send(wire.badvers_reply(data, q))
            return None
        routed = router.route(q.qname, q.qtype)
        if routed is None:
            self._finish_error(data, q, wire.REFUSED, send, start, proto, "dropped")
            return None
        zone, block = routed
        family = 2 if ":" in remote[0] else 1
        req = Request(data, q, remote, proto, family, self.server, zone, start, pre=pre)
        cache = block.cache
        qkey = b""
        if block.fast and cache is not None and q.qtype not in block.skips:
            qkey = fastpath.memo_key(data, q)
            if qkey:
                # The same bytes object keys the cache and the memo: ~80k names, one copy each.
                req.key = fastpath.flagged(qkey, q.do, q.cd)
                req.route = routed
        return req, block, router, qkey

    async def _chain(self, got: _Admitted, send: Callable[[bytes], None]) -> None:
        req, block = got[0], got[1]
        if not block.direct:
            await need_task()  # a plugin that may need a current Task: never stepped by hand
        try:
            reply = await block.chain(req)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a plugin bug must cost one query, not the listener
            reply = self._panic(req, e)
        self._complete(reply, got, send)

    def _panic(self, req: Request, e: Exception) -> Reply:
        self.panics += 1
        log.exception("[ERROR] plugin panic while serving %s", req.qname)
        return Reply(None, wire.SERVFAIL, error=e)

    def _complete(self, reply: Reply, got: _Admitted, send: Callable[[bytes], None]) -> None:
        req, block, router, qkey = got
        q, zone, cache = req.q, req.zone, block.cache
        out = self.finalize(reply, req)
        # Only a name the cache now holds is worth a memo entry: unique names that failed (a flood
        # toward a dead upstream) would otherwise fill the memo with routes to nothing. Noted
        # before the reply goes out, so the client's next query already finds it on the fast path.
        # A name the native index holds is found there (Listener.fast): the memo would only cost
        # memory (~80k names in four full caches, and routes to evicted names until it clears).
        nat = self.native
        held = cache.store.get(req.key) if qkey and cache is not None else None
        if (held is not None and (nat is None or not nat.holds(req.key, held))
                and cache is not None and cache.covers(q.qname)):  # fmt: skip
            fastpath.remember(router.memo, router.routes, qkey, zone, cache.store.maps, self.stats.zone_acc(zone),
                              self.memo_max, block.transform, block.udp_max)  # fmt: skip
        send(out)
        if block.metrics:
            dt = _perf() - req.start
            rc = wire.rcode_of(out)
            plugin = reply.plugin
            self.stats.record((zone, req.proto, q.qtype, q.do, len(req.data), len(out), rc, plugin, duration_bucket(dt)), dt)  # fmt: skip

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
