"""plan_tick: observed interface/addresses/rules in, actions out. No I/O: every row is a tick."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nodelocaldns.node.plan import (
    IFA_F_DADFAILED,
    IFA_F_NODAD,
    IFA_F_TENTATIVE,
    Action,
    AddAddress,
    CreateLink,
    FixRules,
    HoldRules,
    InterfaceSpec,
    LinkState,
    Observed,
    OwnedState,
    RuleState,
    SetLinkUp,
    WriteOwnedTable,
    plan_tick,
)
from nodelocaldns.node.rules import Rule, desired_rules

IP4, IP6 = "169.254.20.10", "fd00:d15::10"
SPEC = InterfaceSpec("nodelocaldns", (IP4, IP6))
RULES = tuple(desired_rules([IP4, IP6]))
V4_ONLY = tuple(r for r in RULES if r.family == 4)
OTHER = tuple(desired_rules(["169.254.99.1"]))  # another instance's rules, same comments
BOTH = {IP4: 0, IP6: IFA_F_NODAD}
ALL_RULES = RuleState(RULES)
LINK = LinkState(7, "bridge", BOTH)


def obs(
    link: LinkState | None = LINK,
    rules: RuleState | None = ALL_RULES,
    *,
    spec: InterfaceSpec | None = SPEC,
    wanted: tuple[Rule, ...] = RULES,
    exclusive: bool = False,
    with_rules: bool = True,
) -> Observed:
    return Observed(spec, link, wanted, rules, exclusive_table=exclusive, with_rules=with_rules)


CASES: list[tuple[str, Observed, list[Action]]] = [
    ("steady state: nothing to do", obs(), []),
    (
        "no link: create it, then every address, then the rules",
        obs(LinkState(None), RuleState(())),
        [CreateLink("nodelocaldns"), AddAddress(IP4), AddAddress(IP6), FixRules(RULES, RULES, ())],
    ),
    ("an address went missing", obs(LinkState(7, "bridge", {IP6: IFA_F_NODAD})), [AddAddress(IP4)]),
    (
        "tentative IPv6 copy is replaced",
        obs(LinkState(7, "bridge", {IP4: 0, IP6: IFA_F_TENTATIVE})),
        [AddAddress(IP6, replace=True)],
    ),
    (
        "DAD-failed IPv6 copy is replaced",
        obs(LinkState(7, "bridge", {IP4: 0, IP6: IFA_F_DADFAILED})),
        [AddAddress(IP6, replace=True)],
    ),
    ("the IPv4 flags never matter", obs(LinkState(7, "bridge", {IP4: IFA_F_TENTATIVE, IP6: 0})), []),
    (
        "set_up is asserted every tick",
        obs(spec=InterfaceSpec("nodelocaldns", (IP4, IP6), set_up=True)),
        [SetLinkUp()],
    ),
    ("link could not be read: hold the rules", obs(None, None), [HoldRules()]),
    ("link could not be read, start-up pass: nothing", obs(None, None, with_rules=False), []),
    ("start-up pass never touches rules", obs(rules=RuleState(()), with_rules=False), []),
    (
        "a deleted rule is added back",
        obs(rules=RuleState(RULES[1:])),
        [FixRules(RULES, (RULES[0],), ())],
    ),
    (
        "shared table: duplicates of ours go, one copy stays",
        obs(rules=RuleState(RULES + (RULES[3], RULES[3], RULES[20]))),
        [FixRules(RULES, (), (RULES[3], RULES[3], RULES[20]))],
    ),
    ("shared table: another instance's rules are left alone", obs(rules=RuleState(RULES + OTHER)), []),
    (
        "own table: anything unwanted goes",
        obs(rules=RuleState(RULES + OTHER[:2]), exclusive=True),
        [FixRules(RULES, (), OTHER[:2])],
    ),
    (
        "own table: unreadable entries force a rewrite",
        obs(rules=RuleState(RULES, unreadable=2), exclusive=True),
        [FixRules(RULES, (), (), 2)],
    ),
    ("own table: exact match, nothing", obs(exclusive=True), []),
    ("rules could not be read: no rule action", obs(rules=None), []),
    ("no interface managed (-setupinterface=false)", obs(None, RuleState(RULES[:-1]), spec=None), [
        FixRules(RULES, (RULES[-1],), ())
    ]),
    ("no rules managed (-setupiptables=false)", obs(LinkState(None), None, wanted=()), [
        CreateLink("nodelocaldns"), AddAddress(IP4), AddAddress(IP6)
    ]),
    ("IPv4-only wanted: present v6 rules of ours are not wanted copies", obs(
        spec=InterfaceSpec("nodelocaldns", (IP4,)), wanted=V4_ONLY, rules=RuleState(V4_ONLY)
    ), []),
]  # fmt: skip


@pytest.mark.parametrize(("observed", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_tick(observed: Observed, want: list[Action]) -> None:
    assert plan_tick(observed) == want


def test_wanted_rules_are_deduplicated_and_addresses_canonical() -> None:
    spec = InterfaceSpec("nodelocaldns", ("fd00:0d15:0:0::10", IP6))
    got = plan_tick(obs(LinkState(7, "bridge", {}), RuleState(()), spec=spec, wanted=RULES + RULES))
    assert got == [AddAddress(IP6), FixRules(RULES, RULES, ())]


# ---------------------------------------------------------------- the agent's own table

SVC = "10.96.0.10"
SVC_RULES = tuple(desired_rules([SVC], owner_table=True))
BACKEND = tuple(r for r in SVC_RULES if not r.owner)
OWNED = tuple(r for r in SVC_RULES if r.owner)
UNCONDITIONAL = tuple(replace(r, owner=False) for r in OWNED)  # an earlier version's copies
SVC_SPEC = InterfaceSpec("nodelocaldns", (SVC,))
SVC_LINK = LinkState(7, "bridge", {SVC: 0})


def owned_obs(
    state: OwnedState | None,
    backend: tuple[Rule, ...] = BACKEND,
    *,
    link: LinkState | None = SVC_LINK,
    exclusive: bool = False,
) -> Observed:
    return Observed(
        SVC_SPEC, link, BACKEND, RuleState(backend), exclusive_table=exclusive, owned=OWNED, owned_state=state
    )


OWNED_CASES: list[tuple[str, Observed, list[Action]]] = [
    ("only the host-network rules are owner rules", owned_obs(OwnedState(OWNED)), []),
    ("the table is gone: recreate it", owned_obs(OwnedState((), present=False)),
     [WriteOwnedTable(OWNED, recreate=True)]),
    ("the table holds other rules: rewrite it", owned_obs(OwnedState(OWNED[:1])), [WriteOwnedTable(OWNED)]),
    ("the table could not be read: leave it", owned_obs(None), []),
    ("the backend could not be read: leave the table too", Observed(
        SVC_SPEC, SVC_LINK, BACKEND, None, owned=OWNED, owned_state=OwnedState((), present=False)
    ), []),
    ("the interface could not be read: hold", owned_obs(OwnedState((), present=False), link=None), [HoldRules()]),
    ("shared backend: an earlier version's unconditional copies go", owned_obs(
        OwnedState(OWNED), BACKEND + UNCONDITIONAL + UNCONDITIONAL[:1]
    ), [FixRules(BACKEND, (), UNCONDITIONAL + UNCONDITIONAL[:1])]),
    ("own backend table: the same copies go with the rewrite", owned_obs(
        OwnedState(OWNED), BACKEND + UNCONDITIONAL, exclusive=True
    ), [FixRules(BACKEND, (), UNCONDITIONAL)]),
]  # fmt: skip


@pytest.mark.parametrize(("observed", "want"), [c[1:] for c in OWNED_CASES], ids=[c[0] for c in OWNED_CASES])
def test_plan_tick_owned_table(observed: Observed, want: list[Action]) -> None:
    assert plan_tick(observed) == want


def test_owner_rules_are_the_host_network_dns_rules_of_service_ips_only() -> None:
    assert [(r.proto, r.chain, r.direction, r.port) for r in OWNED] == [
        ("tcp", "OUTPUT", "dst", 53),
        ("udp", "OUTPUT", "dst", 53),
    ]
    assert not any(r.owner for r in desired_rules([IP4, "fe80::a"], owner_table=True))  # link-local
    assert not any(r.owner for r in desired_rules([SVC]))


def test_shared_backend_keeps_a_rule_in_the_other_guard_form_only_when_it_is_not_ours() -> None:
    unguarded = tuple(desired_rules([SVC], socket_guard=False))
    # our PREROUTING rule without the socket match is superseded by the guarded one
    fix = plan_tick(owned_obs(OwnedState(OWNED), BACKEND + unguarded[:1]))
    assert fix == [FixRules(BACKEND, (), unguarded[:1])]
    # the same rule for another address, or another port, is somebody else's
    other = tuple(desired_rules(["10.96.0.11"], socket_guard=False))
    assert plan_tick(owned_obs(OwnedState(OWNED), BACKEND + other)) == []


def test_start_up_leftovers_include_the_backend_copy_of_an_owned_rule() -> None:
    from nodelocaldns.node.leftovers import ours_in_other_backend, stale_rules

    desired = SVC_RULES
    # in the backend we use: an earlier version's unconditional host-network rule is stale
    assert stale_rules(BACKEND + UNCONDITIONAL, desired, {SVC}) == list(UNCONDITIONAL)
    assert stale_rules(BACKEND, desired, {SVC}) == []
    # in another backend: ours in either form
    assert ours_in_other_backend(BACKEND + UNCONDITIONAL, desired) == list(BACKEND + UNCONDITIONAL)
