"""Every Corefile in CoreDNS's plugin/reload/README.md (HEAD) parses.

Both examples pair ``reload`` with ``erratic``, a CoreDNS test plugin node-cache does not build in:
as written they are file:line errors, and with ``whoami`` in its place they run.
"""

from __future__ import annotations

import dns.rcode
import pytest

from nodelocaldns.errors import CorefileError
from nodelocaldns.plugins.reload import plugin as reload_plugin
from support.directives import directives_in
from support.readme import localize, plans
from support.server import serve

DEFAULT = """\
. {
    reload
    erratic
}
"""
TEN_SECONDS = """\
. {
    reload 10s
    erratic
}
"""


@pytest.mark.parametrize("corefile", [DEFAULT, TEN_SECONDS], ids=["default", "10s"])
def test_erratic_is_a_file_line_error(corefile: str) -> None:
    with pytest.raises(CorefileError, match=r"^README.md:3 .*'erratic' is a CoreDNS plugin not available"):
        plans(corefile)


@pytest.mark.parametrize(
    ("corefile", "interval", "jitter"),
    [(DEFAULT, 30.0, 15.0), (TEN_SECONDS, 10.0, 5.0)],
    ids=["default", "10s"],
)
def test_with_whoami_it_runs(corefile: str, interval: float, jitter: float) -> None:
    text = corefile.replace("erratic", "whoami")
    assert plans(text) == 1
    [d] = directives_in(text, "reload")
    cfg = reload_plugin.parse(d)
    assert (cfg.interval, cfg.jitter) == (interval, jitter)  # "jitter is automatically set to 10 / 2 = 5"
    with serve(localize(text)) as s:
        assert s.query("example.org.").rcode() == dns.rcode.NOERROR
