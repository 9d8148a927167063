"""Corefile model -> validated server plan: every directive parsed by its plugin, listeners grouped.

Pure apart from ``bind`` resolving interface names. Any error carries file:line and the directive,
and nothing here touches a running server, so a bad reload cannot disturb the one that serves.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodelocaldns import plugins
from nodelocaldns.core.plugin import REGISTRY, Plugin
from nodelocaldns.corefile.coredns_plugins import COREDNS_PLUGINS
from nodelocaldns.corefile.model import Directive, ServerBlock
from nodelocaldns.errors import CorefileError

plugins.load()
DIRECTIVES: Mapping[str, Plugin] = REGISTRY  # live: a plugin registered later is planned too


@dataclass
class BlockPlan:
    """One server block after parsing: its zones/ports, listen hosts, and plugin configs."""

    block: ServerBlock
    zones: tuple[str, ...]
    ports: tuple[int, ...]
    hosts: tuple[str, ...]  # "" = every address
    configs: dict[str, list[Any]] = field(default_factory=dict)  # directive -> configs, Corefile order

    @property
    def single(self) -> dict[str, Any]:
        """The config of each once-per-block directive."""
        return {n: c[0] for n, c in self.configs.items() if not DIRECTIVES[n].repeatable}


@dataclass
class Plan:
    blocks: list[BlockPlan]
    # (host, port) -> [(zone, block index)]
    listeners: dict[tuple[str, int], list[tuple[str, int]]]


def unknown_directive(d: Directive) -> CorefileError:
    """A CoreDNS plugin nodelocaldns lacks reads differently from a typo, which may get a suggestion."""
    available = ", ".join(sorted(DIRECTIVES))
    if d.name in COREDNS_PLUGINS:
        return d.error(
            f"'{d.name}' is a CoreDNS plugin not available in nodelocaldns (available: {available}; "
            "see docs/configuration.md)"
        )
    close = difflib.get_close_matches(d.name, [*DIRECTIVES, *COREDNS_PLUGINS], n=1, cutoff=0.7)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return d.error(f"unknown directive '{d.name}'{hint}")


def plan(blocks: tuple[ServerBlock, ...], collect: list[CorefileError] | None = None) -> Plan:
    """Parse every directive and group zones by listener.

    Raises the first CorefileError; with ``collect``, appends every error there instead and returns
    what could be planned (``nodelocaldns check`` reports them all at once).
    """
    errs: list[CorefileError] = []
    if not blocks:
        raise CorefileError("no server blocks", "", 0)
    plans: list[BlockPlan] = []
    for sb in blocks:
        configs: dict[str, list[Any]] = {}
        hosts: list[str] = []
        for d in sb.directives:
            p = DIRECTIVES.get(d.name)
            if p is None:
                errs.append(unknown_directive(d))
                continue
            if not p.repeatable and d.name in configs:
                errs.append(d.error(f"plugin '{d.name}' can only be used once per Server Block"))
                continue
            try:
                cfg = p.parse(d)
            except CorefileError as e:
                errs.append(e)
                continue
            configs.setdefault(d.name, []).append(cfg)
            if p.listen is not None:
                hosts.extend(h for h in p.listen(cfg) if h not in hosts)
        zones = tuple(dict.fromkeys(k.zone for k in sb.keys))
        ports = tuple(dict.fromkeys(k.port for k in sb.keys))
        plans.append(BlockPlan(sb, zones, ports, tuple(hosts) or ("",), configs))

    listeners: dict[tuple[str, int], list[tuple[str, int]]] = {}
    owner: dict[tuple[str, int, str], ServerBlock] = {}
    for i, bp in enumerate(plans):
        for key in bp.block.keys:
            for host in bp.hosts:
                ident = (host, key.port, key.zone)
                if ident in owner:
                    where = f"dns://{key.zone}:{key.port}"
                    errs.append(CorefileError(
                        f"cannot serve {where} - it is already defined (block at line {owner[ident].line})",
                        bp.block.filename,
                        bp.block.line,
                    ))  # fmt: skip
                    continue
                owner[ident] = bp.block
                listeners.setdefault((host, key.port), []).append((key.zone, i))
    # CoreDNS README "Bugs": a wildcard and a specific listener on one port would race for packets.
    for (host, port), zs in listeners.items():
        if host == "":
            for (h2, p2), zs2 in listeners.items():
                if p2 == port and h2 != "" and {z for z, _ in zs} & {z for z, _ in zs2}:
                    bp = plans[zs[0][1]]
                    errs.append(CorefileError(
                        f"zone overlap: port {port} is served both with and without bind",
                        bp.block.filename,
                        bp.block.line,
                    ))  # fmt: skip
    if errs and collect is None:
        raise errs[0]
    if collect is not None:
        collect.extend(errs)
    return Plan(plans, listeners)
