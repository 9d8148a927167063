"""``host:port`` as HTTP plugin addresses write it (``:8080``, ``[::1]:8080``, ``localhost:9153``)."""

from __future__ import annotations

from nodelocaldns.corefile.model import Directive


def split_hostport(addr: str, default_port: int) -> tuple[str, int]:
    """``:8080``, ``127.0.0.1:9253``, ``[::1]:8080``, ``localhost:9153``; empty host = all addresses."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    if addr.count(":") > 1:
        return addr, default_port
    host, sep, p = addr.rpartition(":")
    if not sep:
        return addr, default_port
    return host, int(p)


def check_addr(d: Directive, addr: str, default_port: int) -> None:
    """Raise the directive's error (file:line) unless ``addr`` is a usable host:port."""
    try:
        _host, port = split_hostport(addr, default_port)
    except ValueError:
        raise d.error(f"invalid address {addr!r}") from None
    if not 0 < port < 65536:
        raise d.error(f"invalid port in {addr!r}")
