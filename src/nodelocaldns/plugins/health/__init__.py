from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.health import plugin, runtime

PLUGIN = register(Plugin("health", plugin.parse, runtime.factory))
