"""loadbalance in a server block: the shuffle its handler and the cache's fast path both apply.

loadbalance sits before cache (plugin.cfg), so CoreDNS shuffles cached answers too. The cache's
fast path sends hits without running the chain, so this runtime names ``transform`` as its
``reply_transform``: the fast path applies it to every hit it sends, the handler to every reply
the rest of the chain returns. One function, so both paths send the same bytes for the same draws.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from functools import partial

from nodelocaldns.core.plugin import Host, Next, Runtime
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.errors import ConfigError, CorefileError, WireError
from nodelocaldns.plugins.loadbalance import fast, shuffle
from nodelocaldns.plugins.loadbalance.setup import WEIGHTED, LoadBalanceConfig
from nodelocaldns.plugins.loadbalance.weights import WeightsSource

log = logging.getLogger("nodelocaldns")
_round_robin = fast.round_robin


class LoadBalanceRuntime(Runtime):
    def __init__(self, cfg: LoadBalanceConfig, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.clock = clock
        r = random.Random()
        # Injectable (tests): a uint16 per draw like miekg dns.Id(), and a draw below n for weighted.
        self.rng: shuffle.Rng = partial(r.getrandbits, 16)
        self.randbelow: shuffle.RandBelow = r.randrange
        self.source: WeightsSource | None = None
        self.plain = cfg.policy != WEIGHTED and not cfg.prefer
        self.handlers = (LoadBalanceHandler(self),)
        self.reply_transform = self.transform
        # round_robin alone the native index can do itself, for replies fast.native_ok accepts
        # (prefer and weighted stay on Python's fast path).
        self.native_shuffle = fast.native_ok if self.plain else None
        if cfg.policy == WEIGHTED:
            self.source = WeightsSource(cfg.weight_file, cfg.reload)
            self._load_at_start()

    def _load_at_start(self) -> None:
        """CoreDNS weightedOnStartUp: a bad file fails the start; a missing one too unless it reloads."""
        assert self.source is not None
        if self.source.read(self.source.path) is None:
            if self.cfg.reload == 0:
                raise ConfigError(f"plugin/loadbalance: cannot open weight file {self.source.path}")
            log.warning("[WARNING] plugin/loadbalance: Failed to open weight file:%s. Will try again in %ss",
                        self.source.path, f"{self.cfg.reload:g}")  # fmt: skip
        self.source.poll(self.clock())

    def start(self, host: Host) -> None:
        if self.source is not None and self.cfg.reload > 0:
            host.spawn(self._reload_loop(host))

    async def _reload_loop(self, host: Host) -> None:
        assert self.source is not None
        while not host.stopping:
            await asyncio.sleep(self.cfg.reload)
            try:
                if self.source.poll(host.clock()):
                    log.info(
                        "[INFO] plugin/loadbalance: Successfully reloaded weight file %s", self.source.path
                    )
            except CorefileError as e:  # the previous weights stay (CoreDNS logs the error)
                log.error("[ERROR] plugin/loadbalance: %s", e)

    def transform(self, reply: bytes) -> bytes:
        """The reply reordered (never longer than it came: a hit has already been fitted)."""
        if self.plain:
            out = _round_robin(reply, self.rng)
            if out is not None:
                return out
        try:
            weights = self.source.weights if self.source is not None else None
            out = shuffle.apply(self.cfg, reply, self.rng, weights, self.randbelow)
        except (WireError, IndexError, ValueError):
            return reply  # a reply we cannot take apart goes out as it is
        return out if len(out) <= len(reply) else reply


class LoadBalanceHandler:
    name = "loadbalance"

    def __init__(self, rt: LoadBalanceRuntime) -> None:
        self.rt = rt

    async def serve(self, req: Request, next_: Next) -> Reply:
        reply = await next_(req)
        if reply.wire is None:
            return reply
        out = self.rt.transform(reply.wire)
        if out is reply.wire:
            return reply
        return Reply(out, reply.rcode, reply.plugin, reply.error, reply.final)
