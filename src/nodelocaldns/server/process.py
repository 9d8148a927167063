"""One process around a :class:`Server`: logging, the event loop, signals, the banner.

``nodelocaldns serve`` and ``node-cache`` both run through here, so both log the same way, stop the
same way (SIGTERM/SIGINT: shut down through lameduck; a second one exits at once) and print the
same banner. SIGUSR1 is a reload; what a reload means is the caller's (``serve`` re-reads its
Corefile, the agent re-reads ``-conf``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from nodelocaldns.server.server import Server

log = logging.getLogger("nodelocaldns")

_LEVEL_WORDS = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "FATAL",
}
_LEVEL_TAG = re.compile(r"\[(?:DEBUG|INFO|WARNING|ERROR|FATAL)\] ")
PLAIN = {"plain": True}
"""``log.info(..., extra=PLAIN)``: printed without a level, like CoreDNS's start-up banner."""


class CoreDNSFormatter(logging.Formatter):
    """``[INFO] message``, like CoreDNS's ``clog``; messages that carry their own ``[LEVEL]`` (the
    server's and the plugins') and the banner (``extra=PLAIN``) are left as they are."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # Only a real level tag counts: "[Errno 13] ..." or "[::1]:53 ..." still get one.
        if getattr(record, "plain", False) or _LEVEL_TAG.match(text):
            return text
        return f"[{_LEVEL_WORDS.get(record.levelno, record.levelname)}] {text}"


def setup_logging(quiet: bool = False) -> None:
    """CoreDNS-style lines on stderr: no timestamp, the level is part of the message."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CoreDNSFormatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)


def tune_gc() -> None:
    """Shorter and rarer collector pauses for a process that serves until it is stopped.

    Under a flood toward a dead upstream (failed queries leave cyclic garbage: tasks, exceptions),
    the default collector stopped the event loop for 250-320 ms per full collection, mostly walking
    what the imports built (modules, classes, functions: never garbage), and for 5-60 ms in
    hundreds of young collections: every serve_stale answer waits for those. Frozen, the imports
    are never walked again; collecting every 10,000 (not 700) new objects costs a few MB of garbage
    at most. Called before the first generation is built, so a reload's old one is still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run on uvloop when it is installed (it roughly halves per-packet overhead), else asyncio."""
    tune_gc()
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def banner(server: Server, version: str) -> None:
    """CoreDNS's start-up lines: every zone and where it listens, then the version."""
    for lst in server.listeners.values():
        for zone in sorted(lst.router.zones):
            log.info("%s:%d on %s", zone, lst.port, lst.host or "*", extra=PLAIN)
    log.info("nodelocaldns-%s", version, extra=PLAIN)


class Signals:
    """SIGTERM/SIGINT set ``stop`` (a second one calls ``force_exit(1)``); SIGUSR1 calls ``on_reload``.

    Installed before the server starts, so a SIGTERM during start-up is not lost.
    """

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(
        self, on_reload: Callable[[], None], *, force_exit: Callable[[int], None] = os._exit
    ) -> None:
        self.stop = asyncio.Event()
        self.on_reload = on_reload
        self.force_exit = force_exit
        self._seen = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, self._on_stop, signal.SIGINT)
        loop.add_signal_handler(signal.SIGUSR1, self._on_usr1)

    def remove(self) -> None:
        if self._loop is not None:
            for sig in self.HANDLED:
                self._loop.remove_signal_handler(sig)
            self._loop = None

    def _on_stop(self, sig: signal.Signals) -> None:
        self._seen += 1
        if self._seen > 1:
            log.warning("Second %s: exiting now, skipping the rest of the teardown", sig.name)
            self.force_exit(1)
            return
        log.info("%s: Shutting down servers then terminating", sig.name)
        self.stop.set()

    def _on_usr1(self) -> None:
        log.info("SIGUSR1: Reloading")
        self.on_reload()

    async def wait(self, server: Server) -> bool:
        """Until a stop signal or a fatal server error; True for the fatal error."""
        fatal = asyncio.ensure_future(server.fatal_event.wait())
        stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([fatal, stopped], return_when=asyncio.FIRST_COMPLETED)
        fatal.cancel()
        stopped.cancel()
        return server.fatal is not None
