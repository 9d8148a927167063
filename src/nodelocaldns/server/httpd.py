"""The process's one tiny HTTP/1.1 GET server: /health, /ready, /metrics and node-cache's :9353.

Several plugins (and several blocks) may name one address; they share one listener, each adding
its path. Every listener sets SO_REUSEPORT, like the DNS sockets: a second process (a handover, a
``maxSurge`` pod) binds the same address while the first still serves. Requests are small and answered in one write; the connection closes after each answer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from nodelocaldns.core.hostport import split_hostport
from nodelocaldns.server.settings import DEFAULT, ServerConfig

log = logging.getLogger("nodelocaldns")

Route = Callable[[], Awaitable[tuple[int, str, bytes]]]  # -> (status, content type, body)
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
    400: "Bad Request",
}


class HTTPServer:
    """One address. ``host`` "" is every address (dual-stack); ``port`` 0 picks a free port, read
    back into ``port`` once started."""

    def __init__(self, host: str, port: int, config: ServerConfig = DEFAULT) -> None:
        self.host = host
        self.port = port
        self.config = config
        self.routes: dict[str, Route] = {}
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        host = self.host or None
        if host == "localhost":  # Go's net.Listen binds the first address, 127.0.0.1
            host = "127.0.0.1"
        limit = self.config.http_max_request
        if host is None:
            sock = _dual_stack_socket(self.port, self.config.http_backlog)
            self.server = await asyncio.start_server(self._client, sock=sock, limit=limit)
        else:
            self.server = await asyncio.start_server(
                self._client,
                host,
                self.port,
                reuse_address=True,
                reuse_port=True,  # a second process (a handover, a surge pod) binds the same address
                limit=limit,
                backlog=self.config.http_backlog,
            )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.config.http_read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(line) < 2:
                status, ctype, body = 400, "text/plain", b"bad request\n"
            elif line[0] not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            else:
                route = self.routes.get(line[1].split("?", 1)[0])
                if route is None:
                    status, ctype, body = 404, "text/plain", b"404 page not found\n"
                else:
                    status, ctype, body = await route()
                if line[0] == "HEAD":
                    body = b""
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("http handler failed")
        finally:
            writer.close()


def _dual_stack_socket(port: int, backlog: int) -> socket.socket:
    try:
        s = _bound(socket.AF_INET6, ("::", port), dual=True)
    except OSError:
        s = _bound(socket.AF_INET, ("0.0.0.0", port), dual=False)
    s.listen(backlog)
    s.setblocking(False)
    return s


def _bound(family: int, addr: tuple[str, int], *, dual: bool) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        if dual:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(addr)
    except OSError:
        s.close()
        raise
    return s


class HTTPServers:
    """All HTTP listeners of a process, keyed by address; reused across reloads."""

    def __init__(self, config: ServerConfig = DEFAULT) -> None:
        self.config = config
        self.servers: dict[tuple[str, int], HTTPServer] = {}

    def route(self, addr: str, default_port: int, path: str, handler: Route) -> HTTPServer:
        host, port = split_hostport(addr, default_port)
        srv = self.servers.get((host, port))
        if srv is None:
            srv = self.servers[(host, port)] = HTTPServer(host, port, self.config)
        srv.routes[path] = handler
        return srv
