from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.prometheus import metrics, plugin, runtime

PLUGIN = register(Plugin("prometheus", plugin.parse, runtime.factory, collector=metrics.collect))
