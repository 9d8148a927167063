"""Every Corefile in CoreDNS's plugin/debug/README.md (HEAD) parses and runs."""

from __future__ import annotations

import dns.rcode

from support.readme import localize, plans
from support.server import serve

EXAMPLE = """\
. {
    debug
}
"""


def test_example_parses() -> None:
    assert plans(EXAMPLE) == 1


def test_example_runs() -> None:
    # debug adds no handler: the block has no plugin chain, so CoreDNS's server REFUSES.
    with serve(localize(EXAMPLE)) as s:
        assert s.query("example.org.").rcode() == dns.rcode.REFUSED
