from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.plugins.bind import plugin

# miss_skippable: only where the block listens.
PLUGIN = register(
    Plugin("bind", plugin.parse, repeatable=True, listen=lambda cfg: cfg.hosts, miss_skippable=True)
)
