from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.reload import plugin, runtime

PLUGIN = register(Plugin("reload", plugin.parse, runtime.factory, collector=runtime.collect))
