"""Peer agents hold and read each other's UDP DNS sockets, so a SIGKILL loses no queued datagram.

The kernel hashes each flow to one socket of a port's SO_REUSEPORT group, and a socket dies with
its process's last descriptor, taking its queue with it. An agent that is killed runs no
drain-before-close (``UDPWorker.stop``); what the kernel hashed to its sockets in the milliseconds
before its descriptors close would be lost. So every agent passes its UDP sockets to each peer
(SCM_RIGHTS over a unix socket in the instance directory, ``fds-<peer name>``) and reads the
peers' sockets as well as its own (server/shared_udp.py). A killed agent's sockets then stay in the
group, held by the survivor, which keeps answering their queues.

One ``SOCK_SEQPACKET`` connection per pair of agents: the one that joined later (it saw the other
at ``join``; joining is serialised by the instance lock) connects. Messages, one JSON object each:

* ``hello`` (both ways, first): name, pid, the listener addresses, and their sockets as SCM_RIGHTS;
* ``bye``: the sender leaves cleanly; the receiver stops reading the sender's sockets, closes its
  copies and answers ``ack``. Only then does the sender drain and close its own sockets: an end mark
  it queues to itself is never read by a peer.
* end of file without ``bye``: the peer died. Its sockets are now held only here: they are retired
  as the owner would have done (connect to self, end mark, answer the rest, close), so the kernel
  moves their flows to the live sockets and no descriptor outlives the peer.

Both sides check the other's credentials (same uid) and every socket received (a UDP socket bound
to the address of one of our listeners); anything else is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodelocaldns.node.peers import Peer, PeerRegistry
from nodelocaldns.server.server import Server
from nodelocaldns.server.shared_udp import SharedReader

log = logging.getLogger("nodelocaldns.node")

HELLO, BYE, ACK = "hello", "bye", "ack"
_MSG = 16384
_MAX_FDS = 128
_HELLO_TIMEOUT = 5.0


def socket_path(directory: Path, peer_name: str) -> Path:
    return directory / f"fds-{peer_name}"


@dataclass(eq=False)
class _Link:
    sock: socket.socket
    peer: str = ""
    pid: int = 0
    readers: list[SharedReader] = field(default_factory=list)
    acked: threading.Event = field(default_factory=threading.Event)
    left: bool = False  # the peer said bye
    closing: bool = False  # we close it: its end of file means nothing


class SocketShare:
    def __init__(
        self,
        registry: PeerRegistry,
        server: Server,
        loop: asyncio.AbstractEventLoop,
        *,
        connect_timeout: float = 60.0,
    ) -> None:
        self.registry = registry
        self.server = server
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.path = socket_path(registry.dir, registry.name)
        self.links: list[_Link] = []
        self.leaving = False
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # -- start -------------------------------------------------------------------------------------

    def start(self, earlier: Sequence[Peer]) -> None:
        """Listen for later agents; connect to the ones that joined before us."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.bind(str(self.path))
        os.chmod(self.path, 0o600)
        s.listen(8)
        s.settimeout(0.5)  # our own socket: lets the accept loop see ``leaving``
        self._listener = s
        self._thread(self._accept_loop, "sockshare accept")
        for peer in earlier:
            self._thread(self._connect, f"sockshare to {peer.name}", peer)

    def _thread(self, target: Any, name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        s = self._listener
        while s is not None and not self.leaving:
            try:
                conn, _ = s.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by leave/close
            conn.settimeout(None)
            try:
                self._check_creds(conn)
                link = _Link(conn)
                self._receive_hello(link)
                self._send_hello(link)
            except (OSError, ValueError) as exc:
                log.warning("Socket sharing with a peer failed: %s", exc)
                conn.close()
                continue
            self._thread(self._serve, f"sockshare from {link.peer}", link)

    def _connect(self, peer: Peer) -> None:
        path = socket_path(self.registry.dir, peer.name)
        deadline = time.monotonic() + self.connect_timeout
        checked = time.monotonic()
        while not self.leaving:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                conn.connect(str(path))
            except (FileNotFoundError, ConnectionRefusedError):
                conn.close()
                now = time.monotonic()
                if now >= deadline:
                    log.warning("Agent pid %d never offered its sockets; not sharing with it", peer.pid)
                    return
                if now - checked >= 0.5:  # a peer that died while starting never will
                    checked = now
                    if all(p.name != peer.name for p in self.registry.others()):
                        return
                time.sleep(0.05)
                continue
            except OSError as exc:
                conn.close()
                log.warning("Cannot reach agent pid %d to share sockets: %s", peer.pid, exc)
                return
            try:
                self._check_creds(conn)
                link = _Link(conn)
                self._send_hello(link)
                self._receive_hello(link)
            except (OSError, ValueError) as exc:
                log.warning("Socket sharing with agent pid %d failed: %s", peer.pid, exc)
                conn.close()
                return
            self._serve(link)
            return

    @staticmethod
    def _check_creds(conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.geteuid():
            raise ValueError(f"peer runs as uid {uid}, not {os.geteuid()}")

    # -- hello ---------------------------------------------------------------------------------------

    def _own_sockets(self) -> list[tuple[tuple[str, int], socket.socket]]:
        """This agent's UDP DNS sockets (the ones it binds itself), with their listener address."""
        out: list[tuple[tuple[str, int], socket.socket]] = []
        for key, lst in list(self.server.listeners.items()):
            if lst.udp is not None:  # UDPWorker's one socket, or every native worker's
                out.extend((key, s) for s in lst.udp.shared_sockets())
        return out

    def _send_hello(self, link: _Link) -> None:
        own = self._own_sockets()
        msg = {"t": HELLO, "name": self.registry.name, "pid": os.getpid(), "keys": [list(k) for k, _ in own]}
        socket.send_fds(link.sock, [json.dumps(msg).encode()], [s.fileno() for _, s in own])

    def _receive_hello(self, link: _Link) -> None:
        link.sock.settimeout(_HELLO_TIMEOUT)
        raw, fds, flags, _ = socket.recv_fds(link.sock, _MSG, _MAX_FDS)
        link.sock.settimeout(None)
        socks = []  # owned from here: closed unless adopted
        for fd in fds:
            try:
                socks.append(socket.socket(fileno=fd))
            except OSError:  # not a socket
                os.close(fd)
        try:
            if flags & socket.MSG_CTRUNC:
                raise ValueError("too many descriptors")
            msg = json.loads(raw.decode() or "{}")
            keys = msg.get("keys", [])
            if msg.get("t") != HELLO or not isinstance(keys, list) or len(keys) != len(socks):
                raise ValueError("not a hello")
            link.peer, link.pid = str(msg.get("name", "")), int(msg.get("pid", 0))
            with self._lock:
                if any(other.peer == link.peer for other in self.links):
                    raise ValueError(f"already sharing with {link.peer}")
            pairs = [(self._match(tuple(k), s), s) for k, s in zip(keys, socks, strict=True)]
        except (ValueError, TypeError, KeyError) as exc:
            for s in socks:
                s.close()
            raise ValueError(str(exc)) from exc
        fut = asyncio.run_coroutine_threadsafe(self._adopt(link, pairs), self.loop)
        fut.result(_HELLO_TIMEOUT)

    def _match(self, key: tuple[Any, ...], sock: socket.socket) -> tuple[str, int] | None:
        """The listener a received socket belongs to: a UDP socket bound where ours is bound."""
        if len(key) != 2:
            return None
        k = (str(key[0]), int(key[1]))
        lst = self.server.listeners.get(k)
        if lst is None or lst.udp is None or sock.type != socket.SOCK_DGRAM:
            return None
        try:
            same = any(sock.getsockname() == own.getsockname() for own in lst.udp.shared_sockets())
        except OSError:
            return None
        return k if same else None

    async def _adopt(self, link: _Link, pairs: list[tuple[tuple[str, int] | None, socket.socket]]) -> None:
        for key, s in pairs:
            lst = self.server.listeners.get(key) if key is not None else None
            if lst is None or self.leaving:
                s.close()
                continue
            r = SharedReader(lst, s, self.loop)
            r.start()
            link.readers.append(r)
        with self._lock:
            self.links.append(link)
        log.info(
            "Sharing DNS sockets with agent pid %d: reading its %d UDP sockets", link.pid, len(link.readers)
        )

    # -- the link's life -----------------------------------------------------------------------------

    def _serve(self, link: _Link) -> None:
        """Messages from the peer until it says bye or goes away (this thread's remaining life)."""
        while True:
            try:
                raw = link.sock.recv(_MSG)
            except OSError:
                raw = b""
            if not raw:
                break
            try:
                kind = json.loads(raw.decode()).get("t")
            except (ValueError, AttributeError):
                continue
            if kind == BYE:
                link.left = True
                self._in_loop(self._release, link)
                with contextlib.suppress(OSError):
                    link.sock.send(json.dumps({"t": ACK}).encode())
            elif kind == ACK:
                link.acked.set()
        if not link.closing and not link.left:
            log.info(
                "Agent pid %d is gone: answering what its sockets still hold, then closing them", link.pid
            )
            self._in_loop(self._retire, link)
        self._forget(link)

    def _in_loop(self, fn: Any, link: _Link) -> None:
        async def run() -> None:
            fn(link)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(run(), self.loop).result(_HELLO_TIMEOUT)

    @staticmethod
    def _release(link: _Link) -> None:
        for r in link.readers:
            r.release()

    @staticmethod
    def _retire(link: _Link) -> None:
        for r in link.readers:
            r.retire()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            if link in self.links:
                self.links.remove(link)
        link.closing = True
        link.sock.close()

    # -- leaving -------------------------------------------------------------------------------------

    async def leave(self, timeout: float = 2.0) -> None:
        """Before this agent drains its own sockets: stop reading the peers' (between datagrams),
        then tell each peer to stop reading ours and wait for its ``ack`` (bounded)."""
        self.leaving = True
        self._close_listener()
        with self._lock:
            links = list(self.links)
        for link in links:
            self._release(link)
        if links:
            await asyncio.to_thread(self._bye, links, timeout)

    def _bye(self, links: list[_Link], timeout: float) -> None:
        for link in links:
            with contextlib.suppress(OSError):
                link.sock.send(json.dumps({"t": BYE}).encode())
        deadline = time.monotonic() + timeout
        for link in links:
            if not link.acked.wait(max(0.0, deadline - time.monotonic())) and not link.left:
                log.warning("Agent pid %d did not confirm it stopped reading our sockets", link.pid)
            link.closing = True
            with contextlib.suppress(OSError):
                link.sock.shutdown(socket.SHUT_RDWR)

    def _close_listener(self) -> None:
        s, self._listener = self._listener, None
        if s is not None:
            s.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def close(self) -> None:
        """At exit, whatever happened before: no descriptor of a peer stays open here."""
        self.leaving = True
        self._close_listener()
        with self._lock:
            links = list(self.links)
        for link in links:
            link.closing = True
            with contextlib.suppress(OSError):
                link.sock.shutdown(socket.SHUT_RDWR)
            for r in link.readers:
                if not r.closed:
                    r.release()
