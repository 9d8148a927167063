"""``errors``: log errors returned by later plugins, CoreDNS format, with optional consolidation.

``[ERROR] plugin/errors: 2 example.org. A: read udp 10.0.0.1:40000->10.0.0.10:53: i/o timeout``
(Go's net.OpError text, built in plugins/forward/matching.py). Error logs are rate-limited per distinct
pattern so a dead upstream cannot flood the node's logs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from nodelocaldns.core.duration import format_duration, parse_duration
from nodelocaldns.core.plugin import Next
from nodelocaldns.core.qtypes import qtype_text
from nodelocaldns.core.ratelimit import RateLimiter
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.corefile.model import Directive

log = logging.getLogger("nodelocaldns")


@dataclass(frozen=True, slots=True)
class Consolidate:
    period: float
    pattern: re.Pattern[str]
    level: int
    show_first: bool


@dataclass(frozen=True, slots=True)
class ErrorsConfig:
    consolidate: tuple[Consolidate, ...] = ()
    stacktrace: bool = False


_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR, "info": logging.INFO, "debug": logging.DEBUG}


def parse(d: Directive) -> ErrorsConfig:
    if d.args:
        raise d.error("errors takes no arguments")
    cons: list[Consolidate] = []
    stack = False
    for sub in d.block:
        if sub.name == "stacktrace" and not sub.args:
            stack = True
        elif sub.name == "consolidate":
            a = list(sub.args)
            if len(a) < 2:
                raise sub.error("consolidate takes DURATION REGEXP [LEVEL] [show_first]")
            try:
                period = parse_duration(a[0])
                pat = re.compile(a[1])
            except (ValueError, re.error) as e:
                raise sub.error(f"consolidate: {e}") from None
            level = logging.ERROR
            show_first = False
            for w in a[2:]:
                if w in _LEVELS:
                    level = _LEVELS[w]
                elif w == "show_first":
                    show_first = True
                else:
                    raise sub.error(f"consolidate: unexpected argument {w!r}")
            cons.append(Consolidate(period, pat, level, show_first))
        else:
            raise sub.error(f"unknown property {sub.name!r} in errors")
    return ErrorsConfig(tuple(cons), stack)


class ErrorsHandler:
    name = "errors"

    def __init__(self, cfg: ErrorsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.limiter = RateLimiter()
        self._counts: dict[int, int] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self.stopped = False

    async def serve(self, req: Request, next_: Next) -> Reply:
        reply = await next_(req)
        if reply.error is not None:
            self.report(req, reply)
        return reply

    def report(self, req: Request, reply: Reply) -> None:
        err = str(reply.error)
        msg = f"{reply.rcode} {req.qname} {qtype_text(req.q.qtype)}: {err}"
        now = self.clock()
        for i, c in enumerate(self.cfg.consolidate):
            # As CoreDNS: the REGEXP is matched against the error text; the first match in a
            # period starts a timer, and the summary is printed when the period ends.
            if c.pattern.search(err) and not self.stopped:  # once stopped, every error is logged
                n = self._counts.get(i, 0) + 1
                self._counts[i] = n
                if n == 1:
                    self._timers[i] = asyncio.get_running_loop().call_later(c.period, self._summary, i)
                    if c.show_first:
                        log.log(c.level, "[%s] plugin/errors: %s", logging.getLevelName(c.level), msg)
                return
        pattern = re.sub(r"\d+", "N", str(reply.error))
        ok, suppressed = self.limiter.allow(pattern, now)
        if suppressed:
            log.error(
                "[ERROR] plugin/errors: %d similar errors suppressed in the last %ds",
                suppressed,
                self.limiter.window,
            )
        if ok:
            log.error("[ERROR] plugin/errors: %s", msg)

    def stop(self) -> None:
        """Print every pending summary now (CoreDNS errorHandler.stop, run on shutdown and reload)."""
        self.stopped = True
        for i, t in list(self._timers.items()):
            t.cancel()
            self._summary(i)

    def _summary(self, i: int) -> None:
        c = self.cfg.consolidate[i]
        self._timers.pop(i, None)
        n = self._counts.pop(i, 0)
        if n > 1 or (n == 1 and not c.show_first):
            log.log(c.level, "[%s] plugin/errors: %d errors like '%s' occurred in last %s",
                    logging.getLevelName(c.level), n, c.pattern.pattern, format_duration(c.period))  # fmt: skip
