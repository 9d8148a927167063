"""The agent's side of peer discovery (``peers.py``): join, say when serving, decide at the end.

* ``join`` before any node setup: a peer found is adopted (its interface, addresses and rules are
  already what this run wants; the first tick changes nothing), never fought over;
* ``serving`` once the listeners are bound and the rules are in;
* ``leaving`` on SIGTERM, before lameduck: wait (up to ``wait``) for peers that are still starting,
  then, if one serves, keep interface and rules for it, and stop reading only now (the UDP sockets
  then hand new datagrams to the peer and answer what was queued, see ``UDPWorker.stop``). With no
  serving peer this agent is the last one out: it keeps the instance lock until it exits and tears
  down as node-cache does;
* ``failed_start_owner``: after a failed start any live peer owns the state; nothing is removed.

Every step runs its file work in a thread: flock waits must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from nodelocaldns.node.flags import NodeCacheParams
from nodelocaldns.node.peers import (
    LEAVING,
    SERVING,
    Peer,
    PeerRegistry,
    describe,
    owner_after_failed_start,
    owner_after_leaving,
    still_starting,
)

log = logging.getLogger("nodelocaldns.node")


class Handover:
    def __init__(self, registry: PeerRegistry, *, lock_timeout: float = 60.0, wait: float = 60.0) -> None:
        self.registry = registry
        self.lock_timeout = lock_timeout
        self.wait = wait
        self.earlier: list[Peer] = []  # the live peers found at join: this agent connects to them

    @classmethod
    def create(cls, params: NodeCacheParams) -> Handover | None:
        if not params.runtime_dir:
            return None
        ips = [ip.compressed for ip in params.local_ips]
        return cls(PeerRegistry(params.runtime_dir, params.interface_name, ips, params.dns_port))

    async def join(self) -> bool:
        """False when the runtime directory is unusable: the run goes on as a lone agent."""
        try:
            peers = await asyncio.to_thread(self.registry.join, self.lock_timeout)
        except OSError as exc:
            log.error(
                "Peer discovery off: cannot use %s (%s); this agent tears down on exit as if alone",
                self.registry.dir,
                exc,
            )
            return False
        self.earlier = peers
        if peers:
            log.info(
                "Live agents serve the same addresses (%s): adopting the interface and rules",
                describe(peers),
            )
        return True

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """The instance lock around a step that must not interleave with a peer's (the first rules tick)."""
        await asyncio.to_thread(self.registry.lock_instance, self.lock_timeout)
        try:
            yield
        finally:
            self.registry.unlock_instance()

    async def serving(self) -> None:
        await asyncio.to_thread(self.registry.set_phase, SERVING)

    async def failed_start_owner(self) -> Peer | None:
        return owner_after_failed_start(await asyncio.to_thread(self.registry.others))

    async def leaving(self) -> Peer | None:
        """The peer that keeps serving after this agent, or None: this one is the last one out."""
        return await asyncio.to_thread(self._leaving)

    def _leaving(self) -> Peer | None:
        reg = self.registry
        reg.lock_instance(self.lock_timeout)
        reg.set_phase(LEAVING)
        deadline = time.monotonic() + self.wait
        others = reg.others()
        if still_starting(others):
            log.info("Waiting up to %gs for starting agents: %s", self.wait, describe(others))
        while still_starting(others) and time.monotonic() < deadline:
            time.sleep(0.05)
            others = reg.others()
        owner = owner_after_leaving(others)
        if owner is None:
            starting = still_starting(others)
            if starting:
                # Alive but not serving after the wait: it owns the state from here on; no teardown.
                log.warning("Agents still starting after %gs: %s", self.wait, describe(starting))
                reg.unlock_instance()
                return starting[0]
            log.info("No other agent serves these addresses: tearing down on the way out")
            return None  # the instance lock stays held until exit: no set-up races this teardown
        reg.unlock_instance()
        return owner

    def close(self) -> None:
        self.registry.leave()
