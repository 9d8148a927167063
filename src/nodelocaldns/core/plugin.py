"""The plugin contract: what a directive registers and what the server gives it back.

A plugin folder registers one ``Plugin`` (CoreDNS ``plugin.Register``) in its ``__init__.py``; the
server builds every server block from the registry alone. The server offers a plugin only the
``Host`` protocol below (clock, readiness, reload trigger, fatal exit, background tasks, and a
read-only view for metrics), so plugins never import ``server/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from nodelocaldns.core.order import POSITION
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.core.timeouts import TimeoutsConfig
from nodelocaldns.corefile.model import Directive

Next = Callable[[Request], Awaitable[Reply]]
HTTPHandler = Callable[[], Awaitable[tuple[int, str, bytes]]]  # -> (status, content type, body)


class Handler(Protocol):
    """One plugin in the query path. ``next_`` is the rest of the chain (CoreDNS NextOrFailure)."""

    name: str

    async def serve(self, req: Request, next_: Next) -> Reply: ...


@dataclass(frozen=True, slots=True)
class Route:
    """An HTTP path a plugin serves: blocks naming the same address share one listener."""

    addr: str  # the directive's address, e.g. ":8080" or "127.0.0.1:9153"
    default_port: int
    path: str
    handler: HTTPHandler


class ListenerView(Protocol):
    """What a metrics collector may read of one ``dns://`` listener."""

    @property
    def server(self) -> str: ...  # the ``server`` label

    @property
    def family(self) -> int: ...

    @property
    def stats(self) -> Any: ...  # metrics.dnsstats.ServerStats

    @property
    def panics(self) -> int: ...

    def dropped(self) -> Mapping[str, int]: ...  # proto -> dropped at the slow path's cap

    def refused(self) -> Mapping[str, int]: ...  # proto -> answered REFUSED at the slow path's cap

    def queue_drops(self) -> Mapping[str, int]: ...  # proto -> dropped by the kernel, never read

    def native_exchanges(self) -> Mapping[str, int]: ...  # result -> misses the native workers forwarded

    def blocks(self) -> Mapping[str, BlockView]: ...  # zone -> block (one block may serve several)


class BlockView(Protocol):
    @property
    def zones(self) -> tuple[str, ...]: ...

    @property
    def runtimes(self) -> Sequence[Runtime]: ...


class Host(Protocol):
    """The server, as a plugin sees it."""

    def clock(self) -> float: ...  # monotonic seconds: every TTL, freshness and rate decision

    def readiness(self) -> str | None: ...  # None when ready, else the 503 body

    async def reload(self) -> bool: ...  # re-read and apply the Corefile; False keeps the old one

    def reload_status(self) -> tuple[int, str]: ...  # (failed reloads, SHA-512 of the running config)

    def fatal(self, message: str) -> None: ...  # the process must exit non-zero (loop detected)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...  # a background task, cancelled at stop

    @property
    def stopping(self) -> bool: ...

    def dns_listeners(self) -> Sequence[ListenerView]: ...

    def extra_metrics(self) -> list[Any]: ...  # families the embedding process adds (node-cache's)

    def exchange_changed(self) -> None: ...  # a Runtime's native_exchange answer may differ now


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """What a plugin's factory learns about the server block it is built for."""

    zones: tuple[str, ...]
    hosts: tuple[str, ...]  # listen addresses ("" = every address)
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class NativeExchange:
    """A block's cache misses as the native workers may send them upstream themselves: plain UDP,
    the client's bytes with a fresh ID, the reply handed back to the chain (Request.pre), which
    makes every decision. What ``Runtime.native_exchange`` answers for one zone of its block."""

    upstreams: tuple[tuple[object, str, int], ...]  # (the plugin's key, host, port): those up now, in order
    policy: int  # 0 random, 1 round_robin, 2 sequential
    timeout: float  # one attempt
    expire: float  # a socket takes no new query after this age
    max_pending: int  # the plugin's bound on queries in flight (0: none)


class Runtime:
    """A plugin's running part in one server block (one per block, built from all its directives).

    Override what applies: ``handlers`` join the query chain at the plugin's position (several for
    a repeatable directive such as ``forward``, in Corefile order), ``routes``
    are served over HTTP, ``lameduck`` delays shutdown, ``start`` runs once the block's listeners
    are bound, ``close`` when the block is replaced (reload) or the server stops.
    """

    name: str = ""
    handlers: Sequence[Handler] = ()
    routes: tuple[Route, ...] = ()
    lameduck: float = 0.0
    fast_path_safe: bool = True  # may a cached answer be sent without running this plugin?
    fast_path: Any = None  # what a listener's fast path answers from (the cache's FastCache)
    counts_requests: bool = False  # the listener counts this block's requests (coredns_dns_*)
    # For a plugin ahead of the cache that changes what a cached answer looks like, the parts the
    # cache's fast path applies itself so that its hits stay the chain's bytes (issue 8):
    # a pure function of the final reply (loadbalance's shuffle; the same function the handler runs),
    reply_transform: Callable[[bytes], bytes] | None = None
    # which the native index may replace with its own round_robin shuffle for the replies this
    # accepts (loadbalance's plain round_robin: native/lb.c; any other transform keeps Python's),
    native_shuffle: Callable[[bytes], bool] | None = None
    # the largest EDNS UDP size a query keeps (bufsize lowers larger ones: the OPT echo and the limit),
    fast_path_udp_max: int = 65535
    # and question types the fast path must leave to the chain (dns64 rewrites AAAA answers).
    fast_path_skips: frozenset[int] = frozenset()
    # UDP sockets (each with its own native worker) per listener address; 0: no say (multisocket).
    num_sockets: int = 0
    # TCP timeouts for the listeners serving this block, applied in Corefile order (``timeouts``).
    listener_timeouts: tuple[TimeoutsConfig, ...] = ()
    # Narrows Plugin.miss_skippable for now (loop while it probes); a change calls Host.exchange_changed.
    miss_skippable: bool = True

    def native_exchange(self, zone: str) -> NativeExchange | None:
        """The plain UDP exchange a native worker may do for this block's misses in ``zone`` (the
        plugin that forwards them: ``forward``), or None. The chain still runs with the reply."""
        return None

    def settle_exchanged(self, req: Request) -> Reply | None:
        """``req.pre`` (the native exchange ``native_exchange`` allowed) as this plugin's answer in
        one synchronous step, with every effect its handler's ``serve`` would have had; None: the
        block's chain runs instead, and nothing here has counted anything yet."""
        return None

    def start(self, host: Host) -> None:
        return None

    def close(self) -> None:
        return None


Collector = Callable[[Host], list[Any]]  # -> prometheus_client Metric families
Factory = Callable[[Host, BlockInfo, list[Any]], Runtime]


@dataclass(frozen=True, slots=True)
class Plugin:
    """One Corefile directive.

    ``parse`` turns a directive into a config (raising ``d.error`` on bad input); ``factory`` builds
    the block's runtime from every config of that directive in the block (None: parse-only);
    ``repeatable`` allows the directive more than once per block (CoreDNS otherwise says "can only be
    used once per Server Block"); ``listen`` names the addresses a config makes the block bind;
    ``collector`` renders this plugin's metric families at scrape time; ``fast_path_safe`` says
    whether a cached answer may be sent without running the plugin (its runtime may narrow this per
    config, as ``cache`` does with prefetch); ``chaos`` lets queries of other classes than IN into
    every listener serving a block that uses it (CoreDNS ``dnsserver.EnableChaos``); ``miss_skippable``
    whether a miss that the block's forwarding plugin answers may go upstream before this plugin saw
    the query (it neither changes nor answers the query nor must see it first, and its handlers pass
    a reply that carries no error on unchanged), which lets the native workers send the block's
    misses themselves (``Runtime.native_exchange``) and the server settle such a miss without the
    chain (``Runtime.settle_exchanged``, then the cache's store); its runtime may narrow this, as
    ``loop`` does.
    """

    name: str
    parse: Callable[[Directive], Any]
    factory: Factory | None = None
    repeatable: bool = False
    listen: Callable[[Any], Sequence[str]] | None = None
    collector: Collector | None = None
    fast_path_safe: bool = True  # False: a block using it never gets answers the plugin did not see
    chaos: bool = False
    miss_skippable: bool = False  # True: misses may go upstream natively before it sees them

    @property
    def position(self) -> int:
        return POSITION[self.name]


_REGISTRY: dict[str, Plugin] = {}
# A live read-only view: a plugin registered after the server modules were imported (an extra
# module given to ``plugins.load``) is seen by the next ``plan`` and block build.
REGISTRY: Mapping[str, Plugin] = MappingProxyType(_REGISTRY)


def register(p: Plugin) -> Plugin:
    """Add a directive. Its name must have a place in plugin.cfg order (core/order.py)."""
    if p.name not in POSITION:
        raise ValueError(f"plugin {p.name!r} has no position in PLUGIN_CFG")
    if p.name in _REGISTRY and _REGISTRY[p.name] is not p:
        raise ValueError(f"plugin {p.name!r} registered twice")
    _REGISTRY[p.name] = p
    return p


def unregister(name: str) -> None:
    """Remove a directive again (a plugin loaded for one test, or a walk-through, cleans up)."""
    _REGISTRY.pop(name, None)


def lookup(name: str) -> Plugin | None:
    return _REGISTRY.get(name)


def registered() -> list[Plugin]:
    """Every registered plugin, in chain (plugin.cfg) order."""
    return sorted(_REGISTRY.values(), key=lambda p: p.position)


class Handlers(Runtime):
    """The runtime of a plugin that only sits in the query path."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = handlers
