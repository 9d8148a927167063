"""Corefile model -> validated server plan: every directive parsed by its plugin, listeners grouped.

Pure apart from ``bind`` resolving interface names. Any error carries file:line and the directive,
and nothing here touches a running server, so a bad reload cannot disturb the one that serves.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodelocaldns.corefile.coredns_plugins import COREDNS_PLUGINS
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


def unknown_directive(d: Directive) -> CorefileError:
    """A CoreDNS plugin nodelocaldns lacks reads differently from a typo, which may get a suggestion."""
    available = ", ".join(sorted(PARSERS))
    if d.name in COREDNS_PLUGINS:
        return d.error(
            f"'{d.name}' is a CoreDNS plugin not available in nodelocaldns (available: {available}; "
            "see docs/configuration.md)"
        )
    close = difflib.get_close_matches(d.name, [*PARSERS, *COREDNS_PLUGINS], n=1, cutoff=0.7)
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
        single: dict[str, Any] = {}
        fwd: list[forward.ForwardConfig] = []
        logs: list[log.LogRule] = []
        hosts: list[str] = []
        for d in sb.directives:
            parser = PARSERS.get(d.name)
            if parser is None:
                errs.append(unknown_directive(d))
                continue
            if d.name in ONCE and d.name in single:
                errs.append(d.error(f"plugin '{d.name}' can only be used once per Server Block"))
                continue
            try:
                cfg = parser(d)
            except CorefileError as e:
                errs.append(e)
                continue
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
