"""What a plugin chain sees: the incoming query, where it came from, and what it answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from nodelocaldns.dns.wire import Query, Records, name_to_text


@dataclass(slots=True)
class Exchanged:
    """A native worker's exchange of this query (core.plugin.NativeExchange): the forwarding
    plugin takes it as its first attempt, so it counts, fails over and stores as its own."""

    upstream: object  # the plugin's key of the upstream it went to
    reply: bytes | None  # the reply (the client's ID), or None: ``err`` (an errno; ETIMEDOUT)
    seconds: float  # the round trip, or how long it waited
    err: int = 0


@dataclass(slots=True)
class Request:
    """One client query on its way through a server block's plugin chain."""

    data: bytes  # the query exactly as received
    q: Query
    remote: tuple[str, int]
    proto: str  # "udp" | "tcp"
    family: int  # 1 = IPv4, 2 = IPv6 (CoreDNS metric label values)
    server: str  # "dns://IP:PORT", the listener label
    zone: str = "."  # the server-block zone that matched
    start: float = 0.0  # perf_counter() when the query arrived
    internal: bool = False  # prefetch/refresh or loop probe: no client is waiting
    key: bytes = b""  # the cache key if the listener already built it (shares memory with its memo)
    pre: Exchanged | None = None  # the upstream's answer a native worker already fetched
    # The listener's route for ``key`` (Router.route's own tuple), set with ``key``: a cache
    # mirror trusts it instead of routing the key again (server/native_index.BlockMirror).
    route: object = None
    _qname_text: str | None = field(default=None, repr=False)

    @property
    def qname(self) -> str:
        """Lowercased, fully qualified query name."""
        if self._qname_text is None:
            self._qname_text = name_to_text(self.q.qname)
        return self._qname_text

    @property
    def size_limit(self) -> int:
        """The largest reply this client takes: 65535 on TCP, its EDNS size (>= 512) on UDP."""
        if self.proto == "tcp":
            return 65535
        return self.q.udp_size if self.q.edns else 512


@dataclass(slots=True)
class Reply:
    """A chain's answer.

    ``wire`` None means nothing was written: the server answers with a bare ``rcode`` reply (this is
    how a failed upstream becomes a SERVFAIL that the cache never sees). ``final`` means ``wire``
    already carries the client's ID, flags, OPT and fits the client's size.
    """

    wire: bytes | None
    rcode: int
    plugin: str = ""
    error: BaseException | None = None
    final: bool = False
    # The walk of ``wire`` by the plugin that wrote it (dns.wire.scan_reply: wire, first record
    # offset, records), so the cache need not walk it again; trusted only while scan[0] is wire.
    scan: tuple[bytes, int, Records] | None = None
