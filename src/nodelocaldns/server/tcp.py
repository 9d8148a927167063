"""DNS over TCP: length-prefixed, pipelined queries on one connection, with CoreDNS's timeouts."""

from __future__ import annotations

import asyncio

from nodelocaldns.server.listener import _LEN, Listener


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
