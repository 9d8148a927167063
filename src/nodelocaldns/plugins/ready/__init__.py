from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.ready import plugin, runtime

PLUGIN = register(Plugin("ready", plugin.parse, runtime.factory))
