from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.plugins.loop import plugin


class LoopRuntime(Runtime):
    """The handler watches for the probe; ``start`` sends it to the block's first listen address."""

    def __init__(self, host: Host, block: BlockInfo) -> None:
        self.handler = plugin.LoopHandler(block.zones[0], host.fatal)
        self.handlers = (self.handler,)
        self.target = (block.hosts[0] or "127.0.0.1", block.ports[0])

    def start(self, host: Host) -> None:
        host.spawn(self.handler.run_probe(*self.target))


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return LoopRuntime(host, block)


PLUGIN = register(Plugin("loop", plugin.parse, _factory))
