from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.reload import plugin, runtime

# miss_skippable: it watches the Corefile, no query-path handler.
PLUGIN = register(
    Plugin("reload", plugin.parse, runtime.factory, collector=runtime.collect, miss_skippable=True)
)
