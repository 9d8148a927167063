"""One reconcile tick, decided without I/O: what was observed goes in, the actions come out.

``plan_tick`` is the whole policy of the level-triggered node setup; ``reconcile.Reconciler`` only
observes (netlink, ``iptables-save``/``nft list``), calls it, and carries the actions out in order.

* The interface goes first. When it could not even be observed, rules are *held*: a NOTRACK rule for
  an address nobody holds would bypass kube-proxy's DNAT for the kube-dns ClusterIP and black-hole
  the node's DNS. (When an interface action fails while being carried out, the rule actions after it
  are skipped the same way.) Rules already in place are left alone either way.
* Rules: every wanted rule exactly once. A backend that shares its tables (iptables) only removes
  extra copies of our own rules; one that owns its table (nft) also drops what is not wanted.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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
class HoldRules:
    """Rules are wanted but the interface is not in place: add none this tick."""


Action = CreateLink | AddAddress | SetLinkUp | FixRules | HoldRules
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


def plan_rules(wanted: Sequence[Rule], state: RuleState, *, exclusive: bool) -> FixRules | None:
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
    if not add and not extra:
        return None
    return FixRules(tuple(want), add, extra)


def plan_tick(observed: Observed) -> list[Action]:
    """The actions for one tick, in the order they must run."""
    actions: list[Action] = []
    interface_ok = True
    if observed.interface is not None:
        if observed.link is None:
            interface_ok = False
        else:
            actions += plan_interface(observed.interface, observed.link)
    if observed.with_rules and observed.rules:
        if not interface_ok:
            actions.append(HoldRules())
        elif observed.rule_state is not None:
            fix = plan_rules(observed.rules, observed.rule_state, exclusive=observed.exclusive_table)
            if fix is not None:
                actions.append(fix)
    return actions
