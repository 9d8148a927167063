from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Handlers, Host, Plugin, Runtime, register
from nodelocaldns.plugins.log import plugin


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return Handlers(plugin.LogHandler(cfgs))


# A cached answer sent without running log would be a query with no log line.
PLUGIN = register(Plugin("log", plugin.parse, _factory, repeatable=True, fast_path_safe=False))
