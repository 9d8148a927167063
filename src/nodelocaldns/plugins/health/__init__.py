from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.health import metrics, plugin, runtime

PLUGIN = register(Plugin("health", plugin.parse, runtime.factory, collector=metrics.collect))
