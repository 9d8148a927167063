"""The server's life, in explicit phases, the same for ``nodelocaldns serve`` and ``node-cache``.

``NEW -> STARTING -> SERVING -> LAMEDUCK -> DRAINING -> CLOSED``

* STARTING: parse and plan the Corefile (off the event loop: ``forward`` reads resolv.conf files,
  ``bind`` resolves interfaces), build the blocks, bind every HTTP listener, then every DNS one (a
  probe of ``/health`` sent once DNS answers finds its listener). Any error closes what was opened
  (CLOSED) and is raised: ConfigError, or OSError for a bind.
* SERVING: answering; ``/ready`` is 200 (unless an extra ready check says otherwise). Reloads
  happen here, as ``prepare`` (parse, plan, build: everything that can fail on the text, nothing
  that touches a socket) then ``commit`` (swap routers, open and close listeners). A failed
  prepare leaves the serving generation untouched; sockets present in both versions stay open.
* LAMEDUCK: ``/ready`` answers 503 and queries are still answered for the ``health`` plugin's
  ``lameduck`` duration (skipped after a fatal error: CoreDNS's log.Fatalf does not wait).
* DRAINING: listeners stop accepting, in-flight queries get up to ``drain`` seconds.
* CLOSED: sockets, plugin runtimes (forwarders, probes, the reload timer) and HTTP listeners closed.

Hooks (``add_hook(phase, hook)``) run on entering a phase, before its work, in the order added; one
that raises is logged and the phases go on. The
node agent deletes its NOTRACK rules in a DRAINING hook (after lameduck, before the sockets close,
node-cache's order) and removes its addresses in a CLOSED hook.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from nodelocaldns.core.cpus import usable_cpus
from nodelocaldns.corefile.model import ServerBlock, corefile_hash
from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import ConfigError, NodeLocalDNSError
from nodelocaldns.native import native_available, native_status
from nodelocaldns.server.config import Plan, plan
from nodelocaldns.server.httpd import HTTPServers
from nodelocaldns.server.instance import Generation, Instance
from nodelocaldns.server.listener import Listener, Router
from nodelocaldns.server.native_exchange import ExchangeTables
from nodelocaldns.server.native_exchange import apply as apply_exchange
from nodelocaldns.server.native_index import NativeIndex, signature
from nodelocaldns.server.native_udp import NativeUDPServer
from nodelocaldns.server.settings import DEFAULT, ServerConfig
from nodelocaldns.server.tcp import TCPConnection
from nodelocaldns.server.tcp_migrate import TCPMigrate
from nodelocaldns.server.udp import UDPWorker

log = logging.getLogger("nodelocaldns")

Hook = Callable[[], Awaitable[None]]


class Phase(enum.IntEnum):
    NEW = 0
    STARTING = 1
    SERVING = 2
    LAMEDUCK = 3
    DRAINING = 4
    CLOSED = 5


@dataclass(frozen=True)
class Prepared:
    """A checked Corefile, ready to commit. ``generation`` is None when it is the one served."""

    text: str
    hash: str
    generation: Generation | None


def _parse_and_plan(text: str, filename: str) -> tuple[tuple[ServerBlock, ...], Plan]:
    blocks = parse_corefile(text, filename)
    return blocks, plan(blocks)


class Server(Instance):
    """One DNS server process's runtime. ``Instance`` holds what a Corefile builds into (blocks,
    listeners, the counters metrics read); this class moves it through the phases."""

    def __init__(
        self,
        text: str,
        filename: str = "Corefile",
        *,
        config: ServerConfig = DEFAULT,
        on_fatal: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        native: bool | None = None,
    ) -> None:
        super().__init__(text, filename, on_fatal=on_fatal, clock=clock)
        self.config = config
        self.http = HTTPServers(config)
        self.phase = Phase.NEW
        self.extra_ready_checks: list[Callable[[], str | None]] = []
        # Families the embedding process adds to every prometheus listener (node-cache registers
        # its setup-error counter in the default registry, which CoreDNS's metrics plugin serves).
        self.extra_collectors: list[Callable[[], list[Any]]] = []
        self._hooks: dict[Phase, list[Hook]] = {}
        # The native workers read CLOCK_MONOTONIC. Another (injected) clock keeps the Python path
        # unless ``native=True``: then the workers are pinned to it (``sync_clock`` after it moves).
        if native and not native_available():
            raise RuntimeError(f"native hot path requested but unavailable: {native_status()}")
        self.native = native_available() and clock is time.monotonic if native is None else native
        self._indexes: dict[tuple[tuple[str, int], ...], NativeIndex] = {}
        self._exchange = ExchangeTables()
        self.tcp_migrate = TCPMigrate()

    # -- phases ----------------------------------------------------------------------------------

    def add_hook(self, phase: Phase, hook: Hook) -> None:
        """Run ``hook`` when ``phase`` is entered, before that phase's own work."""
        self._hooks.setdefault(phase, []).append(hook)

    async def _enter(self, phase: Phase) -> None:
        self.phase = phase
        for hook in self._hooks.get(phase, ()):
            try:
                await hook()
            except Exception:  # a broken hook must not keep the sockets open or skip the next one
                log.exception("[ERROR] %s hook failed", phase.name.lower())

    @property
    def shutting_down(self) -> bool:
        return self.phase >= Phase.LAMEDUCK

    async def start(self) -> None:
        """Parse, build and bind everything. Raises ConfigError or OSError; nothing is left open."""
        if not native_available():
            log.warning("[WARNING] native hot path not in use (%s): serving on the pure-Python path",
                        native_status())  # fmt: skip
        await self._enter(Phase.STARTING)
        try:
            prepared = await self.prepare(self.text)  # nothing serves yet: always a generation
            assert prepared.generation is not None
            # HTTP first: a probe of /health (or /ready) sent once DNS answers must find a listener.
            # _apply's own HTTP step then finds every listener up and only sets their routes.
            await self._apply_http(prepared.generation)
            await self._apply(prepared.generation)
        except BaseException:
            await self._close_all(self.gen)
            self.phase = Phase.CLOSED
            raise
        self.reload_state.hash = prepared.hash
        self.ready = True
        self._migrate_tcp("a second server joined")
        await self._enter(Phase.SERVING)

    async def shutdown(self, *, lameduck: bool = True, drain: float | None = None) -> None:
        """SERVING -> LAMEDUCK -> DRAINING -> CLOSED. ``lameduck=False`` (after a fatal error) keeps
        the not-ready step but does not wait; ``drain`` defaults to ``config.drain``."""
        if self.phase >= Phase.LAMEDUCK:
            return
        gen = self.gen
        await self._enter(Phase.LAMEDUCK)
        if lameduck and gen is not None and gen.lameduck > 0:
            log.info("[INFO] Going into lameduck mode for %gs", gen.lameduck)
            await asyncio.sleep(gen.lameduck)
        await self._enter(Phase.DRAINING)
        self._migrate_tcp("handing over")
        for lst in self.listeners.values():
            if lst.udp is not None:
                lst.udp.stop()
            if lst.tcp is not None:
                lst.tcp.close()
        await asyncio.sleep(0)  # the UDP threads' last hand-offs (their drained queues) become tasks
        deadline = time.monotonic() + (self.config.drain if drain is None else drain)
        for lst in self.listeners.values():
            await lst.drain(max(deadline - time.monotonic(), 0.0))
        await self._close_all(gen)
        await self._enter(Phase.CLOSED)

    def _migrate_tcp(self, moment: str) -> None:
        """A TCP port shared with another server: its queue must migrate, not reset, at a close."""
        keys = [(lst.host, lst.port) for lst in self.listeners.values() if lst.tcp is not None]
        try:
            self.tcp_migrate.if_shared(keys, moment)
        except Exception:  # a /proc format surprise must not stop a start or a shutdown
            log.exception("[ERROR] checking net.ipv4.tcp_migrate_req failed")

    async def _close_all(self, gen: Generation | None) -> None:
        for lst in self.listeners.values():
            _close(lst)
            # What drain() left waiting: a Task would be cancelled when the loop ends; these now.
            lst.cancel_direct()
        for t in list(self._bg):
            t.cancel()
        if gen is not None:
            for rt in gen.runtimes:
                rt.close()
        for srv in self.http.servers.values():
            await srv.stop()

    # -- reload: prepare, then commit ------------------------------------------------------------

    async def prepare(self, text: str) -> Prepared:
        """Check ``text`` and build its blocks without touching the serving generation.

        Raises ConfigError (or OSError/ValueError from a plugin's setup).
        """
        blocks, p = await asyncio.to_thread(_parse_and_plan, text, self.filename)
        h = corefile_hash(blocks)
        if h == self.reload_state.hash:
            return Prepared(text, h, None)
        return Prepared(text, h, self._build_from(p))

    async def commit(self, prepared: Prepared) -> None:
        """Switch to a prepared Corefile. Raises OSError if a new listener cannot bind (the old
        generation then keeps serving)."""
        if prepared.generation is not None:
            await self._apply(prepared.generation)
            log.info("[INFO] Reloading complete")
        self.text = prepared.text
        self.reload_state.hash = prepared.hash

    async def reload(
        self, text: str | None = None, *, before_commit: Callable[[], bool] | None = None
    ) -> bool:
        """Apply a new Corefile (or re-read the file). Returns False and keeps serving on error.

        ``before_commit`` runs between prepare and commit; returning False abandons the change.
        """
        if self.phase != Phase.SERVING:
            return False
        if text is None:
            try:
                with open(self.filename, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                return self._reload_failed(ConfigError(f"{self.filename}: {e.strerror}"))
        if text == self.reload_state.bad_text:
            # CoreDNS records the new hash before it restarts, so one broken edit fails once.
            return False
        try:
            prepared = await self.prepare(text)
            if before_commit is not None and not before_commit():
                return False
            await self.commit(prepared)
        except (NodeLocalDNSError, OSError, ValueError) as e:
            self.reload_state.bad_text = text
            return self._reload_failed(e)
        self.reload_state.bad_text = None
        return True

    def _reload_failed(self, e: BaseException) -> bool:
        self.reload_state.failed += 1
        log.error("[ERROR] Corefile changed but reload failed: %s", e)
        return False

    # -- sockets ---------------------------------------------------------------------------------

    async def _apply(self, gen: Generation) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        wanted = set(gen.plan.listeners)
        opened: list[Listener] = []
        pending: dict[tuple[str, int], list[socket.socket]] = {}
        try:
            for key in wanted - set(self.listeners):
                lst = Listener(key[0], key[1], Router({}), self.clock, cfg)
                n = self._sockets_for(gen, key) if self.native else 1
                socks = pending[key] = []
                for _ in range(n):
                    socks.append(self._udp_socket(key))
                tsock = _socket(key[0], key[1], socket.SOCK_STREAM, cfg.tcp_backlog)
                if not self.native:
                    socks[0].setblocking(True)
                    lst.udp = UDPWorker(lst, socks[0], loop)
                # create_server listen()s again with its own backlog (default 100).
                lst.tcp = await loop.create_server(
                    partial(TCPConnection, lst), sock=tsock, backlog=cfg.tcp_backlog
                )
                opened.append(lst)
        except BaseException:
            for lst in opened:
                _close(lst)
            for socks in pending.values():
                for us in socks:
                    us.close()
            raise
        for lst in opened:
            self.listeners[(lst.host, lst.port)] = lst
            if lst.udp is not None:
                lst.udp.start()
        for key, zones in gen.plan.listeners.items():
            self.listeners[key].set_router(Router({z: gen.blocks[i] for z, i in zones}))
        if self.native:
            self._apply_native(gen, pending, loop)
        for key in set(self.listeners) - wanted:
            _close(self.listeners.pop(key))
        old = self.gen
        self.gen = gen
        await self._apply_http(gen)
        if old is not None:
            for rt in old.runtimes:
                rt.close()
        for rt in gen.runtimes:
            rt.start(self.host)

    def sync_clock(self) -> None:
        """An injected clock moved: the native workers answer as of its new time."""
        for lst in self.listeners.values():
            if lst.native is not None:
                cast(NativeUDPServer, lst.native).sync_clock()

    def _sockets_for(self, gen: Generation, key: tuple[str, int]) -> int:
        """multisocket's count for this address (the largest its blocks ask for), else the CPUs."""
        n = max((gen.blocks[i].sockets for _z, i in gen.plan.listeners[key]), default=0)
        return n or usable_cpus()

    def _udp_socket(self, key: tuple[str, int]) -> socket.socket:
        cfg = self.config
        us = _socket(key[0], key[1], socket.SOCK_DGRAM, cfg.tcp_backlog)
        us.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cfg.udp_rcvbuf)
        us.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.udp_sndbuf)
        return us

    def _apply_native(self, gen: Generation, pending: dict[tuple[str, int], list[socket.socket]],
                      loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
        """One native index per distinct zone table; start new listeners' workers, move the others."""
        indexes: dict[tuple[tuple[str, int], ...], NativeIndex] = {}
        for key in gen.plan.listeners:
            lst = self.listeners[key]
            sig = signature(lst.router)
            nix = indexes.get(sig) or self._indexes.get(sig)
            if nix is None:
                nix = NativeIndex(lst.router)
            indexes[sig] = nix
            if key in pending:
                nat = NativeUDPServer(lst, pending[key], loop, nix, partial(self._udp_socket, key))
                lst.udp = lst.native = nat
                nat.start()
            elif lst.native is not None:
                cur = cast(NativeUDPServer, lst.native)  # the only kind this server creates
                cur.set_index(nix)
                cur.resize(self._sockets_for(gen, key))
        for sig, old in self._indexes.items():
            if indexes.get(sig) is not old:
                old.close()
        self._indexes = indexes
        self._exchange_changed()

    def _exchange_changed(self) -> None:
        """Give each native index the table of misses its workers send upstream themselves
        (server/native_exchange.py): after a reload, and when an upstream's health moved."""
        if not self.native:
            return
        per: dict[int, tuple[NativeIndex, int]] = {}
        for lst in self.listeners.values():
            if lst.native is None:
                continue
            nat = cast(NativeUDPServer, lst.native)
            nat.upstreams = self._exchange.keys
            nix, n = per.get(id(nat.nix), (nat.nix, 0))
            per[id(nat.nix)] = (nix, n + len(nat.socks))
        self._exchange.begin()
        for nix, n in per.values():
            table = self._exchange.table(nix.router, n, [m.block for m in nix.mirrors])
            if table != nix.exchange and apply_exchange(nix.index, table):
                nix.exchange = table
        self._exchange.end()

    async def _apply_http(self, gen: Generation) -> None:
        wanted: dict[tuple[str, int], dict[str, Any]] = {}
        fresh = HTTPServers(self.config)
        for r in gen.routes:
            srv = fresh.route(r.addr, r.default_port, r.path, r.handler)
            wanted[(srv.host, srv.port)] = srv.routes
        for key, srv in list(self.http.servers.items()):
            if key not in wanted:
                await srv.stop()
                del self.http.servers[key]
        for key, new in fresh.servers.items():
            cur = self.http.servers.get(key)
            if cur is None:
                await new.start()
                self.http.servers[key] = new
            else:
                cur.routes = new.routes

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)


def _socket(host: str, port: int, kind: int, backlog: int) -> socket.socket:
    fam = socket.AF_INET6 if (":" in host or host == "") else socket.AF_INET
    s = socket.socket(fam, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # SO_REUSEPORT lets a second agent bind the same address during a rollout.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if host == "":
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", port))
        else:
            s.bind(
                (host.split("%")[0], port)
                if fam == socket.AF_INET
                else (host.split("%")[0], port, 0, _scope(host))
            )
        if kind == socket.SOCK_STREAM:
            s.listen(backlog)
        s.setblocking(False)
    except OSError:
        s.close()
        if host == "":
            return _socket("0.0.0.0", port, kind, backlog)
        raise
    return s


def _scope(host: str) -> int:
    if "%" in host:
        return socket.if_nametoindex(host.split("%", 1)[1])
    return 0


def _close(lst: Listener) -> None:
    if lst.udp is not None:
        lst.udp.close()
        lst.udp = None
        lst.native = None
    if lst.tcp is not None:
        lst.tcp.close()
        lst.tcp = None
    for conn in list(lst.tcp_conns):
        if conn.transport is not None:
            conn.transport.close()
