"""The server's tunables: what is not a Corefile setting but used to be a literal in the code.

One frozen object, built once per process and handed to :class:`~nodelocaldns.server.server.Server`;
``nodelocaldns serve`` and ``node-cache`` both run on ``DEFAULT``. The values are the ones the
server was tuned and benchmarked with; none is an operator flag (node-cache has no such flags).
"""

from __future__ import annotations

from dataclasses import dataclass

# Not tunables but bounds every UDP reader (the Python thread, the native side, a peer's sockets) shares:
UDP_READ = 4097
"""recvfrom size: a DNS datagram here is at most 4096 bytes; one that fills this was cut short and is
dropped as oversized."""
DRAIN_READS = 65536
"""Datagrams read after a socket's end mark (or its worker stopped): bounded, whatever arrives."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    tcp_max_conns: int = 1024
    """Open DNS-over-TCP connections per listener; a connection beyond that is closed at accept."""
    tcp_idle_timeout: float = 10.0
    """Seconds a TCP connection may sit without a query before it is closed (CoreDNS: 10 s)."""
    tcp_read_timeout: float = 3.0
    """Seconds to receive the rest of a query whose first bytes arrived (slow-loris bound)."""
    tcp_backlog: int = 1024
    """listen() backlog of DNS TCP sockets. asyncio's default of 100 drops SYNs in a burst of new
    connections, which costs those clients a 1 s retransmit."""
    udp_rcvbuf: int = 4 << 20
    """SO_RCVBUF of DNS UDP sockets: absorbs bursts while the answering thread is busy."""
    udp_sndbuf: int = 4 << 20
    """SO_SNDBUF of DNS UDP sockets."""
    drain: float = 5.0
    """Upper bound, in seconds, for answering in-flight queries after the listeners stop accepting."""
    slow_path_max: int = 4096
    """Queries per listener and transport between the receive path and a reply on the slow path
    (waiting for the event loop, or in the plugin chain, e.g. on an upstream). Past it a UDP query
    gets REFUSED at once (nodelocaldns_dns_refused_requests_total), or is dropped and counted if it
    is not a plain query (nodelocaldns_dns_dropped_requests_total); names the cache holds (expired:
    serve_stale, refresh) have a quarter more room and go first. A TCP connection stops being read
    until one finishes. Above forward's default max_concurrent (1000), so a hung upstream is
    answered REFUSED by forward past that cap before the listener's cap is reached; at ~5 KiB per
    query in flight it bounds the slow path's memory to ~20 MiB per listener and transport."""
    udp_waiting: int = 256
    """New names (not in the cache) handed to the event loop and not started yet, per listener, past
    which the receive path answers REFUSED itself: the Python UDP thread at once, the native workers
    once told to (``Worker.shed``; they take new names again when half of these have started). A
    REFUSED from the receive path costs a tenth of one from the loop; at the loop's 5-8k new names
    per second this is ~50 ms of waiting."""
    route_memo_max: int = 200_000
    """Entries in a listener's question -> cache memo (the fast path's route lookup); the memo is
    emptied when full, so memory stays bounded under random names."""
    log_burst: int = 5
    """Warnings about malformed queries or fast-path failures let through per ``log_window``..."""
    log_window: float = 10.0
    """...seconds; the rest are counted and reported as "N more suppressed"."""
    http_backlog: int = 128
    """listen() backlog of the health/ready/metrics HTTP listeners."""
    http_read_timeout: float = 5.0
    """Seconds an HTTP client has to send its request head."""
    http_max_request: int = 8192
    """Bytes an HTTP request head may take; a longer one is dropped."""


DEFAULT = ServerConfig()
