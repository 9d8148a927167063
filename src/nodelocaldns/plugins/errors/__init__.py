from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Handlers, Host, Plugin, Runtime, register
from nodelocaldns.plugins.errors import plugin


class ErrorsRuntime(Handlers):
    def __init__(self, handler: plugin.ErrorsHandler) -> None:
        super().__init__(handler)
        self.handler = handler

    def close(self) -> None:
        self.handler.stop()  # pending consolidate summaries are printed, not dropped


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return ErrorsRuntime(plugin.ErrorsHandler(cfgs[0], host.clock))


# miss_skippable: it logs what fails; a native exchange that fails takes the chain it watches.
PLUGIN = register(Plugin("errors", plugin.parse, _factory, miss_skippable=True))
