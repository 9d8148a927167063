"""Compose a server block's handlers into one callable, in CoreDNS plugin.cfg order."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from nodelocaldns.core.order import POSITION
from nodelocaldns.core.plugin import Handler, Next
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns.wire import REFUSED, SERVFAIL


class NoNextPlugin(Exception):
    def __str__(self) -> str:
        return "no next plugin found"


async def _end(req: Request) -> Reply:
    return Reply(None, SERVFAIL, error=NoNextPlugin())


async def _no_plugins(req: Request) -> Reply:
    return Reply(None, REFUSED)


def build_chain(handlers: Sequence[Handler]) -> Next:
    """Compose handlers (already sorted by position) into one callable.

    A zone with no query-path plugin at all (only bind, health, reload...) is REFUSED, as CoreDNS
    does for a nil plugin chain; a chain that runs off its end is SERVFAIL "no next plugin found".
    """
    if not handlers:
        return _no_plugins
    nxt: Next = _end
    for h in reversed(handlers):
        nxt = _bind(h, nxt)
    return nxt


def chain_after(handlers: Sequence[Handler], h: Handler) -> Next:
    """What ``h`` gets as its next plugin inside ``build_chain(handlers)``: the handlers after it,
    ending "no next plugin found". A cache refresh started outside a query (the native worker's
    serve_stale) goes through exactly this."""
    nxt: Next = _end
    for later in reversed(handlers[list(handlers).index(h) + 1 :]):
        nxt = _bind(later, nxt)
    return nxt


def _bind(h: Handler, nxt: Next) -> Next:
    # A plain function handing back the handler's coroutine: one coroutine per plugin per query,
    # not two (every resume of the innermost await passes through each frame of the chain).
    def call(req: Request) -> Awaitable[Reply]:
        return h.serve(req, nxt)

    return call


def sort_handlers(handlers: Sequence[Handler]) -> list[Handler]:
    """Stable: several handlers of one plugin (forward lines) keep their Corefile order."""
    return sorted(handlers, key=lambda h: POSITION[h.name])
