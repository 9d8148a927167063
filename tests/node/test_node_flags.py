"""node-cache command line: Go flag grammar, defaults, env fallback and validation."""

from __future__ import annotations

import ipaddress
import os

import pytest

from nodelocaldns.errors import ConfigError
from nodelocaldns.node.flags import (
    HelpRequested,
    NodeCacheParams,
    env_name,
    parse_args,
    parse_sync_interval,
    usage,
)

# The addon DaemonSet's args after the admin's sed (kubernetes/kubernetes nodelocaldns.yaml, image 1.26.4).
DAEMONSET_ARGS = [
    "-localip",
    "169.254.20.10,198.18.0.10",
    "-conf",
    "/etc/Corefile",
    "-upstreamsvc",
    "kube-dns-upstream",
    "-pidfile",
    "/tmp/node-cache.pid",
]


def parse(argv: list[str], env: dict[str, str] | None = None, kube_dns_dir: bool = False) -> NodeCacheParams:
    return parse_args(argv, env or {}, path_exists=lambda _: kube_dns_dir)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_defaults_match_node_cache() -> None:
    p = parse(["-localip", "169.254.20.10"])
    assert p.local_ips == (ip("169.254.20.10"),)
    assert p.interface_name == "nodelocaldns"
    assert p.setup_interface is True
    assert p.setup_iptables is True
    assert p.skip_teardown is False
    assert p.sync_interval == 60.0
    assert p.upstream_svc == "kube-dns"
    assert p.base_corefile == "/etc/coredns/Corefile.base"
    assert p.corefile == "/etc/Corefile"
    assert p.kubedns_cm is None
    assert p.health_port == 8080
    assert p.metrics_listen_address == "0.0.0.0:9353"
    assert p.prometheus_listen_address == ":9253"
    assert p.pidfile is None
    assert p.reload_with_signal is False
    assert p.dns_port == 53
    assert p.rules_backend == "auto"
    assert p.cluster_domain == "cluster.local"
    assert (p.quiet, p.version, p.plugins) == (False, False, False)


def test_daemonset_args() -> None:
    p = parse(DAEMONSET_ARGS, kube_dns_dir=True)
    assert p.local_ips == (ip("169.254.20.10"), ip("198.18.0.10"))
    assert p.local_ip_list == "169.254.20.10 198.18.0.10"
    assert p.corefile == "/etc/Corefile"
    assert p.upstream_svc == "kube-dns-upstream"
    assert p.pidfile == "/tmp/node-cache.pid"
    # The manifest mounts the kube-dns ConfigMap at the default path, so it is picked up.
    assert p.kubedns_cm == "/etc/kube-dns"


@pytest.mark.parametrize(
    "argv",
    [
        ["-upstreamsvc", "my-dns"],
        ["-upstreamsvc=my-dns"],
        ["--upstreamsvc", "my-dns"],
        ["--upstreamsvc=my-dns"],
    ],
)
def test_value_flag_forms(argv: list[str]) -> None:
    assert parse(["-localip=169.254.20.10", *argv]).upstream_svc == "my-dns"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-skipteardown"], True),
        (["--skipteardown"], True),
        (["-skipteardown=true"], True),
        (["-skipteardown=1"], True),
        (["-skipteardown=T"], True),
        (["--skipteardown=TRUE"], True),
        (["-skipteardown=false"], False),
        (["-skipteardown=0"], False),
        (["-skipteardown=F"], False),
        (["-skipteardown", "-skipteardown=false"], False),
        ([], False),
    ],
)
def test_bool_flag_forms(argv: list[str], expected: bool) -> None:
    assert parse(["-localip", "169.254.20.10", *argv]).skip_teardown is expected


def test_bool_default_true_can_be_turned_off() -> None:
    p = parse(["-localip", "169.254.20.10", "-setupinterface=false", "--setupiptables=f"])
    assert (p.setup_interface, p.setup_iptables) == (False, False)


def test_bare_bool_never_consumes_next_argument() -> None:
    p = parse(["-skipteardown", "-localip", "169.254.20.10"])
    assert p.skip_teardown is True
    assert p.local_ips == (ip("169.254.20.10"),)
    # "false" is a positional argument in Go, which ends flag parsing and CoreDNS then refuses it.
    with pytest.raises(ConfigError, match=r"extra command line arguments: \['false'\]"):
        parse(["-localip", "169.254.20.10", "-skipteardown", "false"])


def test_value_flag_takes_next_argument_even_if_it_looks_like_a_flag() -> None:
    assert parse(["-localip", "169.254.20.10", "-pidfile", "-odd"]).pidfile == "-odd"


def test_last_occurrence_wins() -> None:
    p = parse(
        ["-localip", "169.254.20.1", "-localip", "169.254.20.10", "-health-port", "1", "-health-port=9"]
    )
    assert p.local_ips == (ip("169.254.20.10"),)
    assert p.health_port == 9


@pytest.mark.parametrize(
    ("argv", "port"),
    [
        (["-dns.port", "5353"], 5353),
        (["-p", "1053"], 1053),
        (["--dns.port=5353", "-p", "1053"], 1053),
        (["-p=1053", "-dns.port", "5353"], 5353),
    ],
)
def test_dns_port_aliases(argv: list[str], port: int) -> None:
    assert parse(["-localip", "169.254.20.10", *argv]).dns_port == port


def test_double_dash_ends_flags() -> None:
    assert parse(["-localip", "169.254.20.10", "--"]).local_ips == (ip("169.254.20.10"),)
    with pytest.raises(ConfigError, match="extra command line arguments"):
        parse(["-localip", "169.254.20.10", "--", "-quiet"])
    with pytest.raises(ConfigError, match="extra command line arguments"):
        parse(["-localip", "169.254.20.10", "-", "-quiet"])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("60", 60.0),
        ("5", 5.0),
        ("2.5", 2.5),
        ("60s", 60.0),
        ("1m30s", 90.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1s500ms", 1.5),
        ("+10s", 10.0),
        ("10us", 0.00001),
        ("10\u00b5s", 0.00001),
        # node-cache's quirk: the Duration is multiplied by a second, so "30ns" means 30 s.
        ("30ns", 30.0),
        ("60ns", 60.0),
        ("1500ns", 1500.0),
        # Only a value below one second and only in ns keeps the quirk.
        ("2000000000ns", 2.0),
    ],
)
def test_sync_interval(value: str, seconds: float) -> None:
    assert parse_sync_interval(value) == pytest.approx(seconds)
    assert parse(["-localip", "169.254.20.10", "-syncinterval", value]).sync_interval == pytest.approx(
        seconds
    )


@pytest.mark.parametrize("value", ["", "abc", "0", "0s", "0ns", "-5s", "5x", "s", "1.2.3s", "5 s", "1S"])
def test_sync_interval_invalid(value: str) -> None:
    with pytest.raises(ConfigError, match="-syncinterval"):
        parse(["-localip", "169.254.20.10", "-syncinterval", value])


@pytest.mark.parametrize(
    ("localip", "expected"),
    [
        ("169.254.20.10", ("169.254.20.10",)),
        ("fd00::10", ("fd00::10",)),
        ("fd00::10,fd00::a", ("fd00::10", "fd00::a")),
        # Dual-stack in one process: node-cache refuses this ("unexpected IP Family"), we allow it.
        ("169.254.20.10,fd00::10", ("169.254.20.10", "fd00::10")),
        ("fd00::10,169.254.20.10", ("fd00::10", "169.254.20.10")),
        (" 169.254.20.10 , 198.18.0.10", ("169.254.20.10", "198.18.0.10")),
        ("169.254.20.10,169.254.20.10", ("169.254.20.10",)),
        ("fd00:0:0::0010", ("fd00::10",)),
    ],
)
def test_localip(localip: str, expected: tuple[str, ...]) -> None:
    assert tuple(str(a) for a in parse(["-localip", localip]).local_ips) == expected


@pytest.mark.parametrize(
    "localip",
    [
        ",",
        "169.254.20.10,",
        "169.254.20",
        "__PILLAR__LOCAL__DNS__",
        "fe80::1%eth0",
        "[fd00::10]",
        "1.2.3.4/32",
    ],
)
def test_localip_invalid(localip: str) -> None:
    with pytest.raises(ConfigError, match="invalid localip specified"):
        parse(["-localip", localip])


def test_localip_required() -> None:
    for argv in ([], ["-localip", ""], ["-localip", "  "]):
        with pytest.raises(
            ConfigError, match=r"flag -localip is required: .* e\.g\. -localip 169\.254\.20\.10"
        ):
            parse(argv)


@pytest.mark.parametrize("flag", ["-version", "-plugins"])
def test_version_and_plugins_need_no_localip(flag: str) -> None:
    p = parse([flag])
    assert p.local_ips == ()
    assert (p.version, p.plugins) == (flag == "-version", flag == "-plugins")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "/etc/Corefile"),
        (["-corefile", "/x/Corefile"], "/x/Corefile"),
        (["-conf", "/y/Corefile"], "/y/Corefile"),
        (["-conf", "/y/Corefile", "-corefile", "/x/Corefile"], "/y/Corefile"),
        (["-corefile", "/x/Corefile", "-conf="], "/x/Corefile"),
    ],
)
def test_conf_wins_over_corefile(argv: list[str], expected: str) -> None:
    assert parse(["-localip", "169.254.20.10", *argv]).corefile == expected


def test_no_corefile_path_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no Corefile path"):
        parse(["-localip", "169.254.20.10", "-corefile="])


@pytest.mark.parametrize(
    ("argv", "exists", "expected"),
    [
        ([], False, None),
        ([], True, "/etc/kube-dns"),
        (["-kubednscm", "/cm"], False, "/cm"),
        (["-kubednscm", "/cm"], True, "/cm"),
    ],
)
def test_kubednscm_default(argv: list[str], exists: bool, expected: str | None) -> None:
    assert parse(["-localip", "169.254.20.10", *argv], kube_dns_dir=exists).kubedns_cm == expected


def test_kubednscm_default_checks_real_path() -> None:
    # Without an injected predicate the real filesystem decides.
    p = parse_args(["-localip", "169.254.20.10"], {})
    assert p.kubedns_cm == ("/etc/kube-dns" if os.path.exists("/etc/kube-dns") else None)


@pytest.mark.parametrize("backend", ["auto", "iptables", "nftables"])
def test_rules_backend(backend: str) -> None:
    assert parse(["-localip", "169.254.20.10", "-rules-backend", backend]).rules_backend == backend


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, "cluster.local"),
        ([], {"CLUSTER_DOMAIN": "corp.example"}, "corp.example"),
        ([], {"CLUSTER_DOMAIN": "corp.example", "NODELOCALDNS_CLUSTER_DOMAIN": "env.example"}, "env.example"),
        (["-cluster-domain", "flag.example"], {"NODELOCALDNS_CLUSTER_DOMAIN": "env.example"}, "flag.example"),
        (["-cluster-domain", "Cluster.Local."], {}, "cluster.local"),
    ],
)
def test_cluster_domain(argv: list[str], env: dict[str, str], expected: str) -> None:
    assert parse(["-localip", "169.254.20.10", *argv], env).cluster_domain == expected


def test_quiet_and_reloadwithsignal() -> None:
    p = parse(["-localip", "169.254.20.10", "-quiet", "-reloadwithsignal"])
    assert (p.quiet, p.reload_with_signal) == (True, True)


def test_other_values() -> None:
    p = parse(
        [
            "-localip=169.254.20.10",
            "-interfacename=nodelocaldns2",
            "-health-port=8081",
            "-metrics-listen-address=[::1]:9354",
            "-prometheus-listen-address=127.0.0.1:9300",
            "-basecorefile=/etc/coredns/alt.base",
        ]
    )
    assert p.prometheus_listen_address == "127.0.0.1:9300"
    assert p.interface_name == "nodelocaldns2"
    assert p.health_port == 8081
    assert p.metrics_listen_address == "[::1]:9354"
    assert p.base_corefile == "/etc/coredns/alt.base"


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("localip", "NODELOCALDNS_LOCALIP"),
        ("health-port", "NODELOCALDNS_HEALTH_PORT"),
        ("dns.port", "NODELOCALDNS_DNS_PORT"),
        ("metrics-listen-address", "NODELOCALDNS_METRICS_LISTEN_ADDRESS"),
        ("prometheus-listen-address", "NODELOCALDNS_PROMETHEUS_LISTEN_ADDRESS"),
        ("rules-backend", "NODELOCALDNS_RULES_BACKEND"),
    ],
)
def test_env_name(flag: str, expected: str) -> None:
    assert env_name(flag) == expected


def test_every_setting_from_env() -> None:
    env = {
        "NODELOCALDNS_LOCALIP": "169.254.20.10,fd00::10",
        "NODELOCALDNS_INTERFACENAME": "nld0",
        "NODELOCALDNS_SETUPINTERFACE": "false",
        "NODELOCALDNS_SETUPIPTABLES": "0",
        "NODELOCALDNS_SKIPTEARDOWN": "true",
        "NODELOCALDNS_SYNCINTERVAL": "30ns",
        "NODELOCALDNS_UPSTREAMSVC": "dns-up",
        "NODELOCALDNS_CONF": "/run/Corefile",
        "NODELOCALDNS_BASECOREFILE": "/cfg/Corefile.base",
        "NODELOCALDNS_KUBEDNSCM": "/cfg/kube-dns",
        "NODELOCALDNS_HEALTH_PORT": "8099",
        "NODELOCALDNS_METRICS_LISTEN_ADDRESS": "127.0.0.1:9354",
        "NODELOCALDNS_PIDFILE": "/run/nc.pid",
        "NODELOCALDNS_RELOADWITHSIGNAL": "true",
        "NODELOCALDNS_DNS_PORT": "5353",
        "NODELOCALDNS_RULES_BACKEND": "nftables",
        "NODELOCALDNS_CLUSTER_DOMAIN": "k8s.example",
        "NODELOCALDNS_QUIET": "true",
    }
    p = parse([], env)
    assert p == NodeCacheParams(
        local_ips=(ip("169.254.20.10"), ip("fd00::10")),
        interface_name="nld0",
        setup_interface=False,
        setup_iptables=False,
        skip_teardown=True,
        sync_interval=30.0,
        upstream_svc="dns-up",
        base_corefile="/cfg/Corefile.base",
        corefile="/run/Corefile",
        kubedns_cm="/cfg/kube-dns",
        health_port=8099,
        metrics_listen_address="127.0.0.1:9354",
        pidfile="/run/nc.pid",
        reload_with_signal=True,
        dns_port=5353,
        rules_backend="nftables",
        cluster_domain="k8s.example",
        quiet=True,
    )


def test_flag_wins_over_env() -> None:
    env = {"NODELOCALDNS_LOCALIP": "169.254.20.1", "NODELOCALDNS_SETUPIPTABLES": "false"}
    p = parse(["-localip", "169.254.20.10", "-setupiptables=true"], env)
    assert p.local_ips == (ip("169.254.20.10"),)
    assert p.setup_iptables is True


def test_p_alias_wins_over_env_port() -> None:
    assert (
        parse(["-localip", "169.254.20.10", "-p", "1053"], {"NODELOCALDNS_DNS_PORT": "5353"}).dns_port == 1053
    )


def test_empty_env_counts_as_unset() -> None:
    p = parse(["-localip", "169.254.20.10"], {"NODELOCALDNS_PIDFILE": "", "NODELOCALDNS_HEALTH_PORT": ""})
    assert (p.pidfile, p.health_port) == (None, 8080)


def test_action_flags_are_not_read_from_env() -> None:
    # An image may well set NODELOCALDNS_VERSION to its version string; that must not trip parsing.
    p = parse(["-localip", "169.254.20.10"], {"NODELOCALDNS_VERSION": "0.1.0", "NODELOCALDNS_PLUGINS": "x"})
    assert (p.version, p.plugins) == (False, False)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"NODELOCALDNS_SKIPTEARDOWN": "yes"}, r"\$NODELOCALDNS_SKIPTEARDOWN"),
        ({"NODELOCALDNS_HEALTH_PORT": "http"}, r"\$NODELOCALDNS_HEALTH_PORT"),
        ({"NODELOCALDNS_SYNCINTERVAL": "soon"}, r"\$NODELOCALDNS_SYNCINTERVAL"),
    ],
)
def test_invalid_env_names_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse(["-localip", "169.254.20.10"], env)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["-nosuchflag"], "flag provided but not defined: -nosuchflag"),
        (["--setupebtables=true"], "flag provided but not defined: -setupebtables"),
        (["-initialdelay", "5"], "flag provided but not defined: -initialdelay"),
        (["-pidfile"], "flag needs an argument: -pidfile"),
        (["-skipteardown=yes"], "invalid boolean value 'yes' for -skipteardown"),
        (["---quiet"], "bad flag syntax: ---quiet"),
        (["-=x"], "bad flag syntax: -=x"),
        (["-health-port", "http"], "invalid value 'http' for flag -health-port"),
        (["-health-port", "0"], "-health-port"),
        (["-health-port", "65536"], "-health-port"),
        (["-dns.port", "-1"], "-dns.port"),
        (["-p", "dns"], "-p"),
        (["-rules-backend", "ebtables"], "invalid -rules-backend 'ebtables'"),
        (["-interfacename", "a-very-long-interface"], "invalid interface name"),
        (["-interfacename", ""], "invalid interface name"),
        (["-interfacename", "a/b"], "invalid interface name"),
        (["-upstreamsvc", ""], "invalid upstream service name"),
        (["-upstreamsvc", "$(rm)"], "invalid upstream service name"),
        (["-cluster-domain", "bad_domain"], "invalid cluster domain"),
        (["-metrics-listen-address", "9353"], "invalid metrics listen address"),
        (["-metrics-listen-address", "0.0.0.0:metrics"], "invalid metrics listen address"),
        (["-prometheus-listen-address", "9253"], "invalid prometheus listen address"),
        (["-basecorefile="], "-basecorefile must not be empty"),
        (["positional"], "extra command line arguments"),
    ],
)
def test_errors(argv: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse(["-localip", "169.254.20.10", *argv])


@pytest.mark.parametrize("flag", ["-h", "-help", "--help", "--h"])
def test_help(flag: str) -> None:
    with pytest.raises(HelpRequested) as info:
        parse(["-localip", "169.254.20.10", flag, "-nosuchflag"])
    assert info.value.usage.startswith("Usage of node-cache:")


def test_usage_lists_every_flag_with_default_and_env() -> None:
    text = usage("nodelocaldns")
    assert text.startswith("Usage of nodelocaldns:")
    for name in [
        "localip",
        "interfacename",
        "setupinterface",
        "setupiptables",
        "skipteardown",
        "syncinterval",
        "upstreamsvc",
        "conf",
        "basecorefile",
        "corefile",
        "kubednscm",
        "health-port",
        "metrics-listen-address",
        "prometheus-listen-address",
        "pidfile",
        "reloadwithsignal",
        "dns.port",
        "p",
        "rules-backend",
        "cluster-domain",
        "quiet",
        "version",
        "plugins",
    ]:
        assert f"\n  -{name}" in text
    assert "(default 'nodelocaldns')" in text
    assert "[env NODELOCALDNS_HEALTH_PORT]" in text
    assert "NODELOCALDNS_VERSION" not in text


def test_localip_dns_server_token_is_resolved_from_kube_dns_service_host() -> None:
    from nodelocaldns.node.flags import parse_args

    env = {"KUBE_DNS_SERVICE_HOST": "198.18.0.10"}
    p = parse_args(["-localip", "169.254.20.10,__PILLAR__DNS__SERVER__", "-conf", "/tmp/Corefile"], env=env)
    assert [str(ip) for ip in p.local_ips] == ["169.254.20.10", "198.18.0.10"]


def test_localip_dns_server_token_without_env_is_a_clear_error() -> None:
    import pytest

    from nodelocaldns.errors import ConfigError
    from nodelocaldns.node.flags import parse_args

    with pytest.raises(ConfigError, match="KUBE_DNS_SERVICE_HOST"):
        parse_args(["-localip", "169.254.20.10,__PILLAR__DNS__SERVER__", "-conf", "/tmp/Corefile"], env={})
