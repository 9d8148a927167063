from nodelocaldns.core.plugin import Plugin, register
from nodelocaldns.core.unavailable import factory
from nodelocaldns.plugins.trace import setup

PLUGIN = register(
    Plugin("trace", setup.parse, factory("trace", setup.UNAVAILABLE), repeatable=not setup.ONCE)
)
