from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.prometheus import metrics, plugin, runtime

# miss_skippable: the listener counts requests; no query-path handler.
PLUGIN = register(
    Plugin("prometheus", plugin.parse, runtime.factory, collector=metrics.collect, miss_skippable=True)
)
