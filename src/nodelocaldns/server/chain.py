"""The per-block handler chain, in CoreDNS plugin.cfg order rather than Corefile order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from nodelocaldns.dns.wire import REFUSED, SERVFAIL
from nodelocaldns.server.request import Reply, Request

# CoreDNS executes plugins in plugin.cfg order whatever the Corefile says. Only the ones that sit
# in the query path matter here; setup-only directives (reload, bind, health, ready) are absent.
ORDER: tuple[str, ...] = ("prometheus", "errors", "log", "cache", "loop", "forward")

Next = Callable[[Request], Awaitable[Reply]]


class Handler(Protocol):
    name: str

    async def serve(self, req: Request, next_: Next) -> Reply: ...


class NoNextPlugin(Exception):
    def __str__(self) -> str:
        return "no next plugin found"


async def _end(req: Request) -> Reply:
    return Reply(None, SERVFAIL, error=NoNextPlugin())


async def _no_plugins(req: Request) -> Reply:
    return Reply(None, REFUSED)


def build_chain(handlers: Sequence[Handler]) -> Next:
    """Compose handlers (already sorted by ORDER) into one callable.

    A zone with no query-path plugin at all (only bind, health, reload...) is REFUSED, as CoreDNS
    does for a nil plugin chain; a chain that runs off its end is SERVFAIL "no next plugin found".
    """
    if not handlers:
        return _no_plugins
    nxt: Next = _end
    for h in reversed(handlers):
        nxt = _bind(h, nxt)
    return nxt


def _bind(h: Handler, nxt: Next) -> Next:
    async def call(req: Request) -> Reply:
        return await h.serve(req, nxt)

    return call


def sort_handlers(handlers: Sequence[Handler]) -> list[Handler]:
    return sorted(handlers, key=lambda h: ORDER.index(h.name))
