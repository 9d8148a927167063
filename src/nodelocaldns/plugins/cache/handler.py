"""The ``cache`` plugin in the query path: hits, misses, prefetch and serve_stale.

The common hit never reaches this code: the listener serves it straight from ``Store`` through
the cache's fast path (fastpath.py). This handler covers everything else and is the reference behaviour the fast
path must agree with.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Callable

from nodelocaldns.core.plugin import Next
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.core.zones import in_zones
from nodelocaldns.dns import wire
from nodelocaldns.errors import UpstreamError, WireError
from nodelocaldns.plugins.cache.classify import DENIAL, SUCCESS, RType, Verdict, classify
from nodelocaldns.plugins.cache.entry import Cached, Entry
from nodelocaldns.plugins.cache.fastpath import key_of
from nodelocaldns.plugins.cache.metrics import CacheCounters, CacheStats
from nodelocaldns.plugins.cache.setup import CacheConfig, effective_capacity

log = logging.getLogger("nodelocaldns.cache")

_QT = struct.Struct("!HH")
_TTL = struct.Struct("!I")
_ZONE_XFR = (wire.TYPE_AXFR, wire.TYPE_IXFR)
# How long a miss waits for the same question's exchange in flight before it asks for itself. A
# cluster's DNS answers in a few ms; the bound is for a leader that waits on its followers: a
# forwarding loop, whose queries come back as the same question (the loop plugin must see them).
FOLLOW_WAIT = 0.25
_LATE = object()  # the leader was not back within FOLLOW_WAIT


def _release(gate: asyncio.Future[object]) -> None:
    if not gate.done():
        gate.set_result(_LATE)


class CacheHandler:
    name = "cache"

    def __init__(self, cfg: CacheConfig, zones: tuple[str, ...], clock: Callable[[], float]) -> None:
        from nodelocaldns.plugins.cache.store import Store

        self.cfg = cfg
        self.zones = cfg.zones or zones
        self.zone_label = ",".join(self.zones)
        self._zone_wire = tuple(wire.text_to_wire(z) for z in self.zones)
        self._disable = (
            tuple(wire.text_to_wire(z) for z in cfg.disable_success),
            tuple(wire.text_to_wire(z) for z in cfg.disable_denial),
        )
        self.store = Store(effective_capacity(cfg.success_cap), effective_capacity(cfg.denial_cap))
        self.clock = clock
        self.counters = CacheStats()
        self._tasks: set[asyncio.Task[None]] = set()
        # FAILURE_RECHECK: key -> when a stale entry whose refresh failed may be refreshed again.
        # Kept here, not in Entry: only failing names pay for it.
        self._retry_after: dict[bytes, float] = {}
        self._late: dict[bytes, bool] = {}  # a verify that outlived VERIFY_TIMEOUT is still running
        # key -> the miss in flight for it: None, or once a follower waits, a Future resolved with
        # the leader's reply once stored, or with _LATE after FOLLOW_WAIT (see serve and _follow).
        self._leading: dict[bytes, asyncio.Future[object] | None] = {}
        # serve_stale_policy prefer_positive acts only while serve_stale is on (CoreDNS staleUpTo > 0).
        self._prefer = cfg.prefer_positive and cfg.serve_stale > 0

    def covers(self, qname: bytes) -> bool:
        return in_zones(qname, self._zone_wire)

    async def serve(self, req: Request, next_: Next) -> Reply:
        q = req.q
        if not self.covers(q.qname) or q.qtype in (wire.TYPE_AXFR, wire.TYPE_IXFR):
            return await next_(req)
        now = self.clock()
        key = req.key or key_of(q)
        c = self.counters.for_server(req.server)
        c.requests += 1
        # A NOTIFY (or any other opcode) is never answered from the cache: the upstream answers it.
        e = None if q.opcode else self._lookup(key, now)
        if e is not None:
            body = e.body(now)
            if body is not None:
                c.hits[e.kind] += 1
                self._maybe_prefetch(e, req, key, now, next_, c)
                return Reply(e.render(req.data, q, body, req.size_limit), e.rcode, "cache", final=True)
            stale_for = now - e.expires
            if self.cfg.serve_stale > 0 and stale_for < self.cfg.serve_stale:
                return await self._serve_stale(e, req, key, now, next_, c)
        c.misses += 1
        if q.opcode:
            return self._store(await next_(req), req, key, c)
        if key in self._leading:
            return await self._follow(req, key, next_, c)
        # The leader: the same questions arriving meanwhile wait for this exchange (``_follow``)
        # instead of each opening one: a newly started agent's empty cache under load sent ~30 for
        # one name at once. No Future until a follower comes: most misses have none.
        self._leading[key] = None
        reply: Reply | None = None
        try:
            reply = self._store(await next_(req), req, key, c)
            return reply
        finally:
            gate = self._leading.pop(key)
            if gate is not None and not gate.done():
                gate.set_result(reply)  # None (raised, cancelled): the followers ask for themselves

    async def _follow(self, req: Request, key: bytes, next_: Next, c: CacheCounters) -> Reply:
        gate = self._leading[key]
        if gate is None:
            loop = asyncio.get_running_loop()
            gate = self._leading[key] = loop.create_future()
            loop.call_later(FOLLOW_WAIT, _release, gate)
        if not gate.done():
            await asyncio.shield(gate)
        led = gate.result()
        if led is not _LATE:
            now = self.clock()
            e = self._lookup(key, now)
            body = e.body(now) if e is not None else None
            if e is not None and body is not None:
                c.coalesced += 1
                return Reply(e.render(req.data, req.q, body, req.size_limit), e.rcode, "cache", final=True)
            if isinstance(led, Reply) and led.wire is None and isinstance(led.error, UpstreamError):
                # The upstream exchange failed (forward's SERVFAIL, logged for the leader too): this
                # question would have waited as long for the same answer.
                c.coalesced += 1
                return Reply(None, led.rcode, led.plugin, error=led.error)
        # Not cacheable (TTL 0, truncated, a disabled zone...) or not back in time: its own exchange.
        return self._store(await next_(req), req, key, c)

    def _lookup(self, key: bytes, now: float) -> Cached | None:
        if self._prefer:
            return self.store.get_preferring(key, now, self.cfg.serve_stale)
        return self.store.get(key)

    def settle(self, req: Request, answer: Callable[[Request], Reply | None]) -> Reply | None:
        """``serve`` for a native exchange's miss in one synchronous step: a name this cache holds
        nothing for, answered by ``answer`` (the forwarding plugin's Runtime.settle_exchanged),
        stored and rendered as ``serve`` would. None (nothing counted): ``serve`` decides, e.g.
        the name was stored meanwhile, or the forwarding plugin must try again."""
        q = req.q
        if q.opcode or self._prefer or q.qtype in _ZONE_XFR or not self.covers(q.qname):
            return None
        key = req.key or key_of(q)
        if self.store.get(key) is not None:  # serve answers it from the cache (fresh or stale)
            return None
        reply = answer(req)
        if reply is None:
            return None
        c = self.counters.for_server(req.server)
        c.requests += 1
        c.misses += 1
        return self._store(reply, req, key, c)

    def _store(self, reply: Reply, req: Request, key: bytes, c: CacheCounters, aa: bool = False) -> Reply:
        if reply.wire is None or req.q.qtype in (wire.TYPE_AXFR, wire.TYPE_IXFR):
            return reply
        now = self.clock()
        q = req.q
        try:
            if not _matches(reply.wire, q):
                c.drops += 1
                return reply
            scan = reply.scan
            walked = scan[1:] if scan is not None and scan[0] is reply.wire else None
            verdict = classify(reply.wire, q.qname, q.qtype, self.cfg, walked)
        except WireError:
            c.drops += 1
            return reply
        if verdict.kind is None:
            return _capped(reply, verdict)
        disabled = self._disable[verdict.kind]
        if disabled and in_zones(q.qname, disabled):  # most caches disable no zone: no call
            return _capped(reply, verdict)
        entry = Entry(reply.wire, verdict, now, q.do, q.cd, q.qtype, self.cfg.keepttl)
        if self._prefer:
            # Cached NoError replies with answers always answer (classify drops the others).
            answering = verdict.rtype is RType.NOERROR and reply.wire[6:8] != b"\x00\x00"
            self.store.put_preferring(key, entry, now, answering)
        else:
            self.store.put(key, entry, now, req.route if key is req.key else None)
        if req.internal:
            return reply
        body = entry.body(now)
        assert body is not None
        out = entry.render(req.data, q, body, req.size_limit, aa=aa)
        return Reply(out, entry.rcode, reply.plugin, final=True)

    def _maybe_prefetch(
        self, e: Cached, req: Request, key: bytes, now: float, next_: Next, c: CacheCounters
    ) -> None:
        amount = self.cfg.prefetch_amount
        if amount == 0:
            return
        if now - e.last_hit > self.cfg.prefetch_window:
            e.hits = 1
        else:
            e.hits += 1
        e.last_hit = now
        threshold = math.ceil(self.cfg.prefetch_percentage / 100 * e.orig)
        if e.hits >= amount and e.ttl(now) <= threshold and not e.refreshing:
            c.prefetch += 1
            self._refresh(e, req, key, next_, c)

    def _may_refresh_stale(self, key: bytes, now: float) -> bool:
        until = self._retry_after.get(key)
        if until is None:
            return True
        if now < until:
            return False
        del self._retry_after[key]
        return True

    def _refresh_done(self, key: bytes, ok: bool) -> None:
        """CoreDNS endRefresh: a failed stale refresh holds off the next one for FAILURE_RECHECK."""
        if ok or self.cfg.stale_recheck <= 0:
            self._retry_after.pop(key, None)
        else:
            self._retry_after[key] = self.clock() + self.cfg.stale_recheck

    def native_stale(self) -> tuple[float, int] | None:
        """(window, response TTL) if a native worker may serve this cache's stale answers itself:
        immediate mode (verify waits for the upstream first) without prefer_positive (whose lookup
        may pick the other cache). None: they stay on ``_serve_stale``."""
        cfg = self.cfg
        if cfg.serve_stale <= 0 or cfg.stale_verify or self._prefer:
            return None
        if not 0 <= cfg.stale_response_ttl < 1 << 32:
            return None
        return cfg.serve_stale, cfg.stale_response_ttl

    def refresh_stale(self, req: Request, key: bytes, next_: Next, done: Callable[[], object]) -> None:
        """A native worker answered ``req`` stale and counted it (requests, served_stale): start the
        refresh ``_serve_stale`` would start. ``done`` runs once no refresh of ``key`` is in
        flight any more, or, after a failed one, once FAILURE_RECHECK allows the next."""
        now = self.clock()
        e = self.store.get(key)
        if e is None or e.ttl(now) > 0 or not now - e.expires < self.cfg.serve_stale:
            done()  # gone, refreshed meanwhile, or past the window: nothing to refresh
            return
        if e.refreshing:  # a refresh of our own (a stale answer Python sent) is in flight
            done()
            return
        if not self._may_refresh_stale(key, now):
            asyncio.get_running_loop().call_later(max(self._retry_after[key] - now, 0.0), done)
            return
        c = self.counters.for_server(req.server)
        self._refresh(e, req, key, next_, c, stale=True, on_done=done)

    def _refresh(
        self, e: Cached, req: Request, key: bytes, next_: Next, c: CacheCounters, stale: bool = False,
        on_done: Callable[[], object] | None = None,
    ) -> None:  # fmt: skip
        e.refreshing = True
        hits = e.hits
        internal = Request(
            req.data, req.q, req.remote, "tcp", req.family, req.server, req.zone, req.start, True
        )

        async def run() -> None:
            ok = False
            try:
                reply = await next_(internal)
                # A stale entry is only replaced by an answer (CoreDNS's verifyStaleResponseWriter):
                # a failed refresh leaves it intact.
                ok = not stale or self._accepted(reply, internal.q)
                if ok or (stale and self._prefer):
                    # prefer_positive caches what a stale refresh brought without serving it.
                    self._store(reply, internal, key, c)
                fresh = self.store.get(key)
                # A Mirrored entry keeps no hit count (only prefetch reads it, and a prefetching
                # cache mirrors nothing); setting one would raise.
                if isinstance(fresh, Entry) and fresh is not e:
                    fresh.hits = hits
            except Exception:  # a background refresh must never take the server down
                log.exception("cache refresh failed")
            finally:
                e.refreshing = False
                if stale:
                    self._refresh_done(key, ok)
                if on_done is not None:
                    hold = self._retry_after.get(key, 0.0) - self.clock()
                    if hold > 0:  # failed: the next refresh waits for FAILURE_RECHECK
                        asyncio.get_running_loop().call_later(hold, on_done)
                    else:
                        on_done()

        t = asyncio.ensure_future(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _serve_stale(
        self, e: Cached, req: Request, key: bytes, now: float, next_: Next, c: CacheCounters
    ) -> Reply:
        old = e.body_with_ttl(self.cfg.stale_response_ttl)
        if old is None:  # a mirrored entry whose index went away with its generation: a miss
            c.misses += 1
            return self._store(await next_(req), req, key, c)
        stale = Reply(e.render(req.data, req.q, old, req.size_limit), e.rcode, "cache", final=True)
        if not self.cfg.stale_verify:
            c.served_stale += 1
            if not e.refreshing and self._may_refresh_stale(key, now):
                self._refresh(e, req, key, next_, c, stale=True)
            return stale
        if self.cfg.stale_recheck > 0:
            # In flight or failed recently: the stale entry at once, no other upstream query.
            if e.refreshing or not self._may_refresh_stale(key, now):
                c.served_stale += 1
                return stale
            e.refreshing = True
        try:
            return await self._verify(e, stale, req, key, next_, c)
        finally:
            if self.cfg.stale_recheck > 0 and not self._late.get(key):
                e.refreshing = False

    async def _verify(
        self, e: Cached, stale: Reply, req: Request, key: bytes, next_: Next, c: CacheCounters
    ) -> Reply:
        task = asyncio.ensure_future(next_(req))
        timeout = self.cfg.stale_verify_timeout
        if timeout > 0:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                # Serve stale now; the verify goes on and refreshes the entry when it lands.
                internal = Request(req.data, req.q, req.remote, req.proto, req.family, req.server, req.zone,
                                   req.start, True)  # fmt: skip
                self._late[key] = True
                task.add_done_callback(lambda t: self._verified_late(t, e, internal, key, c))
                c.served_stale += 1
                return stale
        reply = await task
        if self._accepted(reply, req.q):
            self._refresh_done(key, True)
            return self._store(reply, req, key, c)
        if self._prefer:
            quiet = Request(req.data, req.q, req.remote, req.proto, req.family, req.server, req.zone,
                            req.start, True)  # fmt: skip
            self._store(reply, quiet, key, c)
        self._refresh_done(key, False)
        c.served_stale += 1
        return stale

    def _verified_late(
        self, t: asyncio.Future[Reply], e: Cached, req: Request, key: bytes, c: CacheCounters
    ) -> None:
        self._late.pop(key, None)
        done = not t.cancelled() and t.exception() is None
        ok = done and self._accepted(t.result(), req.q)
        if ok or (done and self._prefer):
            self._store(t.result(), req, key, c)
        self._refresh_done(key, ok)
        if self.cfg.stale_recheck > 0:
            e.refreshing = False

    def _accepted(self, reply: Reply, q: wire.Query) -> bool:
        """Does a refresh replace a stale entry? RFC 8767: NOERROR or NXDOMAIN; under
        prefer_positive only a complete answer to the question (CoreDNS usableAnswer)."""
        if not self._prefer:
            return _refreshed(reply)
        w = reply.wire
        if w is None or wire.rcode_of(w) != wire.NOERROR or w[2] & 0x02 or w[6:8] == b"\x00\x00":
            return False
        try:
            if not _matches(w, q):
                return False
            verdict = classify(w, q.qname, q.qtype, self.cfg)
        except WireError:
            return False
        return verdict.rtype is RType.NOERROR and verdict.reason in ("", "zero TTL")

    def entries(self) -> tuple[int, int]:
        s, d = self.store.sizes()
        return s, d

    def evictions(self) -> tuple[int, int]:
        return self.store.evictions[SUCCESS], self.store.evictions[DENIAL]


def _capped(reply: Reply, verdict: Verdict) -> Reply:
    """``reply`` with every TTL (OPT aside) set to the cache's duration, as CoreDNS does before it
    decides whether to store: a reply the cache passes on still never outlives the cache's bounds."""
    assert reply.wire is not None
    out = bytearray(reply.wire)
    for _start, ttl_off, _rtype, _end in verdict.records:
        _TTL.pack_into(out, ttl_off, verdict.ttl)
    return Reply(bytes(out), reply.rcode, reply.plugin, reply.error, reply.final)


def _refreshed(reply: Reply) -> bool:
    return reply.wire is not None and wire.rcode_of(reply.wire) in (wire.NOERROR, wire.NXDOMAIN)


def _matches(reply: bytes, q: wire.Query) -> bool:
    if len(reply) < wire.HEADER_LEN or not reply[2] & 0x80 or reply[4:6] != b"\x00\x01":
        return False
    # The common reply repeats the question uncompressed: compare bytes, no name decoding. (Label
    # lengths are below 0x41, so lower() leaves them alone: equal bytes are the same labels.)
    end = wire.HEADER_LEN + len(q.qname)
    if reply[wire.HEADER_LEN : end].lower() == q.qname:
        return reply[end : end + 4] == _QT.pack(q.qtype, q.qclass)
    name, off = wire.read_name(reply, wire.HEADER_LEN)
    if off + 4 > len(reply):
        return False
    return name.lower() == q.qname and reply[off : off + 4] == _QT.pack(q.qtype, q.qclass)
