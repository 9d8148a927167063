"""trace: CoreDNS plugin/trace/setup_test.go table, README examples; the directive is accepted, not run."""

from __future__ import annotations

import math

import pytest

from nodelocaldns.plugins.trace import setup as trace
from support.directives import directive, directives_in, fails

Z = "http://localhost:9411/api/v2/spans"


@pytest.mark.parametrize(
    ("text", "endpoint", "every", "service", "cs", "backlog", "batch", "interval"),
    [("trace", Z, 1, "coredns", False, 0, 0, 0.0),
     ("trace localhost:1234", "http://localhost:1234/api/v2/spans", 1, "coredns", False, 0, 0, 0.0),
     ("trace http://localhost:1234/somewhere/else", "http://localhost:1234/somewhere/else", 1, "coredns", False, 0, 0, 0.0),
     ("trace zipkin localhost:1234", "http://localhost:1234/api/v2/spans", 1, "coredns", False, 0, 0, 0.0),
     ("trace datadog localhost", "localhost", 1, "coredns", False, 0, 0, 0.0),
     ("trace datadog http://localhost:8127", "http://localhost:8127", 1, "coredns", False, 0, 0, 0.0),
     ("trace datadog localhost {\n datadog_analytics_rate 0.1\n}", "localhost", 1, "coredns", False, 0, 0, 0.0),
     ("trace {\n every 100\n}", Z, 100, "coredns", False, 0, 0, 0.0),
     ("trace {\n every 100\n service foobar\nclient_server\n}", Z, 100, "foobar", True, 0, 0, 0.0),
     ("trace {\n every 2\n client_server true\n}", Z, 2, "coredns", True, 0, 0, 0.0),
     ("trace {\n client_server false\n}", Z, 1, "coredns", False, 0, 0, 0.0),
     ("trace {\n zipkin_max_backlog_size 100\n zipkin_max_batch_size 200\n zipkin_max_batch_interval 10s\n}", Z, 1, "coredns", False, 100, 200, 10.0),
     ("trace DataDog", "http://DataDog/api/v2/spans", 1, "coredns", False, 0, 0, 0.0)],
)  # fmt: skip
def test_parse(text: str, endpoint: str, every: int, service: str, cs: bool, backlog: int, batch: int, interval: float) -> None:  # fmt: skip
    c = trace.parse(directive(text))
    assert (c.endpoint, c.every, c.service, c.client_server) == (endpoint, every, service, cs)
    assert (c.zipkin_max_backlog_size, c.zipkin_max_batch_size, c.zipkin_max_batch_interval) == (
        backlog,
        batch,
        interval,
    )


def test_endpoint_type_is_case_insensitive_and_rate_kept() -> None:
    c = trace.parse(directive("trace DATADOG localhost:8126 {\n datadog_analytics_rate 0.5\n}"))
    assert (c.endpoint_type, c.endpoint, c.datadog_analytics_rate) == ("datadog", "localhost:8126", 0.5)
    assert math.isnan(
        trace.parse(directive("trace {\n datadog_analytics_rate NaN\n}")).datadog_analytics_rate
    )


@pytest.mark.parametrize(
    ("text", "match", "line"),
    [("trace footype localhost:4321", "tracing endpoint type 'footype' is not supported", 2),
     ("trace {\n every 2\n client_server junk\n}", "ParseBool", 4),
     ("trace datadog localhost {\n datadog_analytics_rate 2\n}", "must be between 0 and 1", 3),
     ("trace {\n zipkin_max_backlog_size wrong\n}", "Atoi", 3), ("trace {\n zipkin_max_batch_size wrong\n}", "Atoi", 3),
     ("trace {\n zipkin_max_batch_interval wrong\n}", "invalid duration", 3),
     ("trace {\n zipkin_max_backlog_size\n}", "Wrong argument count", 3), ("trace {\n zipkin_max_batch_size\n}", "Wrong argument count", 3),
     ("trace {\n zipkin_max_batch_interval\n}", "Wrong argument count", 3), ("trace {\n evrey 100\n}", "unknown property 'evrey'", 3),
     ("trace {\n every -1\n}", "ParseUint", 3), ("trace a b c", "ENDPOINT-TYPE", 2)],
)  # fmt: skip
def test_errors(text: str, match: str, line: int) -> None:
    fails(trace.parse, text, match, line)


def test_readme_examples() -> None:
    readme = (
        ". {\n    trace tracinghost:9253\n}\n. {\n    trace zipkin tracinghost:9253\n}\n"
        ". {\n    trace http://tracinghost:9411/zipkin/api/v2/spans\n}\n. {\n    trace datadog localhost:8126\n}\n"
        ". {\n    trace tracinghost:9411 {\n\tevery 10000\n\tservice dnsproxy\n\tclient_server\n    }\n}\n"
    )
    got = [trace.parse(d) for d in directives_in(readme, "trace")]
    assert [c.endpoint for c in got] == [
        "http://tracinghost:9253/api/v2/spans",
        "http://tracinghost:9253/api/v2/spans",
        "http://tracinghost:9411/zipkin/api/v2/spans",
        "localhost:8126",
        "http://tracinghost:9411/api/v2/spans",
    ]
    assert (got[4].every, got[4].service, got[4].client_server) == (10000, "dnsproxy", True)
    assert "not available" in trace.UNAVAILABLE
