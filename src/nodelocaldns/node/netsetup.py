"""The node's network setup around the server's life: backend, stale rules, the sync loop, teardown.

Order (node-cache's, made explicit; ``NodeAgent`` calls these):

1. ``prepare``: pick the rules backend, remove rules an earlier run left for addresses that are no
   longer ours, then the interface and its addresses (no rules yet), so ``bind`` can succeed;
2. the DNS server starts;
3. ``install_rules``: the first full tick puts the NOTRACK/ACCEPT rules in, then ``SyncLoop``
   re-checks interface and rules every ``-syncinterval``;
4. on shutdown, ``delete_rules`` runs as the server's DRAINING hook (after lameduck, before the
   sockets close) and ``remove_interface`` as its CLOSED hook.

All netlink and iptables/nft work runs on the ``NetWorker`` thread's loop (see networker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from nodelocaldns.errors import SetupError
from nodelocaldns.node.backend import RulesBackend
from nodelocaldns.node.factory import select_backend
from nodelocaldns.node.failsafe import rules_for
from nodelocaldns.node.flags import NodeCacheParams
from nodelocaldns.node.leftovers import remove_from_other_backends, stale_rules
from nodelocaldns.node.networker import NetWorker
from nodelocaldns.node.owned import OwnedTable, open_owned_table
from nodelocaldns.node.plan import InterfaceSpec
from nodelocaldns.node.reconcile import Reconciler, ReconcileReport
from nodelocaldns.node.rules import Rule, desired_rules, format_rule_go, has_kube_proxy_path
from nodelocaldns.node.setup_metrics import SetupMetrics

log = logging.getLogger("nodelocaldns.node")
T = TypeVar("T")


class SyncLoop:
    """Every ``interval`` seconds one ``reconcile_once`` tick on the NetWorker; reports go to
    ``on_report``. A bug in a tick is logged and the loop goes on: it keeps the node's DNS working."""

    def __init__(
        self,
        reconciler: Reconciler,
        net: NetWorker,
        interval: float,
        on_report: Callable[[ReconcileReport], None],
    ) -> None:
        self.reconciler = reconciler
        self.net = net
        self.interval = interval
        self.on_report = on_report
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not await _wait(self._stop, self.interval):
            try:
                self.on_report(await self.net.call(self.reconciler.reconcile_once()))
            except Exception:
                log.exception("unexpected error during node setup")

    async def cancel(self) -> None:
        """Stop at once, cancelling a tick in progress (it holds the reconciler's lock)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def stop(self, timeout: float) -> None:
        """No new tick; wait up to ``timeout`` for one in progress (an xtables lock wait), then cancel it."""
        self._stop.set()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.warning("A node setup tick is still running after %gs; cancelling it", timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class NetSetup:
    """The interface and rules of one agent run, owned by one :class:`Reconciler`."""

    def __init__(self, params: NodeCacheParams, metrics: SetupMetrics, net: NetWorker) -> None:
        self.params = params
        self.metrics = metrics
        self.net = net
        ips = tuple(ip.compressed for ip in params.local_ips)
        self.rules: tuple[Rule, ...] = (
            tuple(desired_rules(ips, params.dns_port, params.health_port)) if params.setup_iptables else ()
        )
        self.iface = InterfaceSpec(params.interface_name, ips) if params.setup_interface else None
        self.backend: RulesBackend | None = None
        self.reconciler = Reconciler(
            None, self.iface, metrics, params.sync_interval, rules=self.rules, logger=log
        )
        self.sync: SyncLoop | None = None
        self.owned: OwnedTable | None = None
        # /ready (when the Corefile has `ready`) waits for the first complete network setup.
        self._complete = not (params.setup_interface or params.setup_iptables)
        self._problem = "node network setup in progress"
        # A live peer that keeps serving the same addresses (handover.py): its state, not ours to remove.
        self.kept_for: str | None = None

    async def prepare(self) -> ReconcileReport:
        """Backend, stale rules, interface: everything before the server binds."""
        p = self.params
        if p.setup_iptables:
            self.backend = await self._net(select_backend(p.rules_backend))
            log.info("Using %s for the nodelocaldns rules", self.backend.name)
            # The fail-safe variant where the backend and kernel can run it: socket-matching rules,
            # and the host-network rules in a table of this process's own (owned.py).
            ips = [ip.compressed for ip in p.local_ips]
            why: str | None = None
            if any(has_kube_proxy_path(ip) for ip in ips):
                self.owned, why = await self._net(_open_owned())
                if self.owned is not None:
                    log.info("Host-network DNS rules go to the table inet %s of this agent", self.owned.name)
            self.rules = tuple(
                await self._net(
                    rules_for(
                        self.backend, ips, p.dns_port, p.health_port, self.metrics, log,
                        owned_unavailable=why or None,
                    )
                )
            )  # fmt: skip
            self.reconciler.backend = self.backend
            self.reconciler.rules = tuple(r for r in self.rules if not r.owner)
            self.reconciler.owned = self.owned
            self.reconciler.owned_rules = tuple(r for r in self.rules if r.owner)
        await self._remove_stale_rules()
        # The addresses must exist before the listeners bind to them; the rules wait for the server.
        return await self._net(self.reconciler.reconcile_once(with_rules=False))

    async def install_rules(self) -> None:
        """The first full tick, once the server listens; then the periodic re-check."""
        self.note(await self._net(self.reconciler.reconcile_once(with_rules=True)))
        self.sync = SyncLoop(self.reconciler, self.net, self.params.sync_interval, self.note)
        self.sync.start()

    async def stop_sync(self, timeout: float) -> None:
        if self.sync is not None:
            await self.sync.stop(timeout)

    async def cancel_sync(self) -> None:
        if self.sync is not None:
            await self.sync.cancel()

    def note(self, report: ReconcileReport) -> None:
        if report.ok:
            self._complete = True
        elif not self._complete:
            self._problem = "node network setup failed: " + "; ".join(str(e) for e in report.errors)

    def ready_check(self) -> str | None:
        """Not ready until the interface and the rules were in place once. After that a failing tick
        (an xtables lock timeout) does not flap readiness: the rules from before are still there."""
        return None if self._complete else self._problem

    async def _remove_stale_rules(self) -> None:
        """Delete rules carrying our comments for addresses that are not ours any more.

        A SIGKILLed or OOM-killed run leaves its rules behind. Rules for our current addresses are
        simply adopted (the first tick makes them exactly one copy each). Rules for an address we no
        longer hold are dangerous: a NOTRACK rule for the kube-dns ClusterIP after a switch to IPVS
        mode bypasses kube-proxy's DNAT with nobody listening. Rules for our own addresses with
        other ports (a second DaemonSet's ``-health-port``) are left alone. Our rules in a backend we
        no longer use (``-rules-backend`` changed) go too; see ``leftovers.py``. A backend that owns
        its whole table (nft) needs nothing more: its first tick replaces the table.
        """
        backend = self.backend
        if backend is None:
            return
        await self._net(remove_from_other_backends(backend, self.rules, logger=log))
        if backend.exclusive:
            return
        ours = {ip.compressed for ip in self.params.local_ips}
        try:
            owned = await self._net(backend.list_owned())
            stale = stale_rules(owned, self.rules, ours)
            if not stale:
                return
            deleted = await self._net(backend.delete(stale))
        except SetupError as exc:
            self.metrics.count(exc)
            log.error("Failed to check for stale nodelocaldns rules: %s", exc)
            return
        for rule in stale:
            log.info("Deleted stale nodelocaldns rule - %s", format_rule_go(rule))
        log.info("Deleted %d stale nodelocaldns rules left by an earlier run", deleted)

    # -- teardown (skipped entirely with -skipteardown) ----------------------------------------------

    def keep_for(self, peer: str) -> None:
        """A live peer keeps serving these addresses: the teardown hooks leave everything in place."""
        self.kept_for = peer

    async def delete_rules(self) -> None:
        """The server's DRAINING hook: from now on kube-proxy's DNAT takes the ClusterIP again."""
        if not self.params.skip_teardown and self.kept_for is None:
            await self._net(self.reconciler.delete_rules())

    async def remove_interface(self) -> None:
        """The server's CLOSED hook."""
        if self.kept_for is not None:
            log.info(
                "Leaving rules and interface addresses in place for %s, which serves them", self.kept_for
            )
        elif not self.params.skip_teardown:
            await self._net(self.reconciler.remove_interface())
        else:
            log.info("Skipping teardown (-skipteardown): rules and interface addresses stay in place")

    async def teardown(self, *, only_added: bool = False) -> None:
        """Rules, then addresses: after a start that failed (``only_added``: an address or rule that
        was there before is not ours to take away because we failed), or the safety net after a bug."""
        if self.params.skip_teardown or self.kept_for is not None:
            return
        await self.cancel_sync()
        with contextlib.suppress(Exception):
            await self._net(self.reconciler.teardown(only_added=only_added))

    async def _net(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self.net.call(coro)

    def close(self) -> None:
        """Free the agent's own table's netlink context: the kernel deletes the table with it. Run
        at exit, after the teardown (or instead of it, when a peer keeps serving: its own table
        holds the same rules)."""
        if self.owned is not None:
            self.owned.close()


async def _open_owned() -> tuple[OwnedTable | None, str]:
    return open_owned_table()


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
