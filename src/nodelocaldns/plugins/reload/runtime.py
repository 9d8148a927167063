"""The reload plugin at runtime: every INTERVAL +- JITTER/2, ask the server to re-read the Corefile.

One loop per server (the first block's ``reload`` line sets the pace). A successful reload closes
this generation's runtime while its own loop is inside ``host.reload()``: the loop is therefore
never cancelled mid-reload; it sees ``closed`` afterwards and ends, and the new generation's
runtime takes over.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Runtime
from nodelocaldns.metrics.families import counter, gauge
from nodelocaldns.plugins.reload.plugin import ReloadConfig

_active: weakref.WeakKeyDictionary[Any, ReloadRuntime] = weakref.WeakKeyDictionary()


class ReloadRuntime(Runtime):
    def __init__(self, cfg: ReloadConfig) -> None:
        self.cfg = cfg
        self.closed = False
        self.busy = False
        self.task: asyncio.Task[None] | None = None

    def start(self, host: Host) -> None:
        cur = _active.get(host)
        if cur is not None and not cur.closed:
            return
        _active[host] = self
        self.task = asyncio.ensure_future(self._run(host))

    async def _run(self, host: Host) -> None:
        rng = random.Random()
        while not self.closed and not host.stopping:
            await asyncio.sleep(self.cfg.next_delay(rng))
            if self.closed or host.stopping:
                return
            self.busy = True
            try:
                await host.reload()
            finally:
                self.busy = False

    def close(self) -> None:
        self.closed = True
        if self.task is not None and not self.busy:
            self.task.cancel()


def factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return ReloadRuntime(cfgs[0])


def collect(host: Host) -> list[Any]:
    failed, sha = host.reload_status()
    fams: list[Any] = [counter("coredns_reload_failed_total")]
    fams[0].add_metric([], failed)
    if sha:
        info = gauge("coredns_reload_version_info")
        info.add_metric(["sha512", sha], 1)
        fams.append(info)
    return fams
