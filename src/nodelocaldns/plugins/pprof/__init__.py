from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.core.unavailable import factory
from nodelocaldns.plugins.pprof import setup

PLUGIN = register(
    Plugin("pprof", setup.parse, factory("pprof", setup.UNAVAILABLE), repeatable=not setup.ONCE)
)
