"""Every Corefile in CoreDNS's plugin/cache/README.md (HEAD) parses, and runs as documented.

As CoreDNS's test/readme_test.go, the ``~~~ corefile`` blocks are taken as written; to run one
here the public resolver it names is a local unbound.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.rcode
import pytest

from nodelocaldns.plugins.cache import setup
from support.directives import directives_in
from support.readme import localize, plans
from support.server import serve
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]

CAP_TTL = """\
. {
    cache 10
    whoami
}
"""
ONE_ZONE = """\
. {
    forward . 8.8.8.8:53
    cache example.org
}
"""
CAPACITY = """\
example.org {
    cache {
        success 5000
        denial 2500
    }
}
"""
DISABLE = """\
example.org {
    cache {
        disable denial sub.example.org
    }
}
"""
EXAMPLES = {"CAP_TTL": CAP_TTL, "ONE_ZONE": ONE_ZONE, "CAPACITY": CAPACITY, "DISABLE": DISABLE}


@pytest.mark.parametrize("corefile", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_every_example_parses(corefile: str) -> None:
    assert plans(corefile) == 1


def test_the_options_mean_what_the_readme_says() -> None:
    [cap] = [setup.parse(d) for d in directives_in(CAP_TTL, "cache")]
    assert (cap.success_max_ttl, cap.denial_max_ttl, cap.zones) == (10, 10, ())
    [zone] = [setup.parse(d) for d in directives_in(ONE_ZONE, "cache")]
    assert zone.zones == ("example.org.",)
    [sizes] = [setup.parse(d) for d in directives_in(CAPACITY, "cache")]
    assert (sizes.success_cap, sizes.denial_cap) == (5000, 2500)
    [off] = [setup.parse(d) for d in directives_in(DISABLE, "cache")]
    assert off.disable_denial == ("sub.example.org.",) and off.disable_success == ()


def test_cap_ttl_with_whoami_answers() -> None:
    with serve(localize(CAP_TTL)) as s:
        r = s.query("example.org.", "A")
        assert r.rcode() == dns.rcode.NOERROR and r.additional[0][0].to_text() == "127.0.0.1"


def test_only_the_named_zone_is_cached(make_unbound: MakeUnbound) -> None:
    up = make_unbound({"example.org.": ["www.example.org. 3600 IN A 198.18.0.1"],
                       "example.com.": ["www.example.com. 3600 IN A 198.18.0.2"]})  # fmt: skip
    with serve(localize(ONE_ZONE).replace("8.8.8.8:53", up.address)) as s:
        for _ in range(3):
            assert s.query("www.example.org.").answer[0].ttl <= 3600
            assert s.query("www.example.com.").rcode() == dns.rcode.NOERROR
    assert up.query_count("www.example.org.") == 1  # cached
    assert up.query_count("www.example.com.") == 3  # outside the cache's zones: every time


@pytest.mark.parametrize("corefile", [CAPACITY, DISABLE], ids=["capacity", "disable"])
def test_cache_alone_runs_and_nothing_answers(corefile: str) -> None:
    # As written the block has no plugin after cache: it starts, and queries end in "no next plugin".
    with serve(localize(corefile)) as s:
        assert s.query("www.example.org.").rcode() == dns.rcode.SERVFAIL


def test_disable_denial_for_a_subzone_with_an_upstream(make_unbound: MakeUnbound) -> None:
    # DISABLE with a forward after the cache, so the denials have somewhere to come from.
    up = make_unbound({"example.org.": ["www.example.org. 30 IN A 198.18.0.1"]})
    text = localize(DISABLE).replace("    }\n}\n", f"    }}\n    forward . {up.address}\n}}\n")
    with serve(text) as s:
        for _ in range(2):
            assert s.query("gone.sub.example.org.").rcode() == dns.rcode.NXDOMAIN
            assert s.query("gone.example.org.").rcode() == dns.rcode.NXDOMAIN
    assert up.query_count("gone.sub.example.org.") == 2  # denial caching is off below sub.example.org
    assert up.query_count("gone.example.org.") == 1
