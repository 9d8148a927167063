from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, Plugin, Runtime, register
from nodelocaldns.plugins.loop import plugin


class LoopRuntime(Runtime):
    """The handler watches for the probe; ``start`` sends it to the block's first listen address."""

    def __init__(self, host: Host, block: BlockInfo) -> None:
        self.handler = plugin.LoopHandler(block.zones[0], host.fatal)
        self.handlers = (self.handler,)
        self.target = (block.hosts[0] or "127.0.0.1", block.ports[0])

    @property
    def miss_skippable(self) -> bool:  # type: ignore[override]
        # While it probes, every query must pass its handler (a looping probe comes back as a
        # miss); once it stopped, it never looks at a query again.
        return not self.handler.enabled

    def start(self, host: Host) -> None:
        host.spawn(self._probe(host))

    async def _probe(self, host: Host) -> None:
        try:
            await self.handler.run_probe(*self.target)
        finally:
            host.exchange_changed()


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return LoopRuntime(host, block)


PLUGIN = register(Plugin("loop", plugin.parse, _factory, miss_skippable=True))
