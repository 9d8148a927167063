from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.bind import plugin

PLUGIN = register(Plugin("bind", plugin.parse, repeatable=True, listen=lambda cfg: cfg.hosts))
