"""``errors``: log errors returned by later plugins, CoreDNS format, with optional consolidation.

``[ERROR] plugin/errors: 2 example.org. A: read udp ...: i/o timeout``. Error logs are rate-limited
per distinct pattern so a dead upstream cannot flood the node's logs.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from nodelocaldns.corefile.model import Directive
from nodelocaldns.plugins.cache.setup import parse_duration
from nodelocaldns.server.chain import Next
from nodelocaldns.server.request import Reply, Request

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


class RateLimiter:
    """At most ``burst`` lines per ``window`` seconds per key; the rest are counted and summarised."""

    def __init__(self, burst: int = 20, window: float = 10.0) -> None:
        self.burst = burst
        self.window = window
        self._state: dict[str, list[float]] = {}

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        st = self._state.get(key)
        if st is None or now - st[0] >= self.window:
            suppressed = int(st[2]) if st else 0
            if len(self._state) > 1000:
                self._state.clear()
            self._state[key] = [now, 1.0, 0.0]
            return True, suppressed
        if st[1] < self.burst:
            st[1] += 1
            return True, 0
        st[2] += 1
        return False, 0


class ErrorsHandler:
    name = "errors"

    def __init__(self, cfg: ErrorsConfig) -> None:
        self.cfg = cfg
        self.limiter = RateLimiter()
        self._counts: dict[int, tuple[float, int]] = {}

    async def serve(self, req: Request, next_: Next) -> Reply:
        reply = await next_(req)
        if reply.error is not None:
            self.report(req, reply)
        return reply

    def report(self, req: Request, reply: Reply) -> None:
        msg = f"{reply.rcode} {req.qname} {_qtype(req.q.qtype)}: {reply.error}"
        now = time.monotonic()
        for i, c in enumerate(self.cfg.consolidate):
            if c.pattern.search(msg):
                start, n = self._counts.get(i, (now, 0))
                if n == 0 and c.show_first:
                    log.log(c.level, "[%s] plugin/errors: %s", logging.getLevelName(c.level), msg)
                if now - start >= c.period and n > 0:
                    log.log(c.level, "[%s] plugin/errors: %d errors like '%s' occurred in last %s",
                            logging.getLevelName(c.level), n + 1, c.pattern.pattern, _dur(c.period))  # fmt: skip
                    self._counts[i] = (now, 0)
                else:
                    self._counts[i] = (start, n + 1)
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


def _qtype(t: int) -> str:
    import dns.rdatatype

    try:
        return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(t))
    except Exception:
        return f"TYPE{t}"


def _dur(s: float) -> str:
    if s >= 60 and s % 60 == 0:
        return f"{int(s // 60)}m0s"
    return f"{s:g}s"
