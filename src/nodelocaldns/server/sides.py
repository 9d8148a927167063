"""What a listener sees of its readers: the UDP side (the Python thread or the native workers), a
peer's sockets read on the loop, and one TCP connection."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nodelocaldns.metrics.dnsstats import ZoneAcc
    from nodelocaldns.plugins.cache.entry import Cached


class UDPSide(Protocol):
    """A listener's UDP reader: the Python thread (server/udp.UDPWorker) or the native workers."""

    def shared_sockets(self) -> list[socket.socket]: ...

    @property
    def dropped(self) -> int: ...

    @property
    def refused(self) -> int: ...

    n_handed: int
    n_finished: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class SharedGate(Protocol):
    """The bound on a peer's sockets read on the loop (server/slowgate.SlowGate), as metrics read it."""

    refused: int
    dropped: int


class TCPSide(Protocol):
    """One TCP connection (server/tcp.TCPConnection), as the listener and the server use it."""

    @property
    def transport(self) -> asyncio.BaseTransport | None: ...

    def resume(self) -> None: ...


class NativeSide(UDPSide, Protocol):
    """A listener's native UDP workers (server/native_udp.NativeUDPServer), as the listener uses them."""

    def lookup(self, data: bytes, now: float, tcp: bool) -> tuple[bytes, int] | None: ...

    def holds(self, key: bytes, entry: Cached | None = None) -> bool:
        """Does the index hold ``key``? ``entry``: what the cache store holds for it, if known."""

    def translate(self, k: int) -> tuple[int, ZoneAcc]: ...

    def counters(self) -> dict[str, int]: ...
