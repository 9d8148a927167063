"""Peer discovery: which other agents on this node serve the same local addresses right now.

Two agents with the same flags share one node's interface, rules and listening addresses during a
rollout (``maxSurge: 1``) and, in the redundant mode, all the time. Each must know whether another
live agent owns that state before it removes any of it. The runtime directory (``-runtimedir``,
``/run/nodelocaldns``: a hostPath both pods mount) holds one directory per *instance*, named by a
hash of what makes two agents interchangeable: the network namespace, the interface, the local IPs
and the DNS port. In it:

* ``peer-<id>``: one file per running agent, ``flock``-ed by that agent for as long as it lives. The
  kernel drops the lock when the process dies however it dies (SIGKILL, OOM kill), so "the lock is
  held" is exactly "the agent is alive"; a file whose lock can be taken is a dead agent's and is
  removed by whoever finds it. The file names the agent's pid and phase (``starting``, ``serving``,
  ``leaving``). It is made under a temporary name, locked, then renamed into place, so no scanner
  ever sees an unlocked live file.
* ``.lock``: the instance lock, held briefly while an agent joins and while it decides whether it is
  the last one out; the last one keeps it until it exits, so a new agent's set-up never runs while
  an old one's teardown is still removing things.

The decisions are pure (``owner_after_leaving``, ``owner_after_failed_start``); the files are the
thin part around them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("nodelocaldns.node")

STARTING, SERVING, LEAVING = "starting", "serving", "leaving"
_STATE_SIZE = 256  # the state is rewritten in place with one pwrite of this many bytes


@dataclass(frozen=True)
class Peer:
    """Another live agent of the same instance, as its file says."""

    pid: int
    phase: str
    name: str


def instance_key(netns: str, interface: str, ips: Iterable[str], dns_port: int) -> str:
    """What two agents must share to be peers; order of ``-localip`` does not matter."""
    text = "|".join([netns, interface, ",".join(sorted(ips)), str(dns_port)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def owner_after_leaving(others: Sequence[Peer]) -> Peer | None:
    """The peer that keeps serving once this agent is gone: interface and rules stay for it. A peer
    that is itself leaving is no owner (two agents stopped together: the second one tears down)."""
    return next((p for p in others if p.phase == SERVING), None)


def owner_after_failed_start(others: Sequence[Peer]) -> Peer | None:
    """After a failed start every live peer may own the state, whatever its phase: a leaving one
    that waits for us re-decides once we are gone."""
    return others[0] if others else None


def still_starting(others: Sequence[Peer]) -> list[Peer]:
    return [p for p in others if p.phase == STARTING]


def _netns_id() -> str:
    try:
        st = os.stat("/proc/self/ns/net")
    except OSError:
        return "unknown"
    return f"{st.st_dev}:{st.st_ino}"


class PeerRegistry:
    """This agent's entry in the runtime directory, and what it can see of the others."""

    def __init__(self, rundir: str, interface: str, ips: Iterable[str], dns_port: int) -> None:
        self.dir = Path(rundir) / instance_key(_netns_id(), interface, ips, dns_port)
        self.name = f"peer-{uuid.uuid4().hex[:12]}"
        self._fd: int | None = None
        self._group: int | None = None
        self.phase = STARTING

    # -- the instance lock -------------------------------------------------------------------------

    def lock_instance(self, timeout: float) -> bool:
        """Take the instance lock (False after ``timeout``: go on without it, and say so)."""
        if self._group is not None:
            return True
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
                continue
            self._group = fd
            return True

    def unlock_instance(self) -> None:
        if self._group is not None:
            os.close(self._group)  # closing the only descriptor drops the flock
            self._group = None

    # -- this agent's file -------------------------------------------------------------------------

    def join(self, lock_timeout: float) -> list[Peer]:
        """Appear as ``starting`` (under the instance lock, so after any teardown in progress);
        returns the live peers found."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.lock_instance(lock_timeout):
            log.warning(
                "The instance lock %s is still held after %gs (a teardown that hangs?); going on",
                self.dir / ".lock",
                lock_timeout,
            )
        try:
            tmp = self.dir / f".tmp-{self.name}"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fd = fd
            self._write()
            os.rename(tmp, self.dir / self.name)
            return self.others()
        finally:
            self.unlock_instance()

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        if self._fd is not None:
            self._write()

    def _write(self) -> None:
        assert self._fd is not None
        state = json.dumps({"pid": os.getpid(), "phase": self.phase}).encode()
        os.pwrite(self._fd, state.ljust(_STATE_SIZE), 0)

    def leave(self) -> None:
        """Remove this agent's file (at exit; a crash leaves it, unlocked, for the next scan)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.dir / self.name)
            os.close(self._fd)
            self._fd = None
        self.unlock_instance()

    # -- the others --------------------------------------------------------------------------------

    def others(self) -> list[Peer]:
        """Live peers; a dead one's file is removed on the way."""
        found: list[Peer] = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return found
        for name in names:
            if not name.startswith("peer-") or name == self.name:
                continue
            peer = self._probe(name)
            if peer is not None:
                found.append(peer)
        return found

    def _probe(self, name: str) -> Peer | None:
        path = self.dir / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return None  # gone meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                return _parse(name, os.pread(fd, _STATE_SIZE, 0))
            # The lock was free: its agent is dead (the kernel released it). Its file goes.
            for gone in (path, self.dir / f"fds-{name}"):  # and its socket-sharing endpoint
                with contextlib.suppress(OSError):
                    os.unlink(gone)
            log.info("Removed the peer file of an agent that is gone (%s)", name)
            return None
        finally:
            os.close(fd)


def _parse(name: str, raw: bytes) -> Peer:
    try:
        state = json.loads(raw.decode().strip() or "{}")
    except ValueError:
        state = {}
    return Peer(int(state.get("pid", 0)), str(state.get("phase", STARTING)), name)


def describe(peers: Sequence[Peer]) -> str:
    return ", ".join(f"pid {p.pid} ({p.phase})" for p in peers)
