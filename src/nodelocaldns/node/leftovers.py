"""Rules an earlier run left behind: for addresses no longer ours, with an outdated guard, or in a
backend we no longer use.

A SIGKILLed or OOM-killed run never tears down. Three kinds of leftovers then matter at start-up:

* in the backend we use, rules carrying our comments for an address we no longer hold: a NOTRACK
  rule for the kube-dns ClusterIP after a switch to IPVS mode bypasses kube-proxy's DNAT with nobody
  listening (rules for our addresses with other ports, a second DaemonSet's ``-health-port``, stay);
* in the backend we use, our rule for one of our addresses in the *other* fail-safe form (guarded vs
  unguarded, after an upgrade or on a host that lost the socket match), or a rule that this run
  keeps in its own nft table (``owned.py``: an earlier version's unconditional host-network rule);
* in every other backend (``iptables-legacy``, ``iptables-nft``, the nft table ``inet nodelocaldns``),
  after ``-rules-backend`` changed: our rules for our addresses and ports, in either form.

The agents' own tables (``inet nodelocaldns-agent-*``) are never touched here: the kernel lets only
their owner change them, and deletes each with its owner.

"Ours" is always the exact spec (``rules.parse_iptables_save`` / ``parse_nft_json``): a rule that
merely carries our comment, or is for somebody else's address, is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import replace

from nodelocaldns.errors import SetupError
from nodelocaldns.node.backend import RulesBackend
from nodelocaldns.node.iptables import IptablesBackend, Variant
from nodelocaldns.node.nft import NftBackend
from nodelocaldns.node.rules import Rule, format_rule_go

log = logging.getLogger("nodelocaldns.node")

ALL_BACKENDS: tuple[str, ...] = ("iptables-legacy", "iptables-nft", "nft")


def _unguarded(rule: Rule) -> Rule:
    return replace(rule, socket=False, owner=False)


def stale_rules(owned: Sequence[Rule], desired: Sequence[Rule], our_ips: Collection[str]) -> list[Rule]:
    """Leftovers in the backend we use: other addresses, or ours in the other guard form (a rule
    ``desired`` keeps in the agent's own table is never wanted in the backend)."""
    want = {r for r in desired if not r.owner}
    want_any_form = {_unguarded(r) for r in desired}
    return [
        r
        for r in dict.fromkeys(owned)
        if r.ip not in our_ips or (r not in want and _unguarded(r) in want_any_form)
    ]


def ours_in_other_backend(owned: Sequence[Rule], desired: Sequence[Rule]) -> list[Rule]:
    """Rules another backend holds that this agent's table would have put there (either form)."""
    want_any_form = {_unguarded(r) for r in desired}
    return [r for r in dict.fromkeys(owned) if _unguarded(r) in want_any_form]


def _other_backends(current: str, env: dict[str, str] | None) -> list[IptablesBackend | NftBackend]:
    out: list[IptablesBackend | NftBackend] = []
    for name in ALL_BACKENDS:
        if name == current:
            continue
        if name == "nft":
            out.append(NftBackend(env=env))
        else:
            variant: Variant = "legacy" if name == "iptables-legacy" else "nft"
            out.append(IptablesBackend(variant, env=env))
    return out


async def remove_from_other_backends(
    current: RulesBackend,
    desired: Sequence[Rule],
    *,
    env: dict[str, str] | None = None,
    logger: logging.Logger | None = None,
) -> int:
    """Delete our rules from every backend but ``current``; return how many copies went.

    A backend whose tools are missing simply has nothing of ours. A failure in one backend is
    logged and does not stop the others (nor the start-up).
    """
    lg = logger or log
    deleted = 0
    for other in _other_backends(current.name, env):
        try:
            if isinstance(other, IptablesBackend):
                owned = list((await other.scan_without_creating()).owned)
            else:
                owned = await other.list_owned()
        except SetupError as exc:
            lg.debug("No nodelocaldns rules readable in %s: %s", other.name, exc)
            continue
        mine = ours_in_other_backend(owned, desired)
        if not mine:
            continue
        try:
            n = await (other.delete(mine) if isinstance(other, IptablesBackend) else other.remove(mine))
        except SetupError as exc:
            lg.error("Failed to delete nodelocaldns rules left in %s: %s", other.name, exc)
            continue
        for rule in mine:
            lg.info("Deleted nodelocaldns rule left in %s - %s", other.name, format_rule_go(rule))
        lg.info("Deleted %d nodelocaldns rules an earlier run left in %s", n, other.name)
        deleted += n
    return deleted
