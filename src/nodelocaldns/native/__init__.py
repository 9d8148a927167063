"""The compiled hot path (``nodelocaldns._native``) behind one switch; see README.md here.

``NODELOCALDNS_NATIVE=0`` disables the extension even when it is built; ``native_available()``
says which path is in use and ``native_status()`` why. The Python cache plugin stays the
authority: it decides what is stored and evicted and mirrors that into an ``Index`` with
``insert_entry``/``Index.remove``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nodelocaldns._native import Index, Worker

Miss = tuple[bytes, tuple[Any, ...]]


class CachedAnswer(Protocol):
    """What the index copies from a cache entry (plugins/cache/entry.Entry): this package sits
    below the plugins, which will import it."""

    heads: tuple[bytes, ...]
    offs: tuple[int, ...]
    stored: float
    orig: int
    fl: int
    q: bytes | None  # the stored question when its name has capitals

    def orig_body(self) -> bytes | None: ...


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get("NODELOCALDNS_NATIVE", "1").strip() == "0":
        return None, "disabled by NODELOCALDNS_NATIVE=0"
    try:
        from nodelocaldns import _native
    except ImportError as e:  # built without a compiler: the pure-Python path serves
        return None, f"extension not built ({e})"
    return _native, "native"


_mod, _status = _load()


def native_available() -> bool:
    """True when the native hot path is in use (built and not disabled)."""
    return _mod is not None


def native_status() -> str:
    """``"native"``, or why the pure-Python path is in use (for the one start-up warning)."""
    return _status


def module() -> ModuleType:
    if _mod is None:
        raise RuntimeError(f"native path unavailable: {_status}")
    return _mod


def new_index(capacity: int, max_bytes: int = 0) -> Index:
    """A bounded index: at most ``capacity`` entries and (if non-zero) ``max_bytes`` of them."""
    idx: Index = module().Index(capacity, max_bytes)
    return idx


def insert_entry(
    index: Index, key: bytes, e: CachedAnswer, cap: int = 65535, stat: int = 0, shuffle: bool = False,
    stale: int = 0,
) -> bool:  # fmt: skip
    """Mirror one Python cache entry (the authority) into the index; False when the index is full.

    The body goes in with every TTL at the original value, whatever second the entry's memo is
    at: the native side computes the remaining TTL itself from ``stored`` and ``orig``. ``cap`` is
    the block's UDP size cap (bufsize), ``stat`` the zone | stat id bits its hits are counted under.
    ``shuffle``: loadbalance's round_robin on every hit (native/lb.c); a ValueError when the entry
    cannot be shuffled as wire slices (the caller leaves it to Python's fast path). ``stale``: the
    index's serve_stale slot for the entry's block (``Index.set_stale``), 0 for none.
    """
    m = _mod if _mod is not None else module()
    flags = e.fl & (m.FLAG_KEEPTTL | m.FLAG_AA) | (m.FLAG_SHUFFLE if shuffle else 0)
    body = e.orig_body()
    if body is None:  # a mirrored entry whose own index no longer holds it
        return False
    return index.insert(key, b"".join(e.heads), body, e.offs, e.stored, e.orig, flags, e.q, cap, stat, stale)


class NativeUDP:
    """One native worker on ``sock`` plus a Python thread that hands its misses on in batches.

    ``on_miss`` gets up to ``per_call`` (packet, address) pairs per call, one wake-up per batch.
    An event loop can instead watch ``worker.fileno()`` and call ``worker.drain()`` itself.
    """

    def __init__(self, sock: socket.socket, index: Index, on_miss: Callable[[list[Miss]], None],
                 batch: int = 32, ring: int = 1024, per_call: int = 64) -> None:  # fmt: skip
        self.sock = sock
        self.worker: Worker = module().serve_udp(sock.fileno(), index, batch, ring)
        self.on_miss = on_miss
        self.per_call = per_call
        self.stopping = False
        self.thread = threading.Thread(target=self._misses, name="native udp misses", daemon=True)
        self.thread.start()

    def _misses(self) -> None:
        w = self.worker
        while not self.stopping:
            if w.wait(0.2):
                got = w.drain(self.per_call)
                if got:
                    self.on_miss(got)

    def counters(self) -> dict[str, int]:
        return self.worker.counters()

    def stop(self) -> None:
        """Stop the native thread, then the miss thread (misses already queued are delivered)."""
        self.worker.stop()
        self.stopping = True
        self.thread.join(2.0)
        rest = self.worker.drain(1 << 30)
        if rest:
            self.on_miss(rest)
