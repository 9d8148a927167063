"""Every Corefile in CoreDNS's plugin/errors/README.md (HEAD) parses, and runs as documented."""

from __future__ import annotations

from collections.abc import Callable

import dns.rcode
import pytest

from nodelocaldns.plugins.errors.plugin import parse
from support.directives import directives_in
from support.readme import localize, plans
from support.server import serve
from support.upstreams import UpstreamServer, closed_port

WHOAMI = """\
example.org {
    whoami
    errors
}
"""
CONSOLIDATE = """\
. {
    forward . 8.8.8.8
    errors {
        consolidate 5m ".* i/o timeout$" warning
        consolidate 30s "^Failed to .+"
    }
}
"""
SHOW_FIRST = """\
. {
    forward . 8.8.8.8
    errors {
        consolidate 5m ".* i/o timeout$" warning show_first
        consolidate 30s "^Failed to .+" error show_first
    }
}
"""
EXAMPLES = {"WHOAMI": WHOAMI, "CONSOLIDATE": CONSOLIDATE, "SHOW_FIRST": SHOW_FIRST}


@pytest.mark.parametrize("corefile", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_every_example_parses(corefile: str) -> None:
    assert plans(corefile) == 1
    [d] = directives_in(corefile, "errors")
    parse(d)


def test_whoami_answers_and_nothing_is_logged() -> None:
    with serve(localize(WHOAMI)) as s:
        assert s.query("example.org.").rcode() == dns.rcode.NOERROR
        assert "[ERROR]" not in s.stderr()


def test_consolidate_forwards_and_logs_upstream_errors(make_unbound: Callable[..., UpstreamServer]) -> None:
    up = make_unbound({"example.org.": ["www.example.org. 30 IN A 198.18.0.1"]})
    with serve(localize(CONSOLIDATE, up.address)) as s:
        assert s.query("www.example.org.").answer[0][0].to_text() == "198.18.0.1"
    dead = closed_port()
    with serve(localize(SHOW_FIRST, dead.address)) as s:
        assert s.query("www.example.org.").rcode() == dns.rcode.SERVFAIL
        text = s.stderr()
    # show_first prints the first occurrence of a consolidated error at once.
    assert "[ERROR] plugin/errors: 2 www.example.org. A" in text, text
