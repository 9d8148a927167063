"""The nftables rendering of the rule table (``rules.py``): the ``inet nodelocaldns`` table script,
the agent's own ``flags owner`` table (``owned.py``), and the JSON read-back. Text in, text out.

The ``notrack`` chains sit at ``priority raw`` (-300), before conntrack and any DNAT; see ``rules.py``
for what an ``accept`` in a table of our own can and cannot do, and for the socket keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from nodelocaldns.node.rules import CHAINS, NFT_TABLE, Direction, Rule, unique

OWNED_TABLE_PREFIX = "nodelocaldns-agent-"
"""Each agent's own table (``flags owner``) is this prefix plus a random tag: peers never share one."""


def nft_chain_name(table: str, chain: str) -> str:
    """Our nft base chain for an iptables (table, chain): ``raw_prerouting`` etc."""
    return f"{table}_{chain.lower()}"


# Which nft socket key says "a socket of ours is there": see the module docstring for TCP.
_NFT_SOCKET_KEY: dict[str, str] = {"udp": "wildcard", "tcp": "transparent"}


def nft_rule_text(rule: Rule) -> str:
    l3 = "ip" if rule.family == 4 else "ip6"
    addr = "daddr" if rule.direction == "dst" else "saddr"
    port = "dport" if rule.direction == "dst" else "sport"
    verdict = "notrack" if rule.target == "NOTRACK" else "accept"
    socket = f" socket {_NFT_SOCKET_KEY[rule.proto]} 0" if rule.socket else ""
    return (
        f"{l3} {addr} {rule.ip} {rule.proto} {port} {rule.port}{socket} "
        f'counter {verdict} comment "{rule.comment}"'
    )


def nft_script(rules: Sequence[Rule], table: str = NFT_TABLE) -> str:
    """One ``nft -f`` transaction that replaces table ``inet <table>`` with exactly ``rules``.

    ``table`` + ``delete table`` makes the delete valid whether or not the table exists, and the
    new definition follows in the same transaction: the kernel swaps old for new atomically, so
    there is never a moment without rules and never a second copy of one.
    """
    out = [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{"]
    for tbl, chain in CHAINS:
        body = [r for r in unique(rules) if (r.table, r.chain) == (tbl, chain)]
        if not body:
            continue
        out.append(f"\tchain {nft_chain_name(tbl, chain)} {{")
        out.append(f"\t\ttype filter hook {chain.lower()} priority {tbl}; policy accept;")
        out += [f"\t\t{nft_rule_text(r)}" for r in body]
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def nft_owned_script(rules: Sequence[Rule], table: str) -> str:
    """Replace the agent's own table ``inet <table>`` with ``rules``, atomically, ``flags owner``.

    Run through the agent's own netlink socket (``node/owned.py``): the kernel ties the table to
    that socket and deletes it when the socket closes, SIGKILL included.
    """
    body = nft_script([replace(r, owner=False) for r in rules], table).splitlines()
    # nft_script's definition line is the third; the flag goes first in the new definition.
    head = [f"table inet {table} {{ flags owner; }}", f"delete table inet {table}", body[2], "\tflags owner"]
    return "\n".join(head + body[3:]) + "\n"


def nft_delete_script(table: str = NFT_TABLE) -> str:
    """Remove our table; valid (a no-op) when it does not exist."""
    return f"table inet {table}\ndelete table inet {table}\n"


@dataclass(frozen=True, slots=True)
class NftScan:
    """Our rules found in ``nft -j list table`` output, plus rules we could not read back."""

    owned: tuple[Rule, ...]
    foreign: tuple[str, ...]


_NFT_CHAINS = {nft_chain_name(t, c): (t, c) for t, c in CHAINS}


def parse_nft_json(text: str) -> NftScan:
    """Read our table back from ``nft -j list table inet <table>``."""
    owned: list[Rule] = []
    foreign: list[str] = []
    for item in json.loads(text).get("nftables", []):
        rule = item.get("rule")
        if rule is None:
            continue
        parsed = _parse_nft_rule(rule)
        if parsed is None:
            foreign.append(json.dumps(rule, sort_keys=True))
        else:
            owned.append(parsed)
    return NftScan(tuple(owned), tuple(foreign))


_NFT_FIELD_DIRECTION: dict[str, Direction] = {"saddr": "src", "sport": "src", "daddr": "dst", "dport": "dst"}


def _parse_nft_rule(rule: dict[str, Any]) -> Rule | None:
    """A rule iff it is exactly ``<l3> <addr> IP <proto> <port> N [counter] <verdict>`` in one of
    our chains, address and port on the same end; anything else is not ours."""
    where = _NFT_CHAINS.get(rule.get("chain", ""))
    if where is None:
        return None
    found: dict[str, Any] = {}
    directions: set[Direction] = set()
    for expr in rule.get("expr", []):
        if "counter" in expr:
            continue
        if "notrack" in expr or "accept" in expr:
            if "target" in found:
                return None
            found["target"] = "NOTRACK" if "notrack" in expr else "ACCEPT"
            continue
        match = expr.get("match")
        if match and "socket" in match.get("left", {}) and "socket" not in found:
            if match.get("op") != "==" or match.get("right") != 0:
                return None
            found["socket"] = match["left"]["socket"].get("key")
            continue
        if not match or match.get("op") != "==" or "payload" not in match.get("left", {}):
            return None
        payload = match["left"]["payload"]
        proto, field, right = payload.get("protocol"), payload.get("field"), match.get("right")
        if proto in ("ip", "ip6") and field in ("saddr", "daddr") and "ip" not in found:
            found["family"], found["ip"] = (4 if proto == "ip" else 6), str(right)
        elif proto in ("tcp", "udp") and field in ("sport", "dport") and "port" not in found:
            if not isinstance(right, int):
                return None
            found["proto"], found["port"] = proto, right
        else:
            return None
        directions.add(_NFT_FIELD_DIRECTION[field])
    socket_key = found.pop("socket", None)
    if len(directions) != 1 or found.keys() != {"family", "ip", "proto", "port", "target"}:
        return None
    if socket_key is not None and socket_key != _NFT_SOCKET_KEY[found["proto"]]:
        return None
    try:
        return Rule(
            table=where[0],
            chain=where[1],
            direction=directions.pop(),
            comment=str(rule.get("comment", "")),
            socket=socket_key is not None,
            **found,
        )
    except ValueError:
        return None
