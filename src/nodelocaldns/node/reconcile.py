"""Level-triggered node setup: every tick, make the interface and the rules what they should be.

``reconcile_once`` is node-cache's ``setupNetworking`` with two deliberate differences:

* The interface goes first, and rules are not *added* in a tick where the interface step failed.
  A NOTRACK rule for an address nobody holds would bypass kube-proxy's DNAT for the kube-dns
  ClusterIP and black-hole the node's DNS; rules already in place are left alone.
* Each error is counted once, under its own ``errortype`` (node-cache counts a failed creation as
  both ``interface_add`` and ``interface_check``).

What to do is decided by ``plan.plan_tick`` from what was observed; this module reads the state and
carries the actions out.

``teardown`` (SIGTERM) removes the rules first, every copy, then the addresses/interface: removing
the address first would leave NOTRACK rules pointing at nothing (kubernetes/dns #690; fixed in
node-cache 1.26.8 the same way). ``delete_rules`` and ``remove_interface`` are its two halves, for
the agent to run around the server's drain. Any of them closes the reconciler, so a tick that races
with shutdown cannot put rules back (#358).

The host-network rules of a Service IP live in the agent's own nft table (``owned.py``) when the
host has one: observed, planned and written in the same tick, after the backend's rules, and
deleted with them.

``teardown(only_added=True)`` undoes only what this reconciler itself put in place: the link if it
created it, the addresses it added, the rules it inserted. That is the clean-up after a start-up
that failed (port 53 taken): an address or rule that was there before belongs to someone else
(another instance, an operator, the run before a restart) and stays.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from nodelocaldns.errors import SetupError
from nodelocaldns.node.backend import EnsureReport, RulesBackend
from nodelocaldns.node.interface import (
    InterfaceReport,
    RemovalReport,
    apply_link_actions,
    observe_link,
    remove_interface,
)
from nodelocaldns.node.owned import OwnedTable
from nodelocaldns.node.plan import (
    INTERFACE_ACTIONS,
    FixRules,
    InterfaceSpec,
    LinkState,
    Observed,
    OwnedState,
    RuleState,
    WriteOwnedTable,
    plan_tick,
)
from nodelocaldns.node.rules import Rule, format_rule_go, unique
from nodelocaldns.node.setup_metrics import SetupMetrics

log = logging.getLogger("nodelocaldns.node")


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    interface: InterfaceReport | None
    rules: EnsureReport | None
    errors: tuple[SetupError, ...] = ()
    owned_written: tuple[Rule, ...] | None = None
    """What this tick wrote into the agent's own table (None: nothing written)."""

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        iface = self.interface is not None and (self.interface.created or bool(self.interface.added))
        owned = self.owned_written is not None
        return iface or owned or (self.rules is not None and self.rules.changed)


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
        owned: OwnedTable | None = None,
        owned_rules: Sequence[Rule] = (),
    ) -> None:
        self.backend = backend
        self.owned = owned
        self.owned_rules = tuple(owned_rules)
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

    def _interface_failed(self, e: SetupError, errors: list[SetupError]) -> None:
        assert self.interface is not None
        if e.kind == "interface_add":
            self.log.error("Failed to add non-existent interface %s: %s", self.interface.name, e)
        else:
            self.log.error("Error checking dummy device %s - %s", self.interface.name, e)
        self._fail(e, errors)

    def _rules_failed(self, e: SetupError, errors: list[SetupError]) -> None:
        if e.kind == "iptables_lock":
            self.log.info(
                "Error checking/adding iptables rule, due to xtables lock in use, retrying in %gs - %s",
                self.interval,
                e,
            )
        else:
            self.log.error("Error checking/adding iptables rule, error - %s", e)
        self._fail(e, errors)

    async def observe(self, errors: list[SetupError], *, with_rules: bool) -> Observed:
        """Read the link and the rules; a failed read is counted and leaves its part ``None``."""
        link: LinkState | None = None
        if self.interface is not None:
            try:
                link = await observe_link(self.interface.name)
            except SetupError as e:
                self._interface_failed(e, errors)
        state: RuleState | None = None
        backend = self.backend if self.rules else None
        if with_rules and backend is not None and (self.interface is None or link is not None):
            try:
                state = await backend.observe(self.rules)
            except SetupError as e:
                self._rules_failed(e, errors)
        owned = self.owned if self.owned_rules else None
        owned_state: OwnedState | None = None
        if with_rules and owned is not None and (self.interface is None or link is not None):
            try:
                held = owned.read()
            except SetupError as e:
                self._rules_failed(e, errors)
            else:
                owned_state = OwnedState(held or (), present=held is not None)
        return Observed(
            self.interface,
            link,
            self.rules if backend is not None else (),
            state,
            exclusive_table=backend is not None and backend.exclusive,
            with_rules=with_rules,
            owned=self.owned_rules if owned is not None else (),
            owned_state=owned_state,
        )

    async def reconcile_once(self, *, with_rules: bool = True) -> ReconcileReport:
        """One tick: observe, ``plan_tick``, carry the actions out in order. ``with_rules=False`` is
        node-cache's start-up pass (interface only, rules wait until the DNS server listens)."""
        async with self._lock:
            if self._closed:
                return ReconcileReport(None, None)
            errors: list[SetupError] = []
            observed = await self.observe(errors, with_rules=with_rules)
            actions = plan_tick(observed)
            iface: InterfaceReport | None = None
            rules: EnsureReport | None = None
            spec = self.interface
            interface_ok = spec is None or observed.link is not None
            if spec is not None and observed.link is not None:
                link_actions = [a for a in actions if isinstance(a, INTERFACE_ACTIONS)]
                try:
                    iface = await apply_link_actions(spec.name, link_actions)
                except SetupError as e:
                    self._interface_failed(e, errors)
                    interface_ok = False
                else:
                    self._note_interface(spec, iface)
            if not interface_ok:
                if with_rules and (self.backend is not None and self.rules or self.owned_rules):
                    self.log.warning("Not adding nodelocaldns rules while the interface is not in place")
                return ReconcileReport(iface, None, tuple(errors))
            if observed.rule_state is not None and self.backend is not None:
                fix = next((a for a in actions if isinstance(a, FixRules)), None)
                try:
                    rules = (
                        await self.backend.apply(fix)
                        if fix is not None
                        else EnsureReport(self.backend.name, (), (), len(unique(self.rules)))
                    )
                except SetupError as e:
                    self._rules_failed(e, errors)
                else:
                    self._note_rules(rules)
            # The owned table follows the backend: not written in a tick whose backend rules failed.
            backend_ok = rules is not None or self.backend is None or not self.rules
            written = await self._write_owned(actions, errors) if backend_ok else None
            return ReconcileReport(iface, rules, tuple(errors), written)

    async def _write_owned(
        self, actions: Sequence[object], errors: list[SetupError]
    ) -> tuple[Rule, ...] | None:
        write = next((a for a in actions if isinstance(a, WriteOwnedTable)), None)
        if write is None or self.owned is None:
            return None
        try:
            self.owned.write(write.rules)
        except SetupError as e:
            self._rules_failed(e, errors)
            return None
        if write.recreate:
            for rule in write.rules:
                self.log.info("Added back nodelocaldns rule - %s", format_rule_go(rule))
        else:
            self.log.info("Rewrote the nodelocaldns table inet %s: it held other rules", self.owned.name)
        return write.rules

    def _note_interface(self, spec: InterfaceSpec, rep: InterfaceReport) -> None:
        self.created_link = self.created_link or rep.created
        self.added_ips.update(rep.added)
        if rep.created:
            self.log.info("Added interface - %s", spec.name)
        for ip in rep.added:
            self.log.info("Added back address %s to interface %s", ip, spec.name)

    def _note_rules(self, rep: EnsureReport) -> None:
        self.added_rules.update(rep.added)
        for rule in rep.added:
            self.log.info("Added back nodelocaldns rule - %s", format_rule_go(rule))
        for rule in rep.removed:
            if rule in self.rules:
                self.log.info("Deleted duplicate nodelocaldns rule - %s", format_rule_go(rule))
            else:  # our rule in a form this run does not use (an earlier version's, or a peer's)
                self.log.info("Deleted superseded nodelocaldns rule - %s", format_rule_go(rule))
        if rep.dropped_foreign:
            self.log.warning(
                "Replaced %d unrecognised entries in the nodelocaldns table", rep.dropped_foreign
            )
        if not rep.changed:
            self.log.debug("%d nodelocaldns rules already exist (%s)", rep.present, rep.backend)

    async def delete_rules(self) -> int:
        """Remove every copy of our rules. Closes the reconciler: no later tick puts them back (#358)."""
        async with self._lock:
            self._closed = True
            return await self._delete_rules(self._all_forms(), [])

    def _all_forms(self) -> list[Rule]:
        """Our backend rules plus the backend form of the owned ones: an earlier version (a peer
        during an upgrade) put those in the backend, and the last one out leaves no rule behind."""
        return list(self.rules) + [replace(r, owner=False) for r in self.owned_rules]

    def _delete_owned(self, errors: list[SetupError]) -> int:
        if self.owned is None:
            return 0
        try:
            n = self.owned.delete()
        except SetupError as e:
            self.log.error("Failed deleting the nodelocaldns table inet %s, error - %s", self.owned.name, e)
            self._fail(e, errors)
            return 0
        if n:
            self.log.info("Deleted %d nodelocaldns rules (table inet %s)", n, self.owned.name)
        return n

    async def remove_interface(self) -> RemovalReport | None:
        """Remove our addresses / the dummy link. Closes the reconciler."""
        async with self._lock:
            self._closed = True
            if self.interface is None:
                return None
            return await self._remove_interface(self.interface, False, [])

    async def teardown(self, *, only_added: bool = False) -> TeardownReport:
        """Rules (every copy), then our addresses / the dummy link. Closes the reconciler.

        ``only_added``: remove only the link, addresses and rules this reconciler added."""
        async with self._lock:
            self._closed = True
            errors: list[SetupError] = []
            rules = [r for r in self.rules if r in self.added_rules] if only_added else self._all_forms()
            deleted = await self._delete_rules(rules, errors)
            removal: RemovalReport | None = None
            if self.interface is not None:
                removal = await self._remove_interface(self.interface, only_added, errors)
            return TeardownReport(deleted, removal, tuple(errors))

    async def _delete_rules(self, rules: list[Rule], errors: list[SetupError]) -> int:
        owned = self._delete_owned(errors)  # first: it is the host-network half of the NOTRACK rules
        if self.backend is None or not rules:
            return owned
        try:
            deleted = await self.backend.delete(rules)
        except SetupError as e:
            self.log.error("Failed deleting iptables rules, error - %s", e)
            self._fail(e, errors)
            return owned
        self.log.info("Deleted %d nodelocaldns rules (%s)", deleted, self.backend.name)
        return deleted + owned

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
