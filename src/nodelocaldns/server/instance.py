"""What a Corefile builds into: blocks and their plugin runtimes, listeners, the state plugins read.

The lifecycle (start, reload, lameduck, drain, stop) is ``server.Server``, a subclass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Route, Runtime
from nodelocaldns.plugins import PLUGINS
from nodelocaldns.server.chain import build_chain, chain_after
from nodelocaldns.server.config import DIRECTIVES, BlockPlan, Plan
from nodelocaldns.server.host import ServerHost
from nodelocaldns.server.listener import Block, Listener
from nodelocaldns.server.native_exchange import settler

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
        self.gen: Generation | None = None
        self.ready = False
        self.reload_state = ReloadState()
        self.started = time.time()
        self._bg: set[asyncio.Task[Any]] = set()
        self._fatal: str | None = None
        self.fatal_event = asyncio.Event()
        self.host = ServerHost(self)

    # -- build -----------------------------------------------------------------------------------

    def _build_from(self, p: Plan) -> Generation:
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
        ahead: list[Runtime] = []  # the runtimes before it, whose hit-time parts the fast path applies
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
                ahead.append(rt)
            block.metrics = block.metrics or rt.counts_requests
            block.chaos = block.chaos or p.chaos
            block.sockets = max(block.sockets, rt.num_sockets)
            gen.routes.extend(rt.routes)
            gen.lameduck = max(gen.lameduck, rt.lameduck)
        gen.runtimes.extend(block.runtimes)
        if block.cache is not None:
            shaping = [rt for rt in reversed(ahead) if rt.reply_transform]
            block.transform = _compose([rt.reply_transform for rt in shaping if rt.reply_transform])
            if len(shaping) == 1:
                block.shuffle = shaping[0].native_shuffle
            block.udp_max = min((rt.fast_path_udp_max for rt in ahead), default=block.udp_max)
            block.skips = frozenset().union(*(rt.fast_path_skips for rt in ahead))
        handlers = [h for rt in block.runtimes for h in rt.handlers]
        block.chain = build_chain(handlers)
        if block.cache is not None and block.cache in handlers:
            block.after_cache = chain_after(handlers, block.cache)
            block.settle = settler(block)
        block.direct = all(rt.name in PLUGINS for rt in block.runtimes)
        return block

    # -- helpers ---------------------------------------------------------------------------------

    def _exchange_changed(self) -> None:
        """A runtime's native exchange may have moved (server.Server rebuilds the workers' tables)."""

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


def _compose(fns: list[Callable[[bytes], bytes]]) -> Callable[[bytes], bytes] | None:
    """One transform for the fast path: the plugin nearest the cache first, as replies flow back."""
    if not fns:
        return None
    if len(fns) == 1:
        return fns[0]

    def chained(reply: bytes) -> bytes:
        for fn in fns:
            reply = fn(reply)
        return reply

    return chained
