"""``whoami``: answer every query with the client's address and port (CoreDNS plugin/whoami).

It sits at the end of the chain (after ``forward``), so in a block that also forwards it only
answers what no plugin before it did; after ``cache`` its replies are cached like any other.
"""

from typing import Any

from nodelocaldns.core.plugin import BlockInfo, Handlers, Host, Next, Plugin, Runtime, register
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.dns.wire import NOERROR
from nodelocaldns.plugins.whoami import reply, setup


class WhoamiHandler:
    name = "whoami"

    async def serve(self, req: Request, next_: Next) -> Reply:
        return Reply(reply.answer(req.data, req.q, req.remote, req.proto), NOERROR, "whoami")


def _factory(host: Host, block: BlockInfo, cfgs: list[Any]) -> Runtime:
    return Handlers(WhoamiHandler())


# CoreDNS reads the first ``whoami`` of a block and ignores repeats (no "used once" error).
PLUGIN = register(Plugin("whoami", setup.parse, _factory, repeatable=not setup.ONCE))
