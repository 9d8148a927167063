from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.core.unavailable import factory
from nodelocaldns.plugins.pprof import setup

# miss_skippable: an HTTP route, no query-path handler.
PLUGIN = register(
    Plugin(
        "pprof",
        setup.parse,
        factory("pprof", setup.UNAVAILABLE),
        repeatable=not setup.ONCE,
        miss_skippable=True,
    )
)
