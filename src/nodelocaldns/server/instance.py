"""The running server: listeners, blocks, HTTP endpoints, reload and graceful stop.

A reload builds a complete new set of blocks first (any error leaves the old set serving), then
swaps each listener's router in place. DNS sockets that exist in both configs are never closed,
so a reload has no gap. Caches start empty after a reload, as in CoreDNS.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Route, Runtime
from nodelocaldns.corefile.model import ServerBlock
from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import ConfigError, NodeLocalDNSError
from nodelocaldns.plugins.reload.plugin import corefile_hash
from nodelocaldns.server.chain import build_chain
from nodelocaldns.server.config import DIRECTIVES, BlockPlan, Plan, plan
from nodelocaldns.server.host import ServerHost
from nodelocaldns.server.httpd import HTTPServers
from nodelocaldns.server.listener import Block, Listener, Router, TCPConnection, UDPWorker

log = logging.getLogger("nodelocaldns")


@dataclass
class ReloadState:
    failed: int = 0
    hash: str = ""
    bad_text: str | None = None  # the last text that failed: not retried (or counted) until it changes


@dataclass
class Generation:
    """Everything built from one Corefile version."""

    plan: Plan
    blocks: list[Block]
    runtimes: list[Runtime] = field(default_factory=list)  # every block's, started after binding
    routes: list[Route] = field(default_factory=list)
    lameduck: float = 0.0


def _socket(host: str, port: int, kind: int) -> socket.socket:
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
            s.listen(1024)
        s.setblocking(False)
    except OSError:
        s.close()
        if host == "":
            return _socket("0.0.0.0", port, kind)
        raise
    return s


def _scope(host: str) -> int:
    if "%" in host:
        return socket.if_nametoindex(host.split("%", 1)[1])
    return 0


class Instance:
    def __init__(
        self,
        text: str,
        filename: str = "Corefile",
        on_fatal: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.text = text
        self.filename = filename
        self.clock = clock
        self.on_fatal = on_fatal or self._default_fatal
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.http = HTTPServers()
        self.gen: Generation | None = None
        self.ready = False
        self.shutting_down = False
        self.reload_state = ReloadState()
        self.started = time.time()
        self._bg: set[asyncio.Task[Any]] = set()
        self._fatal: str | None = None
        self.fatal_event = asyncio.Event()
        self.extra_ready_checks: list[Callable[[], str | None]] = []
        self.host = ServerHost(self)

    # -- build -----------------------------------------------------------------------------------

    def _build(self, blocks: tuple[ServerBlock, ...]) -> Generation:
        p = plan(blocks)
        built: list[Block] = []
        gen = Generation(p, built)
        for bp in p.blocks:
            built.append(self._build_block(bp, gen))
        return gen

    def _build_block(self, bp: BlockPlan, gen: Generation) -> Block:
        """One block from the registry: each directive's factory, handlers in plugin.cfg order."""
        info = BlockInfo(bp.zones, bp.hosts, bp.ports)
        block = Block(bp.zones, build_chain([]))
        safe = True  # may every plugin before the fast path's owner be skipped on a hit?
        for name in sorted(bp.configs, key=lambda n: DIRECTIVES[n].position):
            p = DIRECTIVES[name]
            if p.factory is None:
                continue
            rt = p.factory(self.host, info, bp.configs[name])
            rt.name = name
            block.runtimes.append(rt)
            ok = p.fast_path_safe and rt.fast_path_safe
            if rt.fast_path is not None and block.cache is None:
                block.cache = rt.fast_path
                block.fast = safe and ok
            elif block.cache is None:
                safe = safe and ok
            block.metrics = block.metrics or rt.counts_requests
            gen.routes.extend(rt.routes)
            gen.lameduck = max(gen.lameduck, rt.lameduck)
        gen.runtimes.extend(block.runtimes)
        block.chain = build_chain([h for rt in block.runtimes for h in rt.handlers])
        return block

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Parse, build and bind everything. Raises ConfigError or OSError; nothing is left half-open."""
        blocks = parse_corefile(self.text, self.filename)
        gen = self._build(blocks)
        await self._apply(gen)
        self.reload_state.hash = corefile_hash(blocks)
        self.ready = True

    async def _apply(self, gen: Generation) -> None:
        loop = asyncio.get_running_loop()
        wanted = set(gen.plan.listeners)
        opened: list[Listener] = []
        try:
            for key in wanted - set(self.listeners):
                lst = Listener(key[0], key[1], Router({}), self.clock)
                usock = _socket(key[0], key[1], socket.SOCK_DGRAM)
                tsock = _socket(key[0], key[1], socket.SOCK_STREAM)
                usock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                usock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                usock.setblocking(True)
                lst.udp = UDPWorker(lst, usock, loop)
                # create_server listen()s again with its own backlog (default 100, which drops
                # SYNs in a burst of new connections: a 1 s retransmit for those clients).
                lst.tcp = await loop.create_server(partial(TCPConnection, lst), sock=tsock, backlog=1024)
                opened.append(lst)
        except BaseException:
            for lst in opened:
                _close(lst)
            raise
        for lst in opened:
            self.listeners[(lst.host, lst.port)] = lst
            assert lst.udp is not None
            lst.udp.start()
        for key, zones in gen.plan.listeners.items():
            self.listeners[key].set_router(Router({z: gen.blocks[i] for z, i in zones}))
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

    async def _apply_http(self, gen: Generation) -> None:
        wanted: dict[tuple[str, int], dict[str, Any]] = {}
        fresh = HTTPServers()
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

    async def reload(self, text: str | None = None) -> bool:
        """Apply a new Corefile (or re-read the file). Returns False and keeps serving on error."""
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
            blocks = parse_corefile(text, self.filename)
            h = corefile_hash(blocks)
            if h == self.reload_state.hash:
                self.reload_state.bad_text = None
                return True
            gen = self._build(blocks)
            await self._apply(gen)
        except (NodeLocalDNSError, OSError, ValueError) as e:
            self.reload_state.bad_text = text
            return self._reload_failed(e)
        self.reload_state.bad_text = None
        self.text = text
        self.reload_state.hash = h
        log.info("[INFO] Reloading complete")
        return True

    def _reload_failed(self, e: BaseException) -> bool:
        self.reload_state.failed += 1
        log.error("[ERROR] Corefile changed but reload failed: %s", e)
        return False

    async def stop(self, drain: float = 5.0) -> None:
        """Not-ready, lameduck (still serving), close sockets, drain in-flight queries (bounded)."""
        self.shutting_down = True
        gen = self.gen
        if gen is not None and gen.lameduck > 0:
            await asyncio.sleep(gen.lameduck)
        # Stop accepting, answer what is in flight (bounded), then close the sockets.
        for lst in self.listeners.values():
            if lst.udp is not None:
                lst.udp.stop()
            if lst.tcp is not None:
                lst.tcp.close()
        deadline = time.monotonic() + drain
        for lst in self.listeners.values():
            await lst.drain(max(deadline - time.monotonic(), 0.0))
        for lst in self.listeners.values():
            _close(lst)
        for t in list(self._bg):
            t.cancel()
        if gen is not None:
            for rt in gen.runtimes:
                rt.close()
        for srv in self.http.servers.values():
            await srv.stop()

    # -- helpers ---------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def _fatal_loop(self, message: str) -> None:
        if self._fatal is None:
            self._fatal = message
            self.on_fatal(message)

    def _default_fatal(self, message: str) -> None:
        log.critical("%s", message)
        self.fatal_event.set()

    @property
    def fatal(self) -> str | None:
        return self._fatal


def _close(lst: Listener) -> None:
    if lst.udp is not None:
        lst.udp.close()
        lst.udp = None
    if lst.tcp is not None:
        lst.tcp.close()
        lst.tcp = None
    for conn in list(lst.tcp_conns):
        if conn.transport is not None:
            conn.transport.close()
