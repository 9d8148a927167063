"""``hosts``: answer from a hosts file and inline lines, re-read on change (CoreDNS plugin/hosts).

The file is read once when the block is built (so the first query already sees it) and then checked
every ``reload`` interval by a background task; the table is swapped whole, so a query sees either
the old or the new file, never half of one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from nodelocaldns.core.plugin import BlockInfo, Host, Next, Plugin, Runtime, register
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.plugins.hosts import lookup, metrics, setup
from nodelocaldns.plugins.hosts.source import HostsSource

log = logging.getLogger("nodelocaldns")

_MIN_SLEEP = 0.01  # never spin if the injected clock says a check is already overdue


class HostsHandler:
    name = "hosts"

    def __init__(self, cfg: setup.HostsConfig, zones: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.zones = cfg.zones or zones
        self.source = HostsSource(cfg, self.zones)

    async def serve(self, req: Request, next_: Next) -> Reply:
        out = lookup.resolve(req.data, req.q, self.source.table, self.cfg, self.zones)
        if out is None:
            return await next_(req)
        if isinstance(out, int):
            return Reply(None, out, "hosts")
        return Reply(out, out[3] & 0xF, "hosts")


class HostsRuntime(Runtime):
    def __init__(self, host: Host, block: BlockInfo, cfg: setup.HostsConfig) -> None:
        for w in cfg.warnings:
            log.warning("[WARNING] plugin/hosts: %s", w)
        self.hosts = HostsHandler(cfg, block.zones)
        self.handlers = (self.hosts,)
        self.clock = host.clock
        self.closed = False
        self.hosts.source.poll(host.clock())

    def start(self, host: Host) -> None:
        if self.hosts.cfg.reload > 0:
            host.spawn(self._watch())

    async def _watch(self) -> None:
        src = self.hosts.source
        while not self.closed:
            due = src.next_check()
            if due is None:
                return
            await asyncio.sleep(max(due - self.clock(), _MIN_SLEEP))
            if self.closed:
                return
            try:
                src.poll(self.clock())
            except Exception:  # a parser bug must not end reloading for good
                log.exception("[ERROR] plugin/hosts: reloading %s", self.hosts.cfg.path)

    def close(self) -> None:
        self.closed = True


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return HostsRuntime(host, block, cfgs[0])


def collect(host: Host) -> list[Any]:
    """``coredns_hosts_entries{hostsfile}`` and ``coredns_hosts_reload_timestamp_seconds``.

    Both are process-wide in CoreDNS: the entries of the last parse per path, the newest file mtime.
    """
    entries: dict[str, float] = {}
    stamp: float | None = None
    seen: set[int] = set()
    for lst in host.dns_listeners():
        for block in lst.blocks().values():
            for rt in block.runtimes:
                if not isinstance(rt, HostsRuntime) or id(rt) in seen:
                    continue
                seen.add(id(rt))
                for name, labels, value in rt.hosts.source.gauges.samples():
                    if name == metrics.ENTRIES.name:
                        entries[labels["hostsfile"]] = value
                    elif stamp is None or value > stamp:
                        stamp = value
    fam = GaugeMetricFamily(metrics.ENTRIES.name, metrics.ENTRIES.help, labels=list(metrics.ENTRIES.labels))
    for path, n in sorted(entries.items()):
        fam.add_metric([path], n)
    # An unlabelled gauge: CoreDNS exports it (as 0) even before any file was read.
    ts = GaugeMetricFamily(metrics.RELOAD_TIMESTAMP.name, metrics.RELOAD_TIMESTAMP.help)
    ts.add_metric([], stamp or 0.0)
    return [fam, ts]


# After cache: a hosts answer is cached, so a cached answer may be sent without running hosts.
PLUGIN = register(Plugin("hosts", setup.parse, _factory, collector=collect))
