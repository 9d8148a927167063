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


# Go's own forms, for node-cache's flags and the kube-dns ConfigMap.


def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``, error cases included; raises ValueError with Go's wording.

    ``"[fd00::1]:53"`` gives ``("fd00::1", "53")``; ``"1.2.3.4:"`` gives ``("1.2.3.4", "")``.
    """

    def fail(why: str) -> ValueError:
        return ValueError(f"address {hostport}: {why}")

    colon = hostport.rfind(":")
    if colon < 0:
        raise fail("missing port in address")
    start, end_of_host = 0, 0
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise fail("missing ']' in address")
        if close + 1 == len(hostport):
            raise fail("missing port in address")
        if close + 1 != colon:
            if hostport[close + 1] == ":":
                raise fail("too many colons in address")
            raise fail("missing port in address")
        host = hostport[1:close]
        start, end_of_host = 1, close + 1
    else:
        host = hostport[:colon]
        if ":" in host:
            raise fail("too many colons in address")
    if "[" in hostport[start:]:
        raise fail("unexpected '[' in address")
    if "]" in hostport[end_of_host:]:
        raise fail("unexpected ']' in address")
    return host, hostport[colon + 1 :]


def parse_port(text: str, *, allow_zero: bool = False) -> int:
    """A decimal port number; ValueError otherwise."""
    value = text.strip()
    low = 0 if allow_zero else 1
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= 65535:
        raise ValueError(f"invalid port {text!r}")
    return int(value)


def listen_address(addr: str) -> tuple[str | None, int]:
    """A Go listen address ``host:port`` -> (host, or None for "all addresses", port).

    Accepts ``0.0.0.0:9353``, ``[::]:9353``, ``:9353``, ``localhost:9353``. Go's ``[::]`` listener is
    dual-stack while asyncio sets IPV6_V6ONLY, so ``::`` maps to "all addresses" like an empty host.
    """
    try:
        host, port = split_host_port(addr)
        number = parse_port(port, allow_zero=True)
    except ValueError as exc:
        if addr.count(":") > 1 and not addr.startswith("["):
            raise ValueError("IPv6 hosts need [brackets]") from exc
        raise ValueError("want host:port") from exc
    return (None if host in ("", "::") else host), number
