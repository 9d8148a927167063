"""Every Corefile in CoreDNS's plugin/log/README.md (HEAD) parses, and runs as documented."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from nodelocaldns.plugins.log.plugin import COMBINED, parse
from support.directives import directives_in
from support.readme import localize, plans
from support.server import serve
from support.upstreams import UpstreamServer

METADATA = """\
. {
    log . "{proto} Request: {name} {type} {/log/class} {/log/type}"
}
"""
ALL = """\
. {
    log
    whoami
}
"""
CUSTOM = """\
. {
    log . "{proto} Request: {name} {type} {>id}"
}
"""
DENIALS = """\
. {
    log example.org {
        class denial
    }
}
"""
COMBINED_ERRORS = """\
. {
    log . {combined} {
        class denial error
    }
}
"""
NOT_ERRORS = """\
. {
    log . {
        class denial success
    }
}
"""
NOT_ERRORS_OR = """\
. {
    log . {
        class denial
        class success
    }
}
"""
EXAMPLES = {"METADATA": METADATA, "ALL": ALL, "CUSTOM": CUSTOM, "DENIALS": DENIALS,
            "COMBINED_ERRORS": COMBINED_ERRORS, "NOT_ERRORS": NOT_ERRORS, "NOT_ERRORS_OR": NOT_ERRORS_OR}  # fmt: skip


@pytest.mark.parametrize("corefile", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_every_example_parses(corefile: str) -> None:
    assert plans(corefile) == 1


def test_the_rules_mean_what_the_readme_says() -> None:
    rules = {k: parse(directives_in(v, "log")[0]) for k, v in EXAMPLES.items()}
    assert rules["DENIALS"].zones == ("example.org.",) and rules["DENIALS"].classes == {"denial"}
    assert rules["COMBINED_ERRORS"].fmt == COMBINED and rules["COMBINED_ERRORS"].classes == {
        "denial",
        "error",
    }
    # "the multiple statements can be OR-ed": the two forms are the same rule.
    assert rules["NOT_ERRORS"] == rules["NOT_ERRORS_OR"]
    assert rules["CUSTOM"].fmt == "{proto} Request: {name} {type} {>id}"


def test_all_requests_are_logged() -> None:
    with serve(localize(ALL)) as s:
        q = s.query("Example.ORG.")
        text = s.stderr()
    assert re.search(
        rf'\] 127\.0\.0\.1:\d+ - {q.id} "A IN example\.org\. udp \d+ false 512" NOERROR qr,aa,rd \d+ ', text
    )


def test_custom_format_and_class_filters(make_unbound: Callable[..., UpstreamServer]) -> None:
    up = make_unbound({"example.org.": ["www.example.org. 30 IN A 198.18.0.1"]})
    fwd = f"\n    forward . {up.address}\n}}\n"
    with serve(localize(CUSTOM).replace("\n}\n", fwd)) as s:
        q = s.query("www.example.org.")
        text = s.stderr()
    assert f"[INFO] udp Request: www.example.org. A {q.id}" in text
    with serve(localize(DENIALS).replace("\n}\n", fwd)) as s:
        s.query("www.example.org.")  # success: not logged
        s.query("gone.example.org.")  # NXDOMAIN in example.org: logged
        s.query("gone.example.com.")  # outside example.org
        text = s.stderr()
    assert [line for line in text.splitlines() if '"A IN ' in line and "NXDOMAIN" in line] != []
    assert "www.example.org." not in text and "gone.example.com." not in text
