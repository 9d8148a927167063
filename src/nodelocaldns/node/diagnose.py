"""What a failed start-up tells the operator: which listener could not bind, and how to find out why.

``Server.start`` reports a bind failure as a bare ``[Errno 98] Address already in use``. By the
time the agent logs it, its own sockets are closed again, so probing each planned listener address
once shows which one another process holds; the hint then names the ``ss`` command that shows that
process. The probe only binds (never sends) and only to the addresses the Corefile asked for.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterable

from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import ConfigError
from nodelocaldns.server.config import plan

ListenKey = tuple[str, int]


def listen_keys(text: str) -> list[ListenKey]:
    """The (host, port) pairs a Corefile that already passed ``check_corefile`` listens on."""
    try:
        return sorted(plan(parse_corefile(text)).listeners)
    except ConfigError:
        return []


def format_key(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"


def listen_addresses(text: str) -> str:
    """``169.254.20.10:53, 198.18.0.10:53``, or ``?`` when the text does not plan."""
    return ", ".join(format_key(h, p) for h, p in listen_keys(text)) or "?"


def _in_use(host: str, port: int, kind: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    addr = host.split("%")[0] or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    with contextlib.closing(socket.socket(family, kind)) as s:
        if kind == socket.SOCK_STREAM:
            # Only skips TIME_WAIT leftovers; a listening socket still makes the bind fail.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # As the server binds: a peer agent sharing the port (a handover) does not hold it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((addr, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def held_listeners(keys: Iterable[ListenKey]) -> list[tuple[str, str, int]]:
    """``(proto, host, port)`` for each planned listener another process holds right now."""
    held = []
    for host, port in keys:
        for proto, kind in (("udp", socket.SOCK_DGRAM), ("tcp", socket.SOCK_STREAM)):
            if _in_use(host, port, kind):
                held.append((proto, host, port))
    return held


def bind_hint(exc: BaseException, keys: Iterable[ListenKey]) -> str:
    """A sentence that tells the operator what to do about ``exc`` (empty when there is nothing)."""
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        held = held_listeners(keys)
        if not held:
            return "; another process holds the port: find it with `ss -ltunp`"
        parts = [
            f"{proto} {format_key(host, port)} is held by another process (find it with"
            f" `ss -l{proto[0]}np 'sport = :{port}'`)"
            for proto, host, port in held
        ]
        return "; " + "; ".join(parts)
    if code == errno.EADDRNOTAVAIL:
        return (
            "; an address in `bind` is not on this node: it must be in -localip (with"
            " -setupinterface on) or already be configured on the node"
        )
    if code == errno.EACCES:
        return "; binding a port below 1024 needs root or CAP_NET_BIND_SERVICE"
    return ""
