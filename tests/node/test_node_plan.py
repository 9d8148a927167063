"""plan_tick: observed interface/addresses/rules in, actions out. No I/O: every row is a tick."""

from __future__ import annotations

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
    RuleState,
    SetLinkUp,
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
