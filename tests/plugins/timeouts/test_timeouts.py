"""timeouts: CoreDNS plugin/timeouts/timeouts_test.go table, README examples, listener merge."""

from __future__ import annotations

import pytest

from nodelocaldns.core.timeouts import ServerTimeouts, TimeoutsConfig, for_listener
from nodelocaldns.plugins.timeouts import setup as timeouts
from support.directives import directive, directives_in, fails


@pytest.mark.parametrize(
    ("text", "want"),
    [("timeouts {\n read 30s\n}", TimeoutsConfig(read=30.0)),
     ("timeouts {\n read 1m\n write 2m\n}", TimeoutsConfig(read=60.0, write=120.0)),
     (" timeouts {\n idle 1h\n}", TimeoutsConfig(idle=3600.0)),
     ("timeouts {\n read 10\n write 20\n idle 60\n}", TimeoutsConfig(10.0, 20.0, 60.0)),
     ("timeouts {\n maxtcpqueries 128\n}", TimeoutsConfig(max_tcp_queries=128)),
     ("timeouts {\n maxtcpqueries -1\n}", TimeoutsConfig(max_tcp_queries=-1)),
     ("timeouts {\n read 10s\n maxtcpqueries 128\n}", TimeoutsConfig(read=10.0, max_tcp_queries=128)),
     ("timeouts {\n read 1s\n idle 24h\n}", TimeoutsConfig(read=1.0, idle=86400.0))],
)  # fmt: skip
def test_parse(text: str, want: TimeoutsConfig) -> None:
    assert timeouts.parse(directive(text)) == want


@pytest.mark.parametrize(
    ("text", "match", "line"),
    [("timeouts", "block with no timeouts specified", 2), ("timeouts {\n}", "block with no timeouts specified", 2),
     ("timeouts {\n read 10s\n giraffe 30s\n}", "unknown option", 4),
     ("timeouts {\n read 10s 20s\n write 30s\n}", "Wrong argument", 3),
     ("timeouts {\n write snake\n}", "failed to parse duration", 3), ("timeouts {\n idle 0s\n}", "needs to be between", 3),
     ("timeouts {\n read 48h\n}", "needs to be between", 3), ("timeouts {\n read 999ms\n}", "needs to be between", 3),
     ("timeouts {\n maxtcpqueries 0\n}", "needs to be -1", 3), ("timeouts {\n maxtcpqueries -2\n}", "needs to be -1", 3),
     ("timeouts {\n maxtcpqueries snake\n}", "invalid value for maxtcpqueries", 3), ("timeouts 5s", "no arguments", 2)],
)  # fmt: skip
def test_errors(text: str, match: str, line: int) -> None:
    fails(timeouts.parse, text, match, line)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("48h", "48h0m0s"), ("999ms", "999ms"), ("0s", "0s"), ("-5s", "-5s"), ("90000", "25h0m0s")],
)
def test_an_out_of_range_timeout_is_shown_as_go_prints_a_duration(value: str, shown: str) -> None:
    """CoreDNS formats the parsed time.Duration with %s (Duration.String), not the seconds."""
    fails(
        timeouts.parse,
        f"timeouts {{\n read {value}\n}}",
        f"timeout provided '{shown}' needs to be between",
        3,
    )


def test_listener_defaults_and_merge_in_order() -> None:
    assert for_listener([]) == ServerTimeouts(3.0, 5.0, 10.0, -1)
    got = for_listener([TimeoutsConfig(read=10.0, idle=60.0), TimeoutsConfig(read=20.0, max_tcp_queries=128)])
    assert got == ServerTimeouts(read=20.0, write=5.0, idle=60.0, max_tcp_queries=128)


README = """
tls://.:5553 {
	timeouts {
		read 10s
		write 20s
		idle 60s
	}
}
https://. {
	timeouts {
		read 1m
	}
}
quic://.:853 {
	timeouts {
		read 10s
		idle 2m
	}
}
.:1053 {
	timeouts {
		read 15s
		write 30s
	}
	forward . /etc/resolv.conf
}
. {
	timeouts {
		maxtcpqueries 128
	}
	forward . /etc/resolv.conf
}
"""


def test_readme_examples() -> None:
    # The tls://, https:// and quic:// keys are rejected by our server-key parser, so their blocks are
    # read here as plain blocks: only the timeouts directive is under test.
    text = (
        README.replace("tls://.:5553", ".:5553")
        .replace("https://.", ".:443")
        .replace("quic://.:853", ".:853")
    )
    got = [timeouts.parse(d) for d in directives_in(text, "timeouts")]
    assert got == [
        TimeoutsConfig(10.0, 20.0, 60.0),
        TimeoutsConfig(read=60.0),
        TimeoutsConfig(read=10.0, idle=120.0),
        TimeoutsConfig(read=15.0, write=30.0),
        TimeoutsConfig(max_tcp_queries=128),
    ]
