"""The one protocol every packet-filter backend implements, and the words that choose one.

``-rules-backend`` takes ``auto``, ``iptables`` or ``nftables`` (``RULES_BACKENDS``); that is the only
vocabulary for choosing. A built backend names itself by what it really drives (``name``):
``iptables-nft``, ``iptables-legacy`` (``iptables.py``) or ``nft`` (``nft.py``); that name is what
the logs and reports show. ``factory.select_backend`` turns a choice into a backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from nodelocaldns.node.plan import FixRules, RuleState, plan_rules
from nodelocaldns.node.rules import Rule, unique

RulesBackendChoice = Literal["auto", "iptables", "nftables"]
RULES_BACKENDS: tuple[RulesBackendChoice, ...] = ("auto", "iptables", "nftables")
IptablesVariant = Literal["nft", "legacy"]


@dataclass(frozen=True, slots=True)
class EnsureReport:
    """What one ``ensure`` did. ``removed`` lists every extra copy (or stale rule) it deleted;
    ``dropped_foreign`` counts entries it could not read as one of our rules and replaced (only
    the nft backend does that, since it owns its whole table)."""

    backend: str
    added: tuple[Rule, ...] = ()
    removed: tuple[Rule, ...] = ()
    present: int = 0
    dropped_foreign: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.dropped_foreign)


class RulesBackend(Protocol):
    """A place our rules live. Every method is idempotent and safe to call on every tick; failures
    raise ``SetupError``."""

    @property
    def name(self) -> str: ...

    @property
    def exclusive(self) -> bool:
        """True if the backend owns its whole table, so what is there and not wanted is removed."""
        ...

    async def observe(self, rules: Sequence[Rule]) -> RuleState:
        """Read back what is there, in the tables ``rules`` would live in."""
        ...

    async def apply(self, fix: FixRules) -> EnsureReport:
        """Carry out one ``plan_rules`` decision as one transaction per table/family."""
        ...

    async def ensure(self, rules: Sequence[Rule]) -> EnsureReport:
        """Make every rule present exactly once (``ensure_rules``)."""
        ...

    async def delete(self, rules: Sequence[Rule]) -> int:
        """Remove every copy of ``rules``; return how many rule copies were deleted."""
        ...

    async def list_owned(self) -> list[Rule]:
        """Our rules as the kernel has them now, one entry per copy."""
        ...


async def ensure_rules(backend: RulesBackend, rules: Sequence[Rule]) -> EnsureReport:
    """Observe, plan (``plan.plan_rules``), apply: the same decision a reconcile tick makes."""
    fix = plan_rules(rules, await backend.observe(rules), exclusive=backend.exclusive)
    if fix is None:
        return EnsureReport(backend.name, (), (), len(unique(rules)))
    return await backend.apply(fix)
