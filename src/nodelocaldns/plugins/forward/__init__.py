from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Host, NativeExchange, Plugin, Runtime, register
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.plugins.forward import handler, metrics, setup


class ForwardRuntime(Runtime):
    """Every ``forward`` line of the block, tried in Corefile order (each passes on what it does not own)."""

    def __init__(self, host: Host, cfgs: list[setup.ForwardConfig]) -> None:
        self.forwarders = [handler.ForwardHandler(c, clock=host.clock) for c in cfgs]
        for f in self.forwarders[:-1]:
            f.next_is_forward = True
        for f in self.forwarders:
            f.on_exchange = host.exchange_changed  # an upstream went down or came back
        self.handlers = tuple(self.forwarders)

    def native_exchange(self, zone: str) -> NativeExchange | None:
        # Several forward lines hand on to each other by FROM and ``next``: the chain's call.
        return self.forwarders[0].native_exchange(zone) if len(self.forwarders) == 1 else None

    def settle_exchanged(self, req: Request) -> Reply | None:
        return self.forwarders[0].settle(req) if len(self.forwarders) == 1 else None

    def close(self) -> None:
        for f in self.forwarders:
            f.close()


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return ForwardRuntime(host, cfgs)


# chaos: CoreDNS's EnableChaos names forward (a CH query is forwarded like any other).
PLUGIN = register(
    Plugin("forward", setup.parse, _factory, repeatable=True, collector=metrics.collect, chaos=True)
)
