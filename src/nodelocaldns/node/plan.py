"""One reconcile tick, decided without I/O: what was observed goes in, the actions come out.

``plan_tick`` is the whole policy of the level-triggered node setup; ``reconcile.Reconciler`` only
observes (netlink, ``iptables-save``/``nft list``), calls it, and carries the actions out in order.

* The interface goes first. When it could not even be observed, rules are *held*: a NOTRACK rule for
  an address nobody holds would bypass kube-proxy's DNAT for the kube-dns ClusterIP and black-hole
  the node's DNS. (When an interface action fails while being carried out, the rule actions after it
  are skipped the same way.) Rules already in place are left alone either way.
* Rules: every wanted rule exactly once. A backend that shares its tables (iptables) only removes
  extra copies of our own rules and our rules in a form this run does not use (guarded vs not, or
  a rule that now lives in the agent's own table); one that owns its table (nft) also drops what is
  not wanted.
* The agent's own table (``owned.py``, the host-network rules that die with the agent): written
  whole when it is gone or holds anything else, under the same interface condition as the rules,
  and only in a tick whose backend rules could be read (no host-network half without the rest).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from nodelocaldns.node.rules import Rule, unique

IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40


@dataclass(frozen=True, slots=True)
class InterfaceSpec:
    """What the agent keeps in place: a link ``name`` holding ``ips`` (canonical strings)."""

    name: str
    ips: tuple[str, ...]
    set_up: bool = False


def canonical_ips(ips: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ipaddress.ip_address(ip).compressed for ip in ips))


@dataclass(frozen=True, slots=True)
class LinkState:
    """The link as observed: ``index`` None when there is no link by that name."""

    index: int | None
    kind: str | None = None
    addresses: Mapping[str, int] | None = None
    """Host addresses (/32, /128) on the link -> their IFA flags."""


@dataclass(frozen=True, slots=True)
class RuleState:
    """Our rules as the backend reads them back, one entry per copy, plus entries it cannot read."""

    owned: tuple[Rule, ...]
    unreadable: int = 0


@dataclass(frozen=True, slots=True)
class OwnedState:
    """The agent's own table as read back: ``present`` False once it is gone."""

    rules: tuple[Rule, ...]
    present: bool = True


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything one tick looked at (``None`` = not managed, or the observation failed)."""

    interface: InterfaceSpec | None
    link: LinkState | None
    rules: tuple[Rule, ...]
    """The wanted rules; empty when the agent does not manage rules."""
    rule_state: RuleState | None
    exclusive_table: bool = False
    """The backend owns its whole table (nft), so anything in it that is not wanted goes."""
    with_rules: bool = True
    """False on the start-up pass: interface only, the rules wait for the DNS server."""
    owned: tuple[Rule, ...] = ()
    """The rules wanted in the agent's own table; empty when there is none."""
    owned_state: OwnedState | None = None
    """None when not read (not managed, or the read failed)."""


@dataclass(frozen=True, slots=True)
class CreateLink:
    name: str


@dataclass(frozen=True, slots=True)
class AddAddress:
    ip: str
    replace: bool = False
    """An unusable copy (IPv6 tentative / DAD failed) is there and is deleted first."""


@dataclass(frozen=True, slots=True)
class SetLinkUp:
    pass


@dataclass(frozen=True, slots=True)
class FixRules:
    """One backend transaction: ``add`` what is missing, ``remove`` extra copies / unwanted rules."""

    wanted: tuple[Rule, ...]
    add: tuple[Rule, ...]
    remove: tuple[Rule, ...]
    unreadable: int = 0


@dataclass(frozen=True, slots=True)
class WriteOwnedTable:
    """Replace the agent's own table with ``rules`` (``recreate``: it was gone)."""

    rules: tuple[Rule, ...]
    recreate: bool = False


@dataclass(frozen=True, slots=True)
class HoldRules:
    """Rules are wanted but the interface is not in place: add none this tick."""


Action = CreateLink | AddAddress | SetLinkUp | FixRules | WriteOwnedTable | HoldRules
INTERFACE_ACTIONS = (CreateLink, AddAddress, SetLinkUp)


def unusable(ip: str, flags: int) -> bool:
    """An IPv6 address that cannot be bound: tentative (DAD never ran on a down link) or DAD failed."""
    return ":" in ip and bool(flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))


def plan_interface(spec: InterfaceSpec, link: LinkState) -> list[Action]:
    actions: list[Action] = []
    present: Mapping[str, int] = link.addresses or {}
    if link.index is None:
        actions.append(CreateLink(spec.name))
        present = {}
    for ip in canonical_ips(spec.ips):
        if ip in present and not unusable(ip, present[ip]):
            continue
        actions.append(AddAddress(ip, replace=ip in present))
    if spec.set_up:
        actions.append(SetLinkUp())
    return actions


def _plain(rule: Rule) -> Rule:
    return replace(rule, socket=False, owner=False)


def plan_rules(
    wanted: Sequence[Rule], state: RuleState, *, exclusive: bool, elsewhere: Sequence[Rule] = ()
) -> FixRules | None:
    """``elsewhere``: rules this run keeps outside the backend (the agent's own table); a copy of
    one in the backend is an earlier version's and goes, like our rules in the other guard form."""
    want = unique(wanted)
    have = Counter(state.owned)
    if exclusive:
        if have == Counter(want) and not state.unreadable:
            return None
        add = tuple(r for r in want if have[r] == 0)
        remove = tuple((have - Counter(want)).elements())
        return FixRules(tuple(want), add, remove, state.unreadable)
    add = tuple(r for r in want if have[r] == 0)
    extra = tuple(r for r in want for _ in range(have[r] - 1))
    forms = {_plain(r) for r in (*want, *elsewhere)}
    wanted_set = set(want)
    superseded = tuple(r for r in state.owned if r not in wanted_set and _plain(r) in forms)
    if not add and not extra and not superseded:
        return None
    return FixRules(tuple(want), add, extra + superseded)


def plan_tick(observed: Observed) -> list[Action]:
    """The actions for one tick, in the order they must run."""
    actions: list[Action] = []
    interface_ok = True
    if observed.interface is not None:
        if observed.link is None:
            interface_ok = False
        else:
            actions += plan_interface(observed.interface, observed.link)
    if observed.with_rules and (observed.rules or observed.owned):
        if not interface_ok:
            actions.append(HoldRules())
            return actions
        if observed.rules and observed.rule_state is not None:
            fix = plan_rules(
                observed.rules,
                observed.rule_state,
                exclusive=observed.exclusive_table,
                elsewhere=observed.owned,
            )
            if fix is not None:
                actions.append(fix)
        owned = observed.owned_state
        # The owned table follows the backend: no write while the backend's rules cannot be read.
        backend_read = not observed.rules or observed.rule_state is not None
        if observed.owned and owned is not None and backend_read:
            if not owned.present or Counter(owned.rules) != Counter(unique(observed.owned)):
                actions.append(WriteOwnedTable(tuple(unique(observed.owned)), recreate=not owned.present))
    return actions
