from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.health import metrics, plugin, runtime

# miss_skippable: an HTTP route, no query-path handler.
PLUGIN = register(
    Plugin("health", plugin.parse, runtime.factory, collector=metrics.collect, miss_skippable=True)
)
