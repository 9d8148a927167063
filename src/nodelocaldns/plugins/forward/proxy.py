"""One upstream: UDP, TCP and TLS exchanges, pools of reused sockets and connections, health state.

UDP goes over pooled connected sockets (udp.py: one query per socket at a time, a fresh random
ID per query, matched on ID, question and source). Replies whose ID or question do not match are
dropped and the read goes on until the deadline, so a spoofed or stale datagram cannot complete
a query. A matching reply that does not unpack is an upstream error (BadReply), never passed on.
Running out of descriptors, buffers or memory on the way is ResourceExhausted: an upstream
error, not a plugin bug.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable

from nodelocaldns.core.direct import need_task
from nodelocaldns.core.request import Exchanged
from nodelocaldns.dns import wire
from nodelocaldns.errors import BadReply, UpstreamError, WireError
from nodelocaldns.plugins.forward import tlsconfig
from nodelocaldns.plugins.forward.matching import (
    go_addr,
    go_syscall_error,
    native_error,
    new_id,
    op_error,
    reply_matches,
    upstream_error,
    with_id,
    wrong_reply,
)
from nodelocaldns.plugins.forward.metrics import ForwardCounters
from nodelocaldns.plugins.forward.setup import Upstream
from nodelocaldns.plugins.forward.udp import UDPPool

__all__ = ["Proxy", "reply_matches", "with_id"]  # the matching helpers tests use through here
_LEN = struct.Struct("!H")


class _Conn:
    __slots__ = ("reader", "writer", "used", "created")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, now: float) -> None:
        self.reader = reader
        self.writer = writer
        self.used = now
        self.created = now

    def close(self) -> None:
        self.writer.close()


class Proxy:
    """An upstream with its connection pool and failure count."""

    def __init__(
        self,
        up: Upstream,
        expire: float,
        counters: ForwardCounters,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_age: float = 0.0,
        max_idle_conns: int = 0,
        tls_context: ssl.SSLContext | None = None,
        tls_servername: str = "",
    ) -> None:
        self.up = up
        self.clock = clock
        self.addr = up.label
        self.family = socket.AF_INET6 if ":" in up.host else socket.AF_INET
        self.expire = expire
        self.max_age = max_age
        self.max_idle_conns = max_idle_conns
        # A tls:// upstream speaks DNS over TLS for every query, whatever the client used.
        self.tls = tls_context if up.tls else None
        # Go's tls.Dial falls back to the address's host: an IP is then checked against IP SANs.
        self.server_name = up.server_name or tls_servername or up.host
        self.stream_proto = "tcp-tls" if self.tls is not None else "tcp"
        self.fails = 0
        self.counters = counters
        self._pool: deque[_Conn] = deque()
        self._udp: UDPPool | None = None
        self._probe: asyncio.Task[None] | None = None
        self._closed = False
        self.on_health: Callable[[], None] | None = None  # ``fails`` moved (the handler's watch)
        counters.bad_replies.setdefault(self.addr, 0)

    def down(self, max_fails: int) -> bool:
        return max_fails != 0 and self.fails > max_fails

    async def exchange(
        self, query: bytes, question: bytes, proto: str, timeout: float, bufsize: int
    ) -> tuple[bytes, int, wire.Records]:
        """Send ``query`` (any ID); the matching reply with the ID the caller sent, its first
        record's offset and its records (wire.scan_reply: the one walk the reply gets)."""
        qid = new_id()
        msg = with_id(query, qid)
        if proto == "udp" and self.tls is None:
            reply = await self._udp_pool().exchange(msg, qid, question, timeout, bufsize)
        else:
            reply = await self._tcp(msg, qid, question, timeout)
        return self._scanned(query, reply)

    def exchanged(self, query: bytes, got: Exchanged) -> tuple[bytes, int, wire.Records]:
        """What ``exchange`` would return (or raise) for the UDP exchange a native worker did with
        this upstream: over one of its pooled sockets, hence counted as a reused one."""
        self.counters.conn_cache(self.addr, "udp", hit=True)
        if got.reply is None:
            raise native_error(got.err, self.addr)
        return self._scanned(query, got.reply)

    def _scanned(self, query: bytes, reply: bytes) -> tuple[bytes, int, wire.Records]:
        try:
            reply, body, recs = wire.scan_reply(reply)
        except WireError as e:
            self.counters.bad_replies[self.addr] = self.counters.bad_replies.get(self.addr, 0) + 1
            raise BadReply(f"dns: bad reply from {self.addr}: {e}", self.addr) from None
        return query[:2] + reply[2:], body, recs

    def _udp_pool(self) -> UDPPool:
        """This upstream's UDP pool on the running loop (a new loop, as in tests, gets its own)."""
        loop = asyncio.get_running_loop()
        pool = self._udp
        if pool is None or pool.loop is not loop:
            if pool is not None:
                pool.close()
            pool = self._udp = UDPPool(loop, self.up.host, self.up.port, self.addr, self.counters, self.clock,
                                       self.expire, self.max_age, self.max_idle_conns)  # fmt: skip
        return pool

    async def _tcp(self, msg: bytes, qid: int, question: bytes, timeout: float) -> bytes:
        await need_task()  # asyncio.timeout below needs one; a UDP miss stepped by hand has none
        conn = self._take()
        reused = conn is not None
        self.counters.conn_cache(self.addr, self.stream_proto, hit=reused)
        try:
            if conn is None:
                conn = await self._dial(timeout)
            try:
                data = await self._tcp_roundtrip(conn, msg, qid, question, timeout)
            except UpstreamError:
                if not reused:
                    raise
                # The peer may have closed a pooled connection; one fresh dial, as CoreDNS does.
                conn.close()
                conn = await self._dial(timeout)
                data = await self._tcp_roundtrip(conn, msg, qid, question, timeout)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._yield(conn)
        return data

    def _yield(self, conn: _Conn) -> None:
        """Back into the pool (CoreDNS Transport.Yield): unless stopped or max_idle_conns are idle."""
        conn.used = self.clock()
        if self._closed or (self.max_idle_conns > 0 and len(self._pool) >= self.max_idle_conns):
            conn.close()
            return
        self._pool.append(conn)

    async def _dial(self, timeout: float) -> _Conn:
        try:
            async with asyncio.timeout(timeout):
                r, w = await asyncio.open_connection(self.up.host, self.up.port)
        except TimeoutError:
            raise UpstreamError(op_error("dial", "tcp", None, self.addr, "i/o timeout"), self.addr) from None
        except OSError as e:
            # Go's Dialer leaves Source unset: ``dial tcp REMOTE: connect: connection refused``.
            raise upstream_error(e, "dial", "tcp", None, self.addr, "connect") from None
        if self.tls is not None:
            await self._handshake(w, timeout)
        return _Conn(r, w, self.clock())

    async def _handshake(self, w: asyncio.StreamWriter, timeout: float) -> None:
        """TLS on a connected stream, then Go's name check; any failure closes it."""
        assert self.tls is not None
        local = go_addr(w.get_extra_info("sockname"))
        try:
            try:
                async with asyncio.timeout(timeout):
                    await w.start_tls(self.tls, server_hostname=self.server_name)
            except TimeoutError:
                raise UpstreamError(
                    op_error("read", "tcp", local, self.addr, "i/o timeout"), self.addr
                ) from None
            except ssl.SSLCertVerificationError as e:
                raise UpstreamError(tlsconfig.verify_error(e), self.addr) from None
            except ssl.SSLError as e:
                raise UpstreamError(tlsconfig.handshake_error(e), self.addr) from None
            except (ConnectionError, asyncio.IncompleteReadError):
                raise UpstreamError("EOF", self.addr) from None
            except OSError as e:
                err = go_syscall_error("read", e)
                raise UpstreamError(op_error("read", "tcp", local, self.addr, err), self.addr) from None
            wrong = tlsconfig.verify_name(w.get_extra_info("peercert") or {}, self.server_name)
            if wrong is not None:
                raise UpstreamError(wrong, self.addr)
        except UpstreamError:
            w.close()
            raise

    async def _tcp_roundtrip(
        self, conn: _Conn, msg: bytes, qid: int, question: bytes, timeout: float
    ) -> bytes:
        local = go_addr(conn.writer.get_extra_info("sockname"))
        op = "write"
        try:
            async with asyncio.timeout(timeout):
                conn.writer.write(_LEN.pack(len(msg)) + msg)
                await conn.writer.drain()
                op = "read"
                while True:
                    n = _LEN.unpack(await conn.reader.readexactly(2))[0]
                    data = await conn.reader.readexactly(n)
                    if reply_matches(data, qid, question):
                        return data
                    wrong_reply(data, qid, question)
        except TimeoutError:
            raise UpstreamError(op_error(op, "tcp", local, self.addr, "i/o timeout"), self.addr) from None
        except asyncio.IncompleteReadError:
            # Go's conn.Read hands back a bare io.EOF when the peer closes: no OpError around it.
            raise UpstreamError("EOF", self.addr) from None
        except OSError as e:
            raise upstream_error(e, op, "tcp", local, self.addr, op) from None

    def _take(self) -> _Conn | None:
        now = self.clock()
        while self._pool:
            c = self._pool.popleft()  # oldest first, as CoreDNS
            too_old = self.max_age > 0 and now - c.created > self.max_age
            if now - c.used < self.expire and not too_old and not c.writer.is_closing():
                return c
            c.close()
        return None

    def close(self) -> None:
        self._closed = True
        if self._udp is not None:
            self._udp.close()
        while self._pool:
            self._pool.popleft().close()
        if self._probe is not None:
            self._probe.cancel()

    def start_health_check(self, probe_msg: bytes, proto: str, interval: float) -> None:
        """Probe until one check succeeds. Triggered by a failed query; one loop per upstream."""
        if self._probe is not None and not self._probe.done() or self._closed:
            return
        self._probe = asyncio.ensure_future(self._probe_loop(probe_msg, proto, interval))

    async def _probe_loop(self, probe_msg: bytes, proto: str, interval: float) -> None:
        question = probe_msg[wire.HEADER_LEN :]
        question = question[: wire.question_end(probe_msg) - wire.HEADER_LEN]
        while not self._closed:
            try:
                await self.exchange(probe_msg, question, proto, 1.0, 512)
            except UpstreamError:
                self.fails += 1
                self.counters.healthcheck_failures[self.addr] = (
                    self.counters.healthcheck_failures.get(self.addr, 0) + 1
                )
                if self.on_health is not None:
                    self.on_health()
                await asyncio.sleep(interval)
                continue
            self.fails = 0
            if self.on_health is not None:
                self.on_health()
            return
