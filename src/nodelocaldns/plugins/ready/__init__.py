from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.ready import plugin, runtime

# miss_skippable: an HTTP route, no query-path handler.
PLUGIN = register(Plugin("ready", plugin.parse, runtime.factory, miss_skippable=True))
