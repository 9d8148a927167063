"""Corefile template rendering (node-cache's updateCorefile) and the kube-dns ConfigMap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nodelocaldns.core.hostport import split_host_port
from nodelocaldns.errors import ConfigError
from nodelocaldns.node.flags import NodeCacheParams, parse_args
from nodelocaldns.node.kubednscm import (
    KubeDNSConfig,
    StubDomain,
    load_kubedns_dir,
    parse_kubedns_data,
)
from nodelocaldns.node.render import (
    NO_TCP_BLOCK_WARNING,
    render_corefile,
    service_env_name,
    stub_domain_blocks,
)
from support.addon import ADDON_COREFILE

# What the DaemonSet ends up serving with the addon's args and kube-dns-upstream at 198.18.0.20.
ADDON_RENDERED = """\
cluster.local:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind 169.254.20.10 198.18.0.10
    forward . 198.18.0.20 {
            force_tcp
    }
    prometheus :9253
    health 169.254.20.10:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 198.18.0.10
    forward . 198.18.0.20 {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 198.18.0.10
    forward . 198.18.0.20 {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 198.18.0.10
    forward . /etc/resolv.conf
    prometheus :9253
    }
"""

# node-cache's own test template (cmd/node-cache/app/cache_app_test.go): the `.` block uses force_tcp.
TCP_UPSTREAM_TEMPLATE = """
cluster.local:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__UPSTREAM__SERVERS__ {
            force_tcp
    }
    prometheus :9253
    }
"""

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
UPSTREAM_ENV = {"KUBE_DNS_UPSTREAM_SERVICE_HOST": "198.18.0.20"}


def params(argv: list[str] | None = None, *extra: str) -> NodeCacheParams:
    return parse_args(
        [*(argv if argv is not None else DAEMONSET_ARGS), *extra], {}, path_exists=lambda _: False
    )


def no_files(_: str) -> bool:
    return False


def test_addon_template_with_daemonset_args() -> None:
    result = render_corefile(ADDON_COREFILE, params(), env=UPSTREAM_ENV)
    assert result.text == ADDON_RENDERED
    assert result.stub_domains == 0
    assert result.upstream_servers == "/etc/resolv.conf"
    assert result.warnings == ()
    assert (
        result.summary == "Updated Corefile with 0 custom stubdomains and upstream servers /etc/resolv.conf"
    )


def test_addon_iptables_sed_recipe_gives_the_same_corefile() -> None:
    # s/__PILLAR__LOCAL__DNS__/$localdns/g; s/__PILLAR__DNS__DOMAIN__/$domain/g;
    # s/__PILLAR__DNS__SERVER__/$kubedns/g
    template = ADDON_COREFILE.replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
    template = template.replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
    template = template.replace("__PILLAR__DNS__SERVER__", "198.18.0.10")
    result = render_corefile(template, params(), env=UPSTREAM_ENV)
    assert result.text == ADDON_RENDERED


def test_no_sed_needed_even_with_kube_dns_env_present() -> None:
    # kubelet injects $KUBE_DNS_SERVICE_HOST into every pod; the kube-dns IP is already a local IP here,
    # so it must not be bound twice.
    env = {**UPSTREAM_ENV, "KUBE_DNS_SERVICE_HOST": "198.18.0.10"}
    assert render_corefile(ADDON_COREFILE, params(), env=env).text == ADDON_RENDERED


def test_addon_ipvs_sed_recipe() -> None:
    # s/__PILLAR__LOCAL__DNS__/$localdns/g; s/__PILLAR__DNS__DOMAIN__/$domain/g;
    # s/,__PILLAR__DNS__SERVER__//g; s/__PILLAR__CLUSTER__DNS__/$kubedns/g
    template = ADDON_COREFILE.replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
    template = template.replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
    template = template.replace(",__PILLAR__DNS__SERVER__", "")
    template = template.replace("__PILLAR__CLUSTER__DNS__", "198.18.0.10")
    # In IPVS mode the cache listens on the link-local IP only; the kube-dns IP (in the env, as always)
    # belongs to kube-ipvs0 and must not be bound, exactly as node-cache blanks the leftover token.
    env = {"KUBE_DNS_SERVICE_HOST": "198.18.0.10"}
    result = render_corefile(
        template, params(["-localip", "169.254.20.10", "-conf", "/etc/Corefile"]), env=env
    )
    expected = ADDON_RENDERED.replace("bind 169.254.20.10 198.18.0.10", "bind 169.254.20.10").replace(
        "forward . 198.18.0.20", "forward . 198.18.0.10"
    )
    assert result.text == expected
    assert "198.18.0.10" not in "".join(line for line in result.text.splitlines() if "bind" in line)


def test_dns_server_token_filled_from_env_when_it_is_a_local_ip() -> None:
    template = "cluster.local:53 {\n    bind 169.254.20.10 __PILLAR__DNS__SERVER__\n}\n"
    env = {"KUBE_DNS_SERVICE_HOST": "198.18.0.10"}
    assert render_corefile(template, params(), env=env).text == (
        "cluster.local:53 {\n    bind 169.254.20.10 198.18.0.10\n}\n"
    )
    # Not a local IP: blanked like node-cache (binding it would fail: the address is not on the node).
    local_only = params(["-localip", "169.254.20.10"])
    assert (
        render_corefile(template, local_only, env=env).text
        == "cluster.local:53 {\n    bind 169.254.20.10\n}\n"
    )
    # Not set at all: blanked.
    assert (
        render_corefile(template, local_only, env={}).text
        == "cluster.local:53 {\n    bind 169.254.20.10\n}\n"
    )


def test_dns_server_env_not_an_ip_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"\$KUBE_DNS_SERVICE_HOST='kube-dns' is not an IP address"):
        render_corefile(ADDON_COREFILE, params(), env={**UPSTREAM_ENV, "KUBE_DNS_SERVICE_HOST": "kube-dns"})


def test_ipv6_only() -> None:
    p = params(
        ["-localip", "fd00::10,fd00::a", "-conf", "/etc/Corefile", "-upstreamsvc", "kube-dns-upstream"]
    )
    result = render_corefile(ADDON_COREFILE, p, env={"KUBE_DNS_UPSTREAM_SERVICE_HOST": "fd00::20"})
    expected = (
        ADDON_RENDERED.replace("bind 169.254.20.10 198.18.0.10", "bind fd00::10 fd00::a")
        .replace("forward . 198.18.0.20", "forward . fd00::20")
        .replace("health 169.254.20.10:8080", "health [fd00::10]:8080")
    )
    assert result.text == expected


@pytest.mark.parametrize(
    ("localip", "bind", "health"),
    [
        ("169.254.20.10,fd00::10", "bind 169.254.20.10 fd00::10", "health 169.254.20.10:8080"),
        ("fd00::10,169.254.20.10", "bind fd00::10 169.254.20.10", "health [fd00::10]:8080"),
    ],
)
def test_dual_stack(localip: str, bind: str, health: str) -> None:
    p = params(["-localip", localip, "-upstreamsvc", "kube-dns-upstream"])
    result = render_corefile(ADDON_COREFILE, p, env=UPSTREAM_ENV)
    expected = ADDON_RENDERED.replace("bind 169.254.20.10 198.18.0.10", bind).replace(
        "health 169.254.20.10:8080", health
    )
    assert result.text == expected


@pytest.mark.parametrize(
    ("localip", "line"),
    [
        ("fd00::10", "health [fd00::10]:8080"),
        ("169.254.20.10", "health 169.254.20.10:8080"),
        ("169.254.20.10,fd00::10", "health 169.254.20.10:8080"),
    ],
)
def test_bracketed_placeholder(localip: str, line: str) -> None:
    # The kubernetes.io docs tell IPv6 users to write [__PILLAR__LOCAL__DNS__]:8080.
    template = ".:53 {\n    health [__PILLAR__LOCAL__DNS__]:8080\n}\n"
    assert (
        render_corefile(template, params(["-localip", localip]), env={}).text == f".:53 {{\n    {line}\n}}\n"
    )


def test_cluster_dns_ipv6_in_host_port_context() -> None:
    template = ".:53 {\n    forward . __PILLAR__CLUSTER__DNS__:5353 __PILLAR__CLUSTER__DNS__\n}\n"
    result = render_corefile(template, params(), env={"KUBE_DNS_UPSTREAM_SERVICE_HOST": "fd00::20"})
    assert result.text == ".:53 {\n    forward . [fd00::20]:5353 fd00::20\n}\n"


def test_cluster_domain_flag() -> None:
    result = render_corefile(
        ADDON_COREFILE, params(None, "-cluster-domain", "corp.example"), env=UPSTREAM_ENV
    )
    assert result.text.startswith("corp.example:53 {\n")
    assert "cluster.local" not in result.text


@pytest.mark.parametrize(
    ("service", "variable"),
    [
        ("kube-dns", "KUBE_DNS_SERVICE_HOST"),
        ("kube-dns-upstream", "KUBE_DNS_UPSTREAM_SERVICE_HOST"),
        ("coredns", "COREDNS_SERVICE_HOST"),
    ],
)
def test_service_env_name(service: str, variable: str) -> None:
    assert service_env_name(service) == variable


def test_upstreamsvc_selects_the_env_variable() -> None:
    p = params(["-localip", "169.254.20.10", "-upstreamsvc", "my-dns"])
    env = {"MY_DNS_SERVICE_HOST": "198.18.0.30", "KUBE_DNS_UPSTREAM_SERVICE_HOST": "198.18.0.20"}
    assert "forward . 198.18.0.30 {" in render_corefile(ADDON_COREFILE, p, env=env).text


def test_missing_cluster_dns_env_is_an_error_not_nil() -> None:
    with pytest.raises(ConfigError, match=r"\$KUBE_DNS_UPSTREAM_SERVICE_HOST is not set") as info:
        render_corefile(ADDON_COREFILE, params(), env={"KUBE_DNS_SERVICE_HOST": "198.18.0.10"})
    assert "kube-dns-upstream" in str(info.value)


def test_cluster_dns_env_not_an_ip_is_an_error() -> None:
    with pytest.raises(ConfigError, match="is not an IP address"):
        render_corefile(ADDON_COREFILE, params(), env={"KUBE_DNS_UPSTREAM_SERVICE_HOST": "10.0.0"})


def test_cluster_dns_env_only_needed_when_the_token_is_used() -> None:
    template = ADDON_COREFILE.replace("__PILLAR__CLUSTER__DNS__", "198.18.0.10")
    assert "forward . 198.18.0.10 {" in render_corefile(template, params(), env={}).text


def test_os_environ_is_the_default_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", "198.18.0.21")
    monkeypatch.delenv("KUBE_DNS_SERVICE_HOST", raising=False)
    assert "forward . 198.18.0.21 {" in render_corefile(ADDON_COREFILE, params()).text


def test_stub_domains() -> None:
    config = parse_kubedns_data(
        {
            "stubDomains": json.dumps(
                {"zeta.example": ["198.18.1.1"], "acme.local": ["198.18.0.53", "198.18.0.54:5353"]}
            )
        }
    )
    result = render_corefile(ADDON_COREFILE, params(), config, env=UPSTREAM_ENV)
    stubs = """
acme.local:53 {
    errors
    cache 30
    bind 169.254.20.10 198.18.0.10
    forward . 198.18.0.53 198.18.0.54:5353
}

zeta.example:53 {
    errors
    cache 30
    bind 169.254.20.10 198.18.0.10
    forward . 198.18.1.1
}
"""
    assert result.text == ADDON_RENDERED + stubs
    assert result.stub_domains == 2
    assert (
        result.summary == "Updated Corefile with 2 custom stubdomains and upstream servers /etc/resolv.conf"
    )


def test_stub_domain_uses_dns_port_and_ipv6_bind() -> None:
    config = KubeDNSConfig(stub_domains=(StubDomain("acme.local", ("[fd00::53]:5353",)),))
    p = params(["-localip", "fd00::10", "-dns.port", "1053"])
    assert stub_domain_blocks(config, p.local_ips, p.dns_port) == (
        "\nacme.local:1053 {\n    errors\n    cache 30\n    bind fd00::10\n    forward . [fd00::53]:5353\n}\n"
    )


def test_upstream_nameservers_replace_the_tcp_block() -> None:
    config = parse_kubedns_data({"upstreamNameservers": '["198.18.0.53", "198.18.0.54:5353"]'})
    result = render_corefile(TCP_UPSTREAM_TEMPLATE, params(), config, env=UPSTREAM_ENV)
    expected = """
cluster.local:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind 169.254.20.10 198.18.0.10
    forward . 198.18.0.20 {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 198.18.0.10
    forward . 198.18.0.53 198.18.0.54:5353
    prometheus :9253
    }
"""
    assert result.text == expected
    assert result.warnings == ()
    assert result.upstream_servers == "198.18.0.53 198.18.0.54:5353"
    assert result.summary.endswith("and upstream servers 198.18.0.53 198.18.0.54:5353")


def test_tcp_template_without_upstream_nameservers_keeps_force_tcp() -> None:
    result = render_corefile(TCP_UPSTREAM_TEMPLATE, params(), env=UPSTREAM_ENV)
    assert "    forward . /etc/resolv.conf {\n            force_tcp\n    }\n" in result.text


def test_upstream_nameservers_on_the_udp_addon_template_warns() -> None:
    config = KubeDNSConfig(upstream_nameservers=("198.18.0.53",))
    result = render_corefile(ADDON_COREFILE, params(), config, env=UPSTREAM_ENV)
    assert result.text == ADDON_RENDERED.replace("forward . /etc/resolv.conf", "forward . 198.18.0.53")
    assert result.warnings == (NO_TCP_BLOCK_WARNING,)


def test_differently_indented_tcp_block_is_not_swapped() -> None:
    # node-cache only swaps the exact text; anything else keeps force_tcp and gets the servers substituted.
    template = ".:53 {\n\tforward . __PILLAR__UPSTREAM__SERVERS__ {\n\t\tforce_tcp\n\t}\n}\n"
    config = KubeDNSConfig(upstream_nameservers=("198.18.0.53",))
    result = render_corefile(template, params(), config, env={})
    assert result.text == ".:53 {\n\tforward . 198.18.0.53 {\n\t\tforce_tcp\n\t}\n}\n"
    assert result.warnings == (NO_TCP_BLOCK_WARNING,)


@pytest.mark.parametrize(
    "servers",
    [
        ["198.18.0.53"],
        ["198.18.0.53:5353"],
        ["fd00::53"],
        ["[fd00::53]:5353"],
        ["fe80::1%eth0"],
        ["dns://198.18.0.53"],
        ["tls://198.18.0.53"],
        ["tls://198.18.0.53:853"],
    ],
)
def test_valid_forward_servers(servers: list[str]) -> None:
    config = KubeDNSConfig(stub_domains=(StubDomain("acme.local", tuple(servers)),))
    result = render_corefile("", params(), config, env={}, file_exists=no_files)
    assert f"forward . {' '.join(servers)}\n" in result.text


@pytest.mark.parametrize(
    ("servers", "match"),
    [
        (["grpc://198.18.0.53"], "unsupported transport grpc"),
        (["https://198.18.0.53"], "unsupported transport https"),
        (["quic://198.18.0.53"], "unsupported transport quic"),
        (["unix:///run/dns.sock"], "unsupported transport unix"),
        (["dns://"], "invalid address"),
        (["ns.acme.local"], "not an IP address or file"),
        (["ns.acme.local:53"], "not an IP address or file"),
        (["198.18.0.53:0"], "invalid port"),
        (["198.18.0.53:65536"], "invalid port"),
        (["198.18.0.53:"], "invalid port"),
        ([], "has no nameservers"),
    ],
)
def test_invalid_stub_servers(servers: list[str], match: str) -> None:
    config = KubeDNSConfig(stub_domains=(StubDomain("acme.local", tuple(servers)),))
    with pytest.raises(ConfigError, match=match):
        render_corefile(ADDON_COREFILE, params(), config, env=UPSTREAM_ENV, file_exists=no_files)


def test_invalid_upstream_server_names_the_list() -> None:
    config = KubeDNSConfig(upstream_nameservers=("198.18.0.53", "https://198.18.0.54"))
    with pytest.raises(
        ConfigError, match=r"invalid upstream nameservers \['198.18.0.53', 'https://198.18.0.54'\]"
    ):
        render_corefile(ADDON_COREFILE, params(), config, env=UPSTREAM_ENV)


def test_resolv_conf_style_file_as_nameserver(tmp_path: Path) -> None:
    resolv = tmp_path / "stub-resolv.conf"
    resolv.write_text("nameserver 198.18.0.53\n")
    config = KubeDNSConfig(stub_domains=(StubDomain("acme.local", (str(resolv),)),))
    # The real filesystem decides (default predicate): present is fine, absent is an error.
    assert f"forward . {resolv}\n" in render_corefile("", params(), config, env={}).text
    resolv.unlink()
    with pytest.raises(ConfigError, match="not an IP address or file"):
        render_corefile("", params(), config, env={})


def test_unknown_placeholder_is_reported() -> None:
    template = ".:53 {\n    prometheus :9253\n    log __PILLAR__LOG__FORMAT__ __PROMETHEUS__OTHER__\n}\n"
    result = render_corefile(template, params(), env={})
    assert result.text == template
    assert result.warnings == (
        "unknown placeholders left in the Corefile: __PILLAR__LOG__FORMAT__, __PROMETHEUS__OTHER__",
    )


@pytest.mark.parametrize(
    ("extra", "endpoint"),
    [((), ":9253"), (("-prometheus-listen-address", "127.0.0.1:9300"), "127.0.0.1:9300")],
)
def test_prometheus_endpoint_placeholder(extra: tuple[str, ...], endpoint: str) -> None:
    # node-local-dns master (cache_app_test.go): every occurrence, in the template only.
    template = ".:53 {\n    prometheus __PROMETHEUS__ENDPOINT__\n}\nx:53 {\n    prometheus __PROMETHEUS__ENDPOINT__\n}\n"
    result = render_corefile(template, params(None, *extra), env=UPSTREAM_ENV)
    assert result.text == template.replace("__PROMETHEUS__ENDPOINT__", endpoint)
    assert result.warnings == ()


def test_template_without_tokens_is_untouched() -> None:
    template = ".:53 {\n  bind  0.0.0.0   0.0.0.0\n    forward . 198.18.0.53\n}\n"
    assert render_corefile(template, params(), env={}).text == template


def test_bind_dedupe_keeps_an_except_block() -> None:
    template = (
        ".:53 {\n    bind __PILLAR__LOCAL__DNS__ 169.254.20.10 {\n        except 198.18.0.10\n    }\n}\n"
    )
    result = render_corefile(template, params(), env={})
    assert (
        result.text == ".:53 {\n    bind 169.254.20.10 198.18.0.10 {\n        except 198.18.0.10\n    }\n}\n"
    )
    one_line = ".:53 {\n    bind __PILLAR__LOCAL__DNS__ { except 198.18.0.10 }\n}\n"
    assert render_corefile(one_line, params(), env={}).text == (
        ".:53 {\n    bind 169.254.20.10 198.18.0.10 { except 198.18.0.10 }\n}\n"
    )


# --- kube-dns ConfigMap --------------------------------------------------------------------------------


def test_parse_kubedns_data() -> None:
    config = parse_kubedns_data(
        {
            "stubDomains": '{"zeta.example": ["198.18.1.1"], "acme.local": ["198.18.0.53", "ns.acme.local"]}',
            "upstreamNameservers": '["198.18.0.53", "[fd00::53]:5353", "fd00::54"]',
            "federations": "myfed=example.com, other = other.example",
            "unrelated": "ignored, like kube-dns",
        }
    )
    assert config == KubeDNSConfig(
        stub_domains=(
            StubDomain("acme.local", ("198.18.0.53", "ns.acme.local")),
            StubDomain("zeta.example", ("198.18.1.1",)),
        ),
        upstream_nameservers=("198.18.0.53", "[fd00::53]:5353", "fd00::54"),
        federations=(("myfed", "example.com"), ("other", "other.example")),
    )


def test_null_values_mean_empty() -> None:
    assert parse_kubedns_data({"stubDomains": "null", "upstreamNameservers": "null", "federations": ""}) == (
        KubeDNSConfig()
    )
    assert parse_kubedns_data({"stubDomains": '{"acme.local": null}'}).stub_domains == (
        StubDomain("acme.local", ()),
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"stubDomains": "{not json"}, "/cm/stubDomains: invalid JSON"),
        ({"stubDomains": ""}, "/cm/stubDomains: invalid JSON"),
        ({"stubDomains": '["acme.local"]'}, "/cm/stubDomains: expected a JSON object"),
        ({"stubDomains": '{"acme.local": "198.18.0.53"}'}, "/cm/stubDomains: nameservers of 'acme.local'"),
        ({"stubDomains": '{"acme.local": [53]}'}, "/cm/stubDomains: nameservers of 'acme.local'"),
        (
            {"stubDomains": '{"Acme.Local": ["198.18.0.53"]}'},
            "/cm/stubDomains: invalid domain name: 'Acme.Local'",
        ),
        ({"stubDomains": '{"acme.local.": ["198.18.0.53"]}'}, "invalid domain name: 'acme.local.'"),
        ({"stubDomains": '{"acme.local": ["bad_ns!"]}'}, "/cm/stubDomains: invalid nameserver: 'bad_ns!'"),
        ({"stubDomains": '{"acme.local": ["198.18.0.53:70000"]}'}, "invalid nameserver: '198.18.0.53:70000'"),
        ({"stubDomains": '{"acme.local": ["198.18.0.53:dns"]}'}, "invalid nameserver"),
        ({"upstreamNameservers": '"198.18.0.53"'}, "/cm/upstreamNameservers: expected a JSON list"),
        ({"upstreamNameservers": "[1, 2]"}, "/cm/upstreamNameservers: expected a JSON list"),
        (
            {"upstreamNameservers": '["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"]'},
            "/cm/upstreamNameservers: upstreamNameserver cannot have more than three entries",
        ),
        ({"upstreamNameservers": '["198.18.0.53:0"]'}, "bad port number"),
        ({"upstreamNameservers": '["dns.example.com"]'}, "/cm/upstreamNameservers: invalid nameserver"),
        ({"upstreamNameservers": '["dns.example.com:53"]'}, "bad IP address"),
        ({"federations": "myfed"}, "/cm/federations: invalid format, must be key=value"),
        ({"federations": "My_Fed=example.com"}, "not a valid federation name"),
        ({"federations": "myfed=Example.com"}, "not a valid domain name"),
        ({"stubDomains": b"\xff\xfe"}, "/cm/stubDomains: non-utf8 data"),
    ],
)
def test_invalid_kubedns_data(data: dict[str, str | bytes], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_kubedns_data(data, source="/cm")


def test_kube_dns_valid_but_not_renderable() -> None:
    # kube-dns accepts hostnames for stub nameservers, forward does not: the render step refuses it.
    config = parse_kubedns_data({"stubDomains": '{"acme.local": ["ns.acme.local"]}'})
    with pytest.raises(ConfigError, match="for the stub domain acme.local"):
        render_corefile(ADDON_COREFILE, params(), config, env=UPSTREAM_ENV, file_exists=no_files)


@pytest.mark.parametrize(
    ("hostport", "expected"),
    [
        ("198.18.0.53:53", ("198.18.0.53", "53")),
        ("[fd00::53]:5353", ("fd00::53", "5353")),
        ("198.18.0.53:", ("198.18.0.53", "")),
        (":53", ("", "53")),
        ("ns.acme.local:53", ("ns.acme.local", "53")),
    ],
)
def test_split_host_port(hostport: str, expected: tuple[str, str]) -> None:
    assert split_host_port(hostport) == expected


@pytest.mark.parametrize(
    ("hostport", "why"),
    [
        ("198.18.0.53", "missing port"),
        ("fd00::53", "too many colons"),
        ("[fd00::53]", "missing port"),
        ("[fd00::53", "missing ']'"),
        ("[fd00::53]x:53", "missing port"),
        ("[fd00::53]:[53", "unexpected '\\['"),
        ("a]:53", "unexpected '\\]'"),
    ],
)
def test_split_host_port_errors(hostport: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        split_host_port(hostport)


def write_configmap_dir(path: Path, data: dict[str, str]) -> None:
    """kubelet's ConfigMap volume layout: data in a hidden timestamped dir, visible keys are symlinks."""
    payload = path / "..2024_01_01_00_00_00.000000001"
    payload.mkdir(parents=True)
    for key, value in data.items():
        (payload / key).write_text(value)
    os.symlink(payload.name, path / "..data")
    for key in data:
        os.symlink(f"..data/{key}", path / key)


def test_load_kubedns_dir_and_render(tmp_path: Path) -> None:
    cm = tmp_path / "kube-dns"
    write_configmap_dir(
        cm,
        {
            "stubDomains": '{"acme.local": ["198.18.0.53"]}',
            "upstreamNameservers": '["198.18.0.54", "198.18.0.55"]',
        },
    )
    config = load_kubedns_dir(str(cm))
    result = render_corefile(TCP_UPSTREAM_TEMPLATE, params(), config, env=UPSTREAM_ENV)
    assert (
        result.summary
        == "Updated Corefile with 1 custom stubdomains and upstream servers 198.18.0.54 198.18.0.55"
    )
    assert "    forward . 198.18.0.54 198.18.0.55\n    prometheus :9253\n" in result.text
    assert result.text.endswith(
        "\nacme.local:53 {\n    errors\n    cache 30\n    bind 169.254.20.10 198.18.0.10\n"
        "    forward . 198.18.0.53\n}\n"
    )


def test_load_kubedns_dir_missing_or_empty_means_defaults(tmp_path: Path) -> None:
    assert load_kubedns_dir(str(tmp_path / "absent")) == KubeDNSConfig()
    assert load_kubedns_dir(str(tmp_path)) == KubeDNSConfig()


def test_load_kubedns_dir_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "upstreamNameservers").write_text("[oops")
    with pytest.raises(ConfigError, match=f"{tmp_path}/upstreamNameservers: invalid JSON"):
        load_kubedns_dir(str(tmp_path))


def test_rendered_corefile_parses() -> None:
    from nodelocaldns.corefile.parser import parse_corefile

    config = parse_kubedns_data({"stubDomains": '{"acme.local": ["198.18.0.53"]}'})
    p = params(["-localip", "fd00::10,169.254.20.10", "-upstreamsvc", "kube-dns-upstream"])
    blocks = parse_corefile(render_corefile(ADDON_COREFILE, p, config, env=UPSTREAM_ENV).text, "Corefile")
    args = {(b.keys[0].original, d.name): d.args for b in blocks for d in b.directives}
    assert args[("cluster.local:53", "health")] == ("[fd00::10]:8080",)
    assert args[("acme.local:53", "bind")] == ("fd00::10", "169.254.20.10")
    assert args[(".:53", "forward")] == (".", "/etc/resolv.conf")
