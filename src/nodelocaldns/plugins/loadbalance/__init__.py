"""``loadbalance``: round_robin (default), weighted and prefer reordering of replies."""

from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.plugins.loadbalance import runtime, setup


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return runtime.LoadBalanceRuntime(cfgs[-1], host.clock)  # CoreDNS: the last directive wins


# Ahead of cache, yet fast-path safe: its runtime's reply_transform is what the fast path applies.
PLUGIN = register(Plugin("loadbalance", setup.parse, _factory, repeatable=True))
