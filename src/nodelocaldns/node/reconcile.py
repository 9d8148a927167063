"""Level-triggered node setup: every tick, make the interface and the rules what they should be.

``reconcile_once`` is node-cache's ``setupNetworking`` with two deliberate differences:

* The interface goes first, and rules are not *added* in a tick where the interface step failed.
  A NOTRACK rule for an address nobody holds would bypass kube-proxy's DNAT for the kube-dns
  ClusterIP and black-hole the node's DNS; rules already in place are left alone.
* Each error is counted once, under its own ``errortype`` (node-cache counts a failed creation as
  both ``interface_add`` and ``interface_check``).

``teardown`` (SIGTERM) removes the rules first, every copy, then the addresses/interface: removing
the address first would leave NOTRACK rules pointing at nothing (kubernetes/dns #690; fixed in
node-cache 1.26.8 the same way). After teardown the reconciler stays closed, so a tick that races
with shutdown cannot put rules back (#358).

``teardown(only_added=True)`` undoes only what this reconciler itself put in place: the link if it
created it, the addresses it added, the rules it inserted. That is the clean-up after a start-up
that failed (port 53 taken): an address or rule that was there before belongs to someone else
(another instance, an operator, the run before a restart) and stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from nodelocaldns.errors import SetupError
from nodelocaldns.node.backend import EnsureReport, RulesBackend
from nodelocaldns.node.interface import (
    InterfaceReport,
    InterfaceSpec,
    RemovalReport,
    ensure_interface,
    remove_interface,
)
from nodelocaldns.node.rules import Rule, format_rule_go
from nodelocaldns.node.setup_metrics import SetupMetrics

log = logging.getLogger("nodelocaldns.node")


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    interface: InterfaceReport | None
    rules: EnsureReport | None
    errors: tuple[SetupError, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        iface = self.interface is not None and (self.interface.created or bool(self.interface.added))
        return iface or (self.rules is not None and self.rules.changed)


@dataclass(frozen=True, slots=True)
class TeardownReport:
    rules_deleted: int
    interface: RemovalReport | None
    errors: tuple[SetupError, ...] = ()


class Reconciler:
    """Owns the node's DNS interface and rules for the lifetime of the agent.

    ``backend=None`` is ``-setupiptables=false``; ``interface=None`` is ``-setupinterface=false``.
    ``interval`` is in seconds (node-cache's ``-syncinterval``).
    """

    def __init__(
        self,
        backend: RulesBackend | None,
        interface: InterfaceSpec | None,
        metrics: SetupMetrics,
        interval: float = 60.0,
        *,
        rules: Sequence[Rule] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        self.backend = backend
        self.interface = interface
        self.metrics = metrics
        self.interval = interval
        self.rules = tuple(rules)
        self.log = logger or log
        self._lock = asyncio.Lock()
        self._closed = False
        # What this reconciler put in place itself, for teardown(only_added=True).
        self.created_link = False
        self.added_ips: set[str] = set()
        self.added_rules: set[Rule] = set()

    @property
    def closed(self) -> bool:
        return self._closed

    def _fail(self, err: SetupError, errors: list[SetupError]) -> None:
        self.metrics.count(err)
        errors.append(err)

    async def _ensure_interface(self, errors: list[SetupError]) -> InterfaceReport | None:
        spec = self.interface
        if spec is None:
            return None
        try:
            rep = await ensure_interface(spec.name, spec.ips, set_up=spec.set_up)
        except SetupError as e:
            if e.kind == "interface_add":
                self.log.error("Failed to add non-existent interface %s: %s", spec.name, e)
            else:
                self.log.error("Error checking dummy device %s - %s", spec.name, e)
            self._fail(e, errors)
            return None
        self.created_link = self.created_link or rep.created
        self.added_ips.update(rep.added)
        if rep.created:
            self.log.info("Added interface - %s", spec.name)
        for ip in rep.added:
            self.log.info("Added back address %s to interface %s", ip, spec.name)
        return rep

    async def _ensure_rules(self, errors: list[SetupError]) -> EnsureReport | None:
        if self.backend is None or not self.rules:
            return None
        try:
            rep = await self.backend.ensure(self.rules)
        except SetupError as e:
            if e.kind == "iptables_lock":
                self.log.info(
                    "Error checking/adding iptables rule, due to xtables lock in use, retrying in %gs - %s",
                    self.interval,
                    e,
                )
            else:
                self.log.error("Error checking/adding iptables rule, error - %s", e)
            self._fail(e, errors)
            return None
        self.added_rules.update(rep.added)
        for rule in rep.added:
            self.log.info("Added back nodelocaldns rule - %s", format_rule_go(rule))
        for rule in rep.removed:
            self.log.info("Deleted duplicate nodelocaldns rule - %s", format_rule_go(rule))
        if rep.dropped_foreign:
            self.log.warning(
                "Replaced %d unrecognised entries in the nodelocaldns table", rep.dropped_foreign
            )
        if not rep.changed:
            self.log.debug("%d nodelocaldns rules already exist (%s)", rep.present, rep.backend)
        return rep

    async def reconcile_once(self, *, with_rules: bool = True) -> ReconcileReport:
        """One tick. ``with_rules=False`` is node-cache's start-up pass (interface only, rules wait
        until the DNS server listens)."""
        async with self._lock:
            if self._closed:
                return ReconcileReport(None, None)
            errors: list[SetupError] = []
            iface = await self._ensure_interface(errors)
            rules: EnsureReport | None = None
            if with_rules and not errors:
                rules = await self._ensure_rules(errors)
            elif with_rules and self.backend is not None:
                self.log.warning("Not adding nodelocaldns rules while the interface is not in place")
            return ReconcileReport(iface, rules, tuple(errors))

    async def run(self, stop: asyncio.Event, *, initial_delay: float = 0.0) -> None:
        """Reconcile now (after ``initial_delay``) and every ``interval`` until ``stop`` is set."""
        if initial_delay > 0 and await _wait(stop, initial_delay):
            return
        while not stop.is_set() and not self._closed:
            try:
                await self.reconcile_once()
            except Exception:  # a bug must not end the loop that keeps the node's DNS working
                self.log.exception("unexpected error during node setup")
            if await _wait(stop, self.interval):
                return

    async def teardown(self, *, only_added: bool = False) -> TeardownReport:
        """Remove rules (every copy), then our addresses / the dummy link. Closes the reconciler.

        ``only_added``: remove only the link, addresses and rules this reconciler added."""
        async with self._lock:
            self._closed = True
            errors: list[SetupError] = []
            deleted = 0
            rules = [r for r in self.rules if r in self.added_rules] if only_added else list(self.rules)
            if self.backend is not None and rules:
                try:
                    deleted = await self.backend.delete(rules)
                except SetupError as e:
                    self.log.error("Failed deleting iptables rules, error - %s", e)
                    self._fail(e, errors)
                else:
                    self.log.info("Deleted %d nodelocaldns rules (%s)", deleted, self.backend.name)
            removal: RemovalReport | None = None
            spec = self.interface
            if spec is not None:
                removal = await self._remove_interface(spec, only_added, errors)
            return TeardownReport(deleted, removal, tuple(errors))

    async def _remove_interface(
        self, spec: InterfaceSpec, only_added: bool, errors: list[SetupError]
    ) -> RemovalReport | None:
        ips = [ip for ip in spec.ips if ip in self.added_ips] if only_added else list(spec.ips)
        kept = [ip for ip in spec.ips if ip not in ips]
        if kept:
            self.log.info("Leaving %s on %s: it was there before this start", ", ".join(kept), spec.name)
        if only_added and not ips and not self.created_link:
            return None
        try:
            return await remove_interface(
                spec.name, ips, delete_link=self.created_link if only_added else True
            )
        except SetupError as e:
            self.log.error("Failed removing interface %s: %s", spec.name, e)
            self._fail(e, errors)
            return None


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
