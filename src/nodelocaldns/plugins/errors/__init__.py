from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Handlers, Host, Plugin, Runtime, register
from nodelocaldns.plugins.errors import plugin


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return Handlers(plugin.ErrorsHandler(cfgs[0], host.clock))


PLUGIN = register(Plugin("errors", plugin.parse, _factory))
