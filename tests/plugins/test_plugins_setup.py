"""Each plugin's setup: Corefile directive text in, config (or a CorefileError naming file:line) out."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from nodelocaldns.core.duration import parse_duration
from nodelocaldns.corefile.model import Directive
from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import CorefileError
from nodelocaldns.plugins.bind import plugin as bind
from nodelocaldns.plugins.cache import setup as cache
from nodelocaldns.plugins.errors import plugin as errors
from nodelocaldns.plugins.forward import setup as forward
from nodelocaldns.plugins.health import plugin as health
from nodelocaldns.plugins.log import plugin as log
from nodelocaldns.plugins.loop import plugin as loop
from nodelocaldns.plugins.prometheus import plugin as prometheus
from nodelocaldns.plugins.ready import plugin as ready
from nodelocaldns.plugins.reload import plugin as reload
from nodelocaldns.server.config import plan


def directive(text: str) -> Directive:
    """The first directive of ``.:53 { <text> }`` (text starts on line 2 of file "Corefile")."""
    return parse_corefile(".:53 {\n" + text + "\n}\n", "Corefile")[0].directives[0]


def fails(parse: Any, text: str, match: str = "") -> CorefileError:
    with pytest.raises(CorefileError, match=match) as e:
        parse(directive(text))
    assert e.value.filename == "Corefile" and e.value.line >= 2
    return e.value


# -- cache ----------------------------------------------------------------------------------------


def test_cache_defaults() -> None:
    c = cache.parse(directive("cache"))
    assert (c.success_cap, c.success_max_ttl, c.success_min_ttl) == (10000, 3600, 5)
    assert (c.denial_cap, c.denial_max_ttl, c.denial_min_ttl) == (10000, 1800, 5)
    assert (c.prefetch_amount, c.prefetch_window, c.prefetch_percentage) == (0, 60.0, 10)
    assert (c.serve_stale, c.servfail_ttl, c.keepttl, c.zones) == (0.0, 5, False, ())


def test_cache_ttl_and_zones() -> None:
    c = cache.parse(directive("cache 30 Cluster.Local 10.0.0.0/24"))
    assert (c.success_max_ttl, c.denial_max_ttl) == (30, 30)
    assert c.zones == ("cluster.local.", "0.0.10.in-addr.arpa.")
    assert cache.parse(directive("cache example.org")).zones == ("example.org.",)


def test_nodelocal_cache_block() -> None:
    c = cache.parse(directive("cache {\n success 9984 30\n denial 9984 5\n}"))
    assert (c.success_cap, c.success_max_ttl, c.denial_cap, c.denial_max_ttl) == (9984, 30, 9984, 5)
    assert (c.success_min_ttl, c.denial_min_ttl) == (5, 5)


def test_cache_every_option() -> None:
    c = cache.parse(directive(
        "cache 300 {\n success 5000 60 10\n denial 2000 20 1\n prefetch 5 2m 30%\n serve_stale 10m verify\n"
        " servfail 10s\n disable success a.example\n disable denial\n keepttl\n}"
    ))  # fmt: skip
    assert (c.success_cap, c.success_max_ttl, c.success_min_ttl) == (5000, 60, 10)
    assert (c.denial_cap, c.denial_max_ttl, c.denial_min_ttl) == (2000, 20, 1)
    assert (c.prefetch_amount, c.prefetch_window, c.prefetch_percentage) == (5, 120.0, 30)
    assert (c.serve_stale, c.stale_verify, c.servfail_ttl, c.keepttl) == (600.0, True, 10.0, True)
    assert c.disable_success == ("a.example.",) and c.disable_denial == (".",)


@pytest.mark.parametrize(
    ("text", "amount", "window", "pct"),
    [("prefetch 2", 2, 60.0, 10), ("prefetch 2 30s", 2, 30.0, 10), ("prefetch 2 25%", 2, 60.0, 25),
     ("prefetch 0", 0, 60.0, 10), ("prefetch 1 1h 90%", 1, 3600.0, 90), ("prefetch 3 1m30s 10%", 3, 90.0, 10)],
)  # fmt: skip
def test_cache_prefetch(text: str, amount: int, window: float, pct: int) -> None:
    c = cache.parse(directive("cache {\n " + text + "\n}"))
    assert (c.prefetch_amount, c.prefetch_window, c.prefetch_percentage) == (amount, window, pct)


def test_cache_serve_stale_failure_recheck() -> None:
    # CoreDNS README: FAILURE_RECHECK follows RESPONSE_TTL in either mode.
    c = cache.parse(directive("cache {\n serve_stale 1h immediate 30s 30s\n}"))
    assert (c.stale_verify, c.stale_response_ttl, c.stale_recheck) == (False, 30, 30.0)
    c = cache.parse(directive("cache {\n serve_stale 1h verify 100ms 30s 5m\n}"))
    assert (c.stale_verify, c.stale_verify_timeout, c.stale_response_ttl, c.stale_recheck) == (
        True,
        0.1,
        30,
        300.0,
    )


@pytest.mark.parametrize(
    ("text", "stale", "verify", "timeout", "ttl"),
    [("serve_stale", 3600.0, False, 0.0, 0), ("serve_stale 10m", 600.0, False, 0.0, 0),
     ("serve_stale immediate", 3600.0, False, 0.0, 0), ("serve_stale 1h verify", 3600.0, True, 0.0, 0),
     ("serve_stale 1h immediate 30s", 3600.0, False, 0.0, 30), ("serve_stale 1h verify 100ms", 3600.0, True, 0.1, 0),
     ("serve_stale 1h verify 100ms 30s", 3600.0, True, 0.1, 30), ("serve_stale 1h verify 0 30s", 3600.0, True, 0.0, 30)],
)  # fmt: skip
def test_cache_serve_stale(text: str, stale: float, verify: bool, timeout: float, ttl: int) -> None:
    c = cache.parse(directive("cache {\n " + text + "\n}"))
    assert (c.serve_stale, c.stale_verify, c.stale_verify_timeout, c.stale_response_ttl) == (
        stale,
        verify,
        timeout,
        ttl,
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("cache 0", "TTL"),
        ("cache -5", "TTL"),
        ("cache {\n success\n}", "CAPACITY"),
        ("cache {\n success many\n}", "capacity"),
        ("cache {\n success 10 0\n}", "TTL"),
        ("cache {\n denial 10 5 -1\n}", "MINTTL"),
        ("cache {\n success 1 2 3 4\n}", "CAPACITY"),
        ("cache {\n prefetch\n}", "prefetch"),
        ("cache {\n prefetch -1\n}", "amount"),
        ("cache {\n prefetch 1 5%\n}", "percentage"),
        ("cache {\n prefetch 1 1m 95%\n}", "percentage"),
        ("cache {\n prefetch 1 1m 50\n}", "%"),
        ("cache {\n prefetch 1 soon\n}", "duration"),
        ("cache {\n serve_stale 1h sometimes\n}", "immediate or verify"),
        ("cache {\n serve_stale 1h immediate 1.5s\n}", "whole number"),
        ("cache {\n serve_stale 1h verify 1s 30s 6m\n}", "failure recheck cannot exceed 5 minutes"),
        ("cache {\n serve_stale 1h immediate 30s -1s\n}", "invalid negative failure recheck"),
        ("cache {\n serve_stale 1h immediate 30s soon\n}", "invalid serve_stale failure recheck"),
        ("cache {\n serve_stale 1h immediate 30s 30s 1\n}", "unexpected argument"),
        ("cache {\n servfail\n}", "DURATION"),
        ("cache {\n servfail 6m\n}", "5m"),
        ("cache {\n disable everything\n}", "success|denial"),
        ("cache {\n keepttl forever\n}", "no arguments"),
        ("cache {\n frobnicate\n}", "unknown property"),
    ],
)
def test_cache_errors(text: str, match: str) -> None:
    fails(cache.parse, text, match)


@pytest.mark.parametrize(("text", "seconds"), [("0", 0.0), ("5s", 5.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0),
                                               ("1.5s", 1.5), ("100us", 1e-4)])  # fmt: skip
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "5 s", "1m-5s", "five"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- forward --------------------------------------------------------------------------------------


def test_forward_defaults_and_options() -> None:
    f = forward.parse(directive("forward . 10.0.0.10 10.0.0.11:5353"))
    assert f.from_zone == "." and [u.label for u in f.upstreams] == ["10.0.0.10:53", "10.0.0.11:5353"]
    assert (f.max_fails, f.expire, f.policy, f.health_check, f.max_concurrent, f.force_tcp, f.prefer_udp) == (
        2, 10.0, "random", 0.5, 1000, False, False)  # fmt: skip
    # Our default caps in-flight upstream queries (CoreDNS: unlimited); an explicit 0 still lifts the cap.
    assert forward.parse(directive("forward . 10.0.0.10 {\n max_concurrent 0\n}")).max_concurrent == 0
    f = forward.parse(directive(
        "forward Cluster.Local 10.0.0.10 {\n except a.cluster.local b.cluster.local\n force_tcp\n expire 20s\n"
        " max_fails 5\n policy round_robin\n health_check 2s no_rec domain example.org\n max_concurrent 20\n}"
    ))  # fmt: skip
    assert f.from_zone == "cluster.local." and f.except_zones == ("a.cluster.local.", "b.cluster.local.")
    assert (f.force_tcp, f.expire, f.max_fails, f.policy, f.max_concurrent) == (
        True,
        20.0,
        5,
        "round_robin",
        20,
    )
    assert (f.health_check, f.health_no_rec, f.health_domain) == (2.0, True, "example.org.")


def test_forward_newer_options() -> None:
    f = forward.parse(directive(
        "forward . 10.0.0.1 10.0.0.2 {\n next nxdomain\n next SERVFAIL\n failover servfail REFUSED\n"
        " failfast_all_unhealthy_upstreams\n expire 5s\n max_age 30s\n max_idle_conns 4\n}"
    ))  # fmt: skip
    assert (f.next_rcodes, f.failover_rcodes, f.failfast) == ((3, 2), (2, 5), True)
    assert (f.expire, f.max_age, f.max_idle_conns) == (5.0, 30.0, 4)
    assert f.tls_context is None  # no tls:// upstream: nothing to load
    t = forward.parse(directive("forward . tls://10.0.0.1 {\n tls_servername dns.example\n}"))
    assert t.upstreams[0].tls and t.tls_servername == "dns.example" and t.tls_context is not None
    assert t.upstreams[0].label == "10.0.0.1:853"


def test_forward_dedups_and_caps_upstreams() -> None:
    f = forward.parse(directive("forward . 10.0.0.1 10.0.0.1:53 dns://10.0.0.1"))
    assert len(f.upstreams) == 1
    fails(forward.parse, "forward . " + " ".join(f"10.0.0.{i}" for i in range(1, 17)), "15")


def test_forward_reads_a_resolv_conf(tmp_path: Any) -> None:
    p = tmp_path / "resolv.conf"
    p.write_text("nameserver 10.0.0.10\nnameserver fd00::10\n")
    f = forward.parse(directive(f"forward . {p} 10.0.0.99"))
    assert [u.label for u in f.upstreams] == ["10.0.0.10:53", "[fd00::10]:53", "10.0.0.99:53"]
    empty = tmp_path / "empty.conf"
    empty.write_text("search x\n")
    fails(forward.parse, f"forward . {empty}", "no nameservers")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("forward .", "FROM TO"),
        ("forward . banana", "not an IP"),
        ("forward . https://10.0.0.1", "'https' is not supported as a destination protocol"),
        ("forward . quic://10.0.0.1", "'quic' is not supported as a destination protocol"),
        ("forward . /nonexistent/resolv.conf", "does not exist"),
        ("forward . 10.0.0.1 {\n policy fastest\n}", "policy"),
        ("forward . 10.0.0.1 {\n max_fails -1\n}", "max_fails"),
        ("forward . 10.0.0.1 {\n max_concurrent lots\n}", "max_concurrent"),
        ("forward . 10.0.0.1 {\n expire\n}", "DURATION"),
        ("forward . 10.0.0.1 {\n except\n}", "except"),
        ("forward . 10.0.0.1 {\n force_tcp now\n}", "no arguments"),
        ("forward . 10.0.0.1 {\n health_check\n}", "health_check"),
        ("forward . 10.0.0.1 {\n health_check 1s maybe\n}", "unexpected"),
        ("forward . 10.0.0.1 {\n source_address 10.0.0.2\n}", "unknown property"),
        ("forward . 10.0.0.1 {\n next\n}", "RCODE"),
        ("forward . 10.0.0.1 {\n next NXDOMAIN BOGUS\n}", "BOGUS is not a valid rcode"),
        ("forward . 10.0.0.1 {\n failover NOERROR\n}", "NoError cannot be used in failover"),
        ("forward . 10.0.0.1 {\n failover\n}", "RCODE"),
        ("forward . 10.0.0.1 {\n failfast_all_unhealthy_upstreams yes\n}", "no arguments"),
        ("forward . 10.0.0.1 {\n max_idle_conns -1\n}", "max_idle_conns can't be negative: -1"),
        ("forward . 10.0.0.1 {\n max_idle_conns many\n}", "max_idle_conns"),
        ("forward . 10.0.0.1 {\n max_age -1s\n}", "max_age can't be negative"),
        ("forward . 10.0.0.1 {\n max_age 5s\n}", r"max_age \(5s\) must not be less than expire \(10s\)"),
        ("forward . 10.0.0.1 {\n read_timeout 0s\n}", "read_timeout must be positive: 0s"),
        ("forward . 10.0.0.1 {\n tls a b c d\n}", "at most three"),
        ("forward . 10.0.0.1 {\n tls_servername\n}", "NAME"),
        (
            "forward . tls://10.0.0.1 {\n tls /nonexistent/ca.pem\n}",
            "error reading /nonexistent/ca.pem: open /nonexistent/ca.pem: no such file or directory",
        ),
        (
            "forward . tls://10.0.0.1 {\n tls /nonexistent/c.pem /nonexistent/k.pem\n}",
            "could not load TLS cert: open /nonexistent/c.pem: no such file or directory",
        ),
        (
            "forward . tls://10.0.0.1%dns.example {\n tls_servername other.example\n}",
            r"both forward \('other.example'\) and proxy level \('dns.example'\) TLS servernames are set",
        ),
    ],
)
def test_forward_errors(text: str, match: str) -> None:
    fails(forward.parse, text, match)


# -- the rest -------------------------------------------------------------------------------------


def test_reload() -> None:
    assert reload.parse(directive("reload")) == reload.ReloadConfig(30.0, 15.0)
    assert reload.parse(directive("reload 10s")) == reload.ReloadConfig(
        10.0, 5.0
    )  # jitter capped at interval/2
    assert reload.parse(directive("reload 2s 0s")) == reload.ReloadConfig(2.0, 0.0)
    for text, match in (
        ("reload 1s", "2s"),
        ("reload 10s 500ms", "1s"),
        ("reload 1 2 3", "INTERVAL"),
        ("reload soon", "duration"),
    ):
        fails(reload.parse, text, match)


def test_reload_jitter_is_plus_minus_half() -> None:
    cfg = reload.ReloadConfig(30.0, 15.0)
    rng = random.Random(7)
    delays = [cfg.next_delay(rng) for _ in range(2000)]
    assert 22.5 <= min(delays) < 23.5 and 36.5 < max(delays) <= 37.5
    assert reload.ReloadConfig(5.0, 0.0).next_delay(rng) == 5.0


def test_errors_setup() -> None:
    assert errors.parse(directive("errors")) == errors.ErrorsConfig()
    e = errors.parse(directive('errors {\n stacktrace\n consolidate 5m ".* timeout$" warning show_first\n}'))
    assert e.stacktrace and len(e.consolidate) == 1
    c = e.consolidate[0]
    assert (c.period, c.pattern.pattern, c.level, c.show_first) == (
        300.0,
        ".* timeout$",
        logging.WARNING,
        True,
    )
    for text, match in (("errors stdout", "no arguments"), ('errors {\n consolidate 5m\n}', "REGEXP"),
                        ('errors {\n consolidate 5m "(" \n}', "consolidate"),
                        ('errors {\n consolidate 5m ".*" loudly\n}', "unexpected"), ("errors {\n verbose\n}", "unknown")):  # fmt: skip
        fails(errors.parse, text, match)


def test_log_setup() -> None:
    r = log.parse(directive("log"))
    assert r.zones == (".",) and r.fmt == log.COMMON and r.classes == frozenset({"all"})
    r = log.parse(directive("log cluster.local {combined}"))
    assert r.zones == ("cluster.local.",) and r.fmt == log.COMBINED
    r = log.parse(directive('log . "{remote} {name}" {\n class denial error\n}'))
    assert r.fmt == "{remote} {name}" and r.classes == frozenset({"denial", "error"})
    fails(log.parse, "log {\n class sometimes\n}", "invalid class")
    fails(log.parse, "log {\n class\n}", "class")
    fails(log.parse, "log {\n level debug\n}", "unknown property")


def test_log_go_seconds() -> None:
    assert log.go_seconds(0.001695631) == "0.001695631s"
    assert log.go_seconds(1.0) == "1s"
    assert log.go_seconds(1.5e-05) == "0.000015s"
    assert log.rflags(0x8580) == "qr,aa,rd,ra"


# time.Duration(ns).Seconds() then FormatFloat('f', -1): what CoreDNS's {duration} prints.
GO_DURATION_FACTS = [
    (300_000_000, 0.3, "0.3s"),  # Go's own time_test.go secDurationTests entry
    (694_174, 0.000694174, "0.000694174s"),  # the line an operator compared with CoreDNS's
    (1_695_631, 0.001695631, "0.001695631s"),  # CoreDNS log plugin README example
    (1, 1e-9, "0.000000001s"),
    (0, 0.0, "0s"),
    (1_000_000_000, 1.0, "1s"),
    (90_500_000_000, 90.5, "90.5s"),
    (5_000_000_001, 5.000000001, "5.000000001s"),
    (-1_500_000_000, -1.5, "-1.5s"),
]


@pytest.mark.parametrize(("ns", "seconds", "text"), GO_DURATION_FACTS)
def test_log_duration_from_integer_nanoseconds(ns: int, seconds: float, text: str) -> None:
    assert log.duration_seconds(ns) == seconds
    assert log.go_duration(ns) == text


def test_loop_bind_health_ready_prometheus_setup() -> None:
    loop.parse(directive("loop"))
    fails(loop.parse, "loop now", "no arguments")
    assert bind.parse(directive("bind 127.0.0.1 ::1")).hosts == ("127.0.0.1", "::1")
    lo = bind.parse(directive("bind lo {\n except ::1\n}"))
    assert "127.0.0.1" in lo.hosts and "::1" not in lo.hosts
    fails(bind.parse, "bind", "at least one")
    fails(bind.parse, "bind nope0", "not a valid IP address or interface")
    fails(bind.parse, "bind lo {\n only 127.0.0.1\n}", "except")
    assert health.parse(directive("health")) == health.HealthConfig(":8080", 0.0)
    assert health.parse(directive("health 169.254.20.10:8080 {\n lameduck 5s\n}")) == health.HealthConfig(
        "169.254.20.10:8080", 5.0
    )
    fails(health.parse, "health :99999", "port")
    fails(health.parse, "health a b", "at most one")
    fails(health.parse, "health {\n lameduck\n}", "lameduck")
    assert ready.parse(directive("ready")).addr == ":8181"
    assert ready.parse(directive("ready :8282 {\n monitor until-ready\n}")).addr == ":8282"
    fails(ready.parse, "ready {\n monitor sometimes\n}", "monitor")
    assert prometheus.parse(directive("prometheus")).addr == "localhost:9153"
    assert prometheus.parse(directive("prometheus :9253")).addr == ":9253"
    fails(prometheus.parse, "prometheus :9253 {\n push\n}", "unknown property")


def test_plan_groups_blocks_by_listener_and_rejects_conflicts() -> None:
    text = ("cluster.local:53 in-addr.arpa:53 {\n bind 169.254.20.10 10.0.0.10\n cache 30\n}\n"
            ".:53 {\n bind 169.254.20.10 10.0.0.10\n}\n")  # fmt: skip
    p = plan(parse_corefile(text, "Corefile"))
    assert set(p.listeners) == {("169.254.20.10", 53), ("10.0.0.10", 53)}
    assert sorted(z for z, _ in p.listeners[("169.254.20.10", 53)]) == [
        ".",
        "cluster.local.",
        "in-addr.arpa.",
    ]
    with pytest.raises(CorefileError, match="already defined"):
        plan(parse_corefile(".:53 {\n}\n.:53 {\n}\n", "Corefile"))
    with pytest.raises(CorefileError, match="with and without bind"):
        plan(parse_corefile(".:53 {\n}\n.:53 {\n bind 127.0.0.1\n}\n", "Corefile"))
    with pytest.raises(CorefileError, match="only be used once") as e:
        plan(parse_corefile(".:53 {\n cache\n errors\n cache\n}\n", "Corefile"))
    assert (e.value.line, e.value.directive) == (4, "cache")
    with pytest.raises(
        CorefileError, match="'kubernetes' is a CoreDNS plugin not available in nodelocaldns"
    ) as e:
        plan(parse_corefile(".:53 {\n kubernetes cluster.local\n}\n", "Corefile"))
    assert str(e.value).startswith("Corefile:2 (directive 'kubernetes')")
    assert "(available: bind, bufsize, cache, debug, " in str(e.value) and "docs/configuration.md" in str(
        e.value
    )
    with pytest.raises(CorefileError, match=r"unknown directive 'forwrd' \(did you mean 'forward'\?\)"):
        plan(parse_corefile(".:53 {\n forwrd . 127.0.0.1\n}\n", "Corefile"))
