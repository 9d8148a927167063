"""Corefile model -> validated server plan: every directive parsed by its plugin, listeners grouped.

Pure apart from ``bind`` resolving interface names. Any error carries file:line and the directive,
and nothing here touches a running server, so a bad reload cannot disturb the one that serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodelocaldns.corefile.model import Directive, ServerBlock
from nodelocaldns.errors import CorefileError
from nodelocaldns.plugins.bind import plugin as bind
from nodelocaldns.plugins.cache import setup as cache
from nodelocaldns.plugins.errors import plugin as errors
from nodelocaldns.plugins.forward import setup as forward
from nodelocaldns.plugins.health import plugin as health
from nodelocaldns.plugins.log import plugin as log
from nodelocaldns.plugins.loop import plugin as loop
from nodelocaldns.plugins.prometheus import plugin as prometheus
from nodelocaldns.plugins.ready import plugin as ready
from nodelocaldns.plugins.reload import plugin as reload

PARSERS: dict[str, Callable[[Directive], Any]] = {
    "bind": bind.parse,
    "cache": cache.parse,
    "errors": errors.parse,
    "forward": forward.parse,
    "health": health.parse,
    "log": log.parse,
    "loop": loop.parse,
    "prometheus": prometheus.parse,
    "ready": ready.parse,
    "reload": reload.parse,
}
# Directives CoreDNS allows once per server block; bind, log and forward lines accumulate.
ONCE = frozenset({"cache", "errors", "health", "loop", "prometheus", "ready", "reload"})


@dataclass
class BlockPlan:
    """One server block after parsing: its zones/ports, listen hosts, and plugin configs."""

    block: ServerBlock
    zones: tuple[str, ...]
    ports: tuple[int, ...]
    hosts: tuple[str, ...]  # "" = every address
    single: dict[str, Any] = field(default_factory=dict)
    forwards: list[forward.ForwardConfig] = field(default_factory=list)
    logs: list[log.LogRule] = field(default_factory=list)


@dataclass
class Plan:
    blocks: list[BlockPlan]
    # (host, port) -> [(zone, block index)]
    listeners: dict[tuple[str, int], list[tuple[str, int]]]


def plan(blocks: tuple[ServerBlock, ...]) -> Plan:
    """Parse every directive and group zones by listener. Raises CorefileError."""
    if not blocks:
        raise CorefileError("no server blocks", "", 0)
    plans: list[BlockPlan] = []
    for sb in blocks:
        single: dict[str, Any] = {}
        fwd: list[forward.ForwardConfig] = []
        logs: list[log.LogRule] = []
        hosts: list[str] = []
        for d in sb.directives:
            parser = PARSERS.get(d.name)
            if parser is None:
                raise d.error(f"unknown directive '{d.name}'")
            if d.name in ONCE and d.name in single:
                raise d.error(f"plugin '{d.name}' can only be used once per Server Block")
            cfg = parser(d)
            if d.name == "forward":
                fwd.append(cfg)
            elif d.name == "log":
                logs.append(cfg)
            elif d.name == "bind":
                hosts.extend(h for h in cfg.hosts if h not in hosts)
            else:
                single[d.name] = cfg
        zones = tuple(dict.fromkeys(k.zone for k in sb.keys))
        ports = tuple(dict.fromkeys(k.port for k in sb.keys))
        plans.append(BlockPlan(sb, zones, ports, tuple(hosts) or ("",), single, fwd, logs))

    listeners: dict[tuple[str, int], list[tuple[str, int]]] = {}
    owner: dict[tuple[str, int, str], ServerBlock] = {}
    for i, bp in enumerate(plans):
        for key in bp.block.keys:
            for host in bp.hosts:
                ident = (host, key.port, key.zone)
                if ident in owner:
                    where = f"dns://{key.zone}:{key.port}"
                    raise CorefileError(
                        f"cannot serve {where} - it is already defined (block at line {owner[ident].line})",
                        bp.block.filename,
                        bp.block.line,
                    )
                owner[ident] = bp.block
                listeners.setdefault((host, key.port), []).append((key.zone, i))
    # CoreDNS README "Bugs": a wildcard and a specific listener on one port would race for packets.
    for (host, port), zs in listeners.items():
        if host == "":
            for (h2, p2), zs2 in listeners.items():
                if p2 == port and h2 != "" and {z for z, _ in zs} & {z for z, _ in zs2}:
                    bp = plans[zs[0][1]]
                    raise CorefileError(
                        f"zone overlap: port {port} is served both with and without bind",
                        bp.block.filename,
                        bp.block.line,
                    )
    return Plan(plans, listeners)
