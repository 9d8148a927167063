"""``doctor``'s judgements: observed facts in, one ``Check`` (ok/warn/fail + why + how to fix) out.

Pure functions only; ``docs/doctor.md`` explains every check id for operators.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nodelocaldns.node.rules import Rule, format_rule_go, to_iptables_args
from nodelocaldns.tools.doctor_facts import (
    FR_ACT_BLACKHOLE,
    FR_ACT_PROHIBIT,
    FR_ACT_TO_TBL,
    FR_ACT_UNREACHABLE,
    RT_TABLE_LOCAL,
    RTN_LOCAL,
    RTN_THROW,
    BackendRules,
    LinkFact,
    PolicyFacts,
    RouteFact,
    RuleFact,
    RulesetFacts,
    family_of,
    host_prefixlen,
    table_name,
)

Status = Literal["ok", "warn", "fail"]
_RANK: dict[str, int] = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    status: Status
    detail: str
    hint: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "hint": self.hint,
            "data": dict(self.data),
        }


def worst(statuses: Iterable[str]) -> Status:
    best: Status = "ok"
    for s in statuses:
        if _RANK[s] > _RANK[best]:
            best = s  # type: ignore[assignment]  # s is a key of _RANK, i.e. a Status
    return best


# ---------------------------------------------------------------- interface and routes

EKS_HINT = (
    "On EKS this is the AWS VPC CNI's security groups for pods in strict mode: branch-ENI pods are "
    "routed through per-VLAN tables that are consulted before `local`, so their DNS packets leave "
    "the node (and the NOTRACK rules also break the fallback to the kube-dns ClusterIP). NodeLocal "
    "DNSCache is not supported in strict mode: `kubectl -n kube-system set env daemonset aws-node "
    "POD_SECURITY_GROUP_ENFORCING_MODE=standard`, then restart the pods that use a SecurityGroupPolicy "
    "(aws/amazon-vpc-cni-k8s #1384)."
)


def check_interface(
    name: str, local_ips: Sequence[str], link: LinkFact | None, holders: Mapping[str, Sequence[str]]
) -> Check:
    """The link exists and holds every local IP as a host address (/32, /128) usable for bind."""
    if link is None:
        return Check(
            "interface",
            f"interface {name}",
            "fail",
            f"no link named {name}",
            "The agent creates it at start (-setupinterface, the default) and re-adds it every "
            "-syncinterval; check the node-local-dns pod logs. On kernels without the dummy driver, "
            f"pre-create it: `ip link add {name} type bridge`.",
            {"exists": False},
        )
    have = {a.ip: a for a in link.addrs}
    problems: list[str] = []
    shown: list[str] = []
    for ip in local_ips:
        addr = have.get(ip)
        if addr is None:
            elsewhere = [h for h in holders.get(ip, ()) if h != name]
            where = f" (it is on {', '.join(elsewhere)})" if elsewhere else ""
            problems.append(f"{ip} is missing{where}")
        elif addr.prefixlen != host_prefixlen(ip):
            problems.append(f"{ip} has prefix /{addr.prefixlen}, expected /{host_prefixlen(ip)}")
        elif addr.unusable:
            problems.append(f"{ip} is tentative or failed duplicate address detection")
        else:
            shown.append(f"{ip}/{addr.prefixlen}")
    state = "UP" if link.up else "DOWN (normal: local delivery does not need it up)"
    detail = f"{name} ({link.kind or 'unknown kind'}, {state}) holds {', '.join(shown) or 'none of the IPs'}"
    data = {
        "exists": True,
        "kind": link.kind,
        "up": link.up,
        "addresses": [f"{a.ip}/{a.prefixlen}" for a in link.addrs],
    }
    if not problems:
        return Check("interface", f"interface {name}", "ok", detail, "", data)
    missing = [ip for ip in local_ips if ip not in have]
    add = (
        "; ".join(f"`ip addr add {ip}/{host_prefixlen(ip)} dev {name}`" for ip in missing)
        or "re-add the address"
    )
    hint = (
        "The agent re-adds missing addresses every -syncinterval (60 s): if they stay missing, check its "
        f'logs and coredns_nodecache_setup_errors_total{{errortype="interface_add"}}. By hand: {add}.'
    )
    return Check("interface", f"interface {name}", "fail", detail + "\n" + "\n".join(problems), hint, data)


def check_local_routes(name: str, local_ips: Sequence[str], local_table: Sequence[RouteFact]) -> Check:
    """``ip route show table local`` (``routel local``) has ``local IP`` for each address."""
    found: list[str] = []
    problems: list[str] = []
    other_dev: list[str] = []
    for ip in local_ips:
        routes = [
            r
            for r in local_table
            if r.type == RTN_LOCAL
            and r.dst == ip
            and r.dst_len == host_prefixlen(ip)
            and r.table == RT_TABLE_LOCAL
        ]
        if not routes:
            problems.append(f"no `local {ip}` route in table local")
            continue
        devs = sorted({r.dev for r in routes})
        found.append(f"local {ip} dev {','.join(devs)}")
        if name not in devs:
            other_dev.append(f"{ip} is local via {','.join(devs)}, not {name}")
    data = {"routes": found}
    if problems:
        return Check(
            "local-routes",
            "local routes",
            "fail",
            "\n".join(problems + found),
            "The kernel adds the local route together with the address; without it packets to the IP "
            "are routed away instead of delivered to the cache. Re-add the address (see interface) or "
            f"`ip route add local IP dev {name} table local`.",
            data,
        )
    if other_dev:
        return Check(
            "local-routes",
            "local routes",
            "warn",
            "\n".join(found + other_dev),
            "Another interface also holds the address (kube-ipvs0 holds the kube-dns ClusterIP in IPVS "
            "mode, where only the link-local IP may be used as -localip).",
            data,
        )
    return Check("local-routes", "local routes", "ok", "\n".join(found), "", data)


def _lookup(table: Sequence[RouteFact], ip: str) -> RouteFact | None:
    """The route a lookup of ``ip`` in one table would use (longest prefix), if any."""
    best: RouteFact | None = None
    for r in table:
        if r.covers(ip) and (best is None or r.dst_len > best.dst_len):
            best = r
    return best


def _looks_eks(rule: RuleFact, route: RouteFact | None) -> bool:
    devs = [rule.iif, rule.oif, route.dev if route else ""]
    return any(d.startswith("vlan") for d in devs if d)


def check_policy_routing(
    local_ips: Sequence[str], facts: PolicyFacts, iface: str, dns_port: int = 53
) -> Check:
    """No policy rule evaluated before ``lookup local`` sends DNS for a local IP elsewhere.

    The kernel walks ``ip rule`` in priority order. A rule ahead of ``lookup local`` whose table has a
    non-local route for the IP (``default via ... dev vlan.eth.2``) wins, and the query leaves the
    node. A table with no route for the IP (or a ``throw``) falls through to the next rule.
    """
    problems: list[str] = []
    eks = False
    data: dict[str, Any] = {"offending": [], "rules_before_local": []}
    for family in sorted({family_of(ip) for ip in local_ips}):
        rules = sorted((r for r in facts.rules if r.family == family), key=lambda r: r.priority)
        local_at = next(
            (i for i, r in enumerate(rules) if r.action == FR_ACT_TO_TBL and r.table == RT_TABLE_LOCAL), None
        )
        if local_at is None:
            problems.append(
                f"IPv{family}: no `lookup local` rule at all, so no address on this node is reachable"
            )
            continue
        data["rules_before_local"] += [r.render() for r in rules[:local_at]]
        for rule in rules[:local_at]:
            for ip in (ip for ip in local_ips if family_of(ip) == family):
                if not rule.may_match_dns_to(ip, dns_port):
                    continue
                if rule.action in (FR_ACT_BLACKHOLE, FR_ACT_UNREACHABLE, FR_ACT_PROHIBIT):
                    problems.append(
                        f"`{rule.render()}` comes before `lookup local` and drops traffic to {ip}"
                    )
                    data["offending"].append({"rule": rule.render(), "ip": ip, "route": None, "table": None})
                    continue
                if rule.action != FR_ACT_TO_TBL:
                    continue
                route = _lookup(facts.tables.get((family, rule.table), ()), ip)
                if route is None or route.type in (RTN_LOCAL, RTN_THROW):
                    continue  # the lookup falls through to the next rule
                eks = eks or _looks_eks(rule, route)
                problems.append(
                    f"`{rule.render()}` comes before `lookup local` and table {table_name(rule.table)} sends "
                    f"{ip} to `{route.render()}`"
                )
                data["offending"].append(
                    {
                        "rule": rule.render(),
                        "ip": ip,
                        "route": route.render(),
                        "table": table_name(rule.table),
                    }
                )
    before_local = data["rules_before_local"]
    if not problems:
        detail = "no rule ahead of `lookup local` diverts the local IPs" + (
            f" ({len(before_local)} rule(s) ahead of it checked)" if before_local else ""
        )
        return Check("policy-routing", "policy routing", "ok", detail, "", data)
    fixes = sorted({(o["ip"], o["table"]) for o in data["offending"] if o["table"] is not None})
    routes = "; ".join(
        f"`ip{' -6' if family_of(ip) == 6 else ''} route add local {ip} dev {iface} table {t}`"
        for ip, t in fixes
    )
    hint = (
        "Packets matching these rules never reach the local table, so pods behind them cannot reach the "
        "cache. Either move the rule after `lookup local`"
        + (f", or give its table the local route: {routes} (the CNI may undo this)." if routes else ".")
    )
    if eks:
        hint = EKS_HINT + " " + hint
    data["eks"] = eks
    return Check(
        "policy-routing",
        "policy routing (EKS security groups for pods)" if eks else "policy routing",
        "fail",
        "\n".join(problems),
        hint,
        data,
    )


# ---------------------------------------------------------------- packet filter rules


def _rule_text(rule: Rule) -> str:
    return f"-t {rule.table} {rule.chain} " + " ".join(to_iptables_args(rule))


def _holders(facts: RulesetFacts, desired: Sequence[Rule]) -> list[tuple[BackendRules, int]]:
    wanted = set(desired)
    return [(b, sum(1 for r in set(b.rules) if r in wanted)) for b in facts.backends if not b.error]


def check_rules(desired: Sequence[Rule], facts: RulesetFacts) -> Check:
    """Every rule of node-cache's table (12 per IP) is present in one backend."""
    holders = sorted(_holders(facts, desired), key=lambda h: -h[1])
    unreadable = [f"{b.backend}: {b.error}" for b in facts.backends if b.error]
    data: dict[str, Any] = {
        "expected": len(desired),
        "backends": {b.backend: (len(b.rules) if not b.error else None) for b in facts.backends},
        "node_uses": facts.node_uses,
    }
    if not holders:
        return Check(
            "rules",
            "NOTRACK/ACCEPT rules",
            "warn",
            "could not read any ruleset: " + "; ".join(unreadable),
            "Run doctor as root (or with CAP_NET_ADMIN) in the node's network namespace, e.g. "
            "`kubectl -n kube-system exec ds/node-local-dns -- nodelocaldns doctor`.",
            data,
        )
    if holders[0][1] == 0:
        return Check(
            "rules",
            "NOTRACK/ACCEPT rules",
            "fail",
            f"none of the {len(desired)} rules found in "
            + ", ".join(b.backend for b in facts.backends if not b.error)
            + (f" (unreadable: {'; '.join(unreadable)})" if unreadable else ""),
            "The agent installs them once its servers listen (-pidfile) and re-checks every -syncinterval; "
            "with -setupiptables=false they are someone else's job. Without them queries to the kube-dns "
            "ClusterIP are DNATed by kube-proxy and DNS goes through conntrack.",
            data,
        )
    best, count = holders[0]
    data["backend"] = best.backend
    have = set(best.rules)
    missing = [r for r in desired if r not in have]
    detail = f"{count}/{len(desired)} rules in {best.backend}"
    notes: list[str] = []
    others = [f"{b.backend} ({n})" for b, n in holders[1:] if n]
    if others:
        notes.append(f"also found in {', '.join(others)}")
    if facts.node_uses and facts.node_uses != best.backend and best.backend != "nft":
        notes.append(f"kube-proxy's rules are in {facts.node_uses}")
    if missing:
        lines = "\n".join(format_rule_go(r) for r in missing[:6]) + (" ..." if len(missing) > 6 else "")
        return Check(
            "rules",
            "NOTRACK/ACCEPT rules",
            "fail",
            f"{detail}; missing {len(missing)}:\n{lines}",
            "The agent adds missing rules back every -syncinterval (log: `Added back nodelocaldns rule`). "
            'If they stay missing, look for coredns_nodecache_setup_errors_total{errortype="iptables"|'
            '"iptables_lock"} and something deleting them (a firewall manager, iptables-restore without '
            "--noflush).",
            {**data, "missing": [_rule_text(r) for r in missing]},
        )
    if notes:
        return Check(
            "rules",
            "NOTRACK/ACCEPT rules",
            "warn",
            f"{detail}\n" + "\n".join(notes),
            "Rules split over two rulesets usually come from an old agent that used the other iptables "
            "variant; an ACCEPT in one ruleset cannot override a DROP in the other. Run the agent with "
            "the node's variant and delete the stale copies.",
            data,
        )
    return Check("rules", "NOTRACK/ACCEPT rules", "ok", detail, "", data)


def check_duplicates(desired: Sequence[Rule], facts: RulesetFacts) -> Check:
    """No rule of ours exists more than once (kubernetes/dns #568)."""
    wanted = set(desired)
    dups: list[str] = []
    data: dict[str, Any] = {"duplicates": {}}
    for b in facts.backends:
        if b.error:
            continue
        for rule, n in Counter(r for r in b.rules if r in wanted).items():
            if n > 1:
                dups.append(f"{b.backend}: {n}x {format_rule_go(rule)}")
                data["duplicates"].setdefault(b.backend, []).append({"rule": _rule_text(rule), "copies": n})
    if not dups:
        return Check(
            "rules-duplicates", "no duplicate rules", "ok", "every rule present at most once", "", data
        )
    return Check(
        "rules-duplicates",
        "no duplicate rules",
        "fail",
        f"{len(dups)} rule(s) duplicated:\n" + "\n".join(dups[:6]) + (" ..." if len(dups) > 6 else ""),
        "Duplicates pile up when `iptables -C` misreports (iptables < 1.8.8, kubernetes/dns #568) and "
        "cost a rule walk per packet. This agent removes extra copies on its next sync; by hand, "
        "delete with `iptables -t TABLE -D CHAIN <spec>` until one copy is left.",
        data,
    )


# ---------------------------------------------------------------- sockets and queries
