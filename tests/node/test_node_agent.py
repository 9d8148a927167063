"""The node-cache agent without privileges: command line, Corefile inputs, live changes, shutdown.

The agent runs as a real subprocess with ``-setupinterface=false -setupiptables=false`` (what the
Cilium manifest does), on loopback ports, in front of real unbound servers. Network setup itself is
covered as root in test_node_e2e.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from nodelocaldns.errors import ConfigError
from nodelocaldns.node import agent
from nodelocaldns.node.agent import (
    plugins_text,
    resolve_localip,
    version_text,
    watch_interval,
)
from nodelocaldns.node.configsync import Inputs, build_corefile, template_from_state, write_atomic
from nodelocaldns.node.flags import parse_args
from nodelocaldns.node.kubednscm import KubeDNSConfig, StubDomain
from nodelocaldns.node.watch import DirectoryState
from support.configmap import ConfigMapDir
from support.ports import free_port
from support.upstreams import CLUSTER_ZONES, UpstreamServer

# ---------------------------------------------------------------- command line


def test_localip_placeholder_is_filled_from_kube_dns_service_host() -> None:
    env = {"KUBE_DNS_SERVICE_HOST": "198.18.0.10", "NODELOCALDNS_LOCALIP": "__PILLAR__DNS__SERVER__"}
    argv = ["-localip", "169.254.20.10,__PILLAR__DNS__SERVER__", "-conf", "/x/__PILLAR__DNS__SERVER__"]
    out, new_env = resolve_localip(argv, env)
    assert out == ["-localip", "169.254.20.10,198.18.0.10", "-conf", "/x/__PILLAR__DNS__SERVER__"]
    assert new_env["NODELOCALDNS_LOCALIP"] == "198.18.0.10"
    assert resolve_localip(["--localip=__PILLAR__DNS__SERVER__"], env)[0] == ["--localip=198.18.0.10"]
    assert (
        resolve_localip(["--", "-localip", "__PILLAR__DNS__SERVER__"], env)[0][2] == "__PILLAR__DNS__SERVER__"
    )
    params = parse_args(out, new_env, path_exists=lambda _: False)
    assert [str(ip) for ip in params.local_ips] == ["169.254.20.10", "198.18.0.10"]
    with pytest.raises(ConfigError, match=r"\$KUBE_DNS_SERVICE_HOST is not set"):
        resolve_localip(["-localip", "169.254.20.10,__PILLAR__DNS__SERVER__"], {})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-bogus"], "flag provided but not defined: -bogus"),
        (["-conf", "/etc/Corefile"], "flag -localip is required: the comma-separated addresses"),
        (["-localip", "not-an-ip"], "invalid localip specified - 'not-an-ip'"),
        (["-localip", "169.254.20.10", "-syncinterval", "-5s"], "invalid value '-5s' for flag -syncinterval"),
        (["-localip", "169.254.20.10,__PILLAR__DNS__SERVER__"], "KUBE_DNS_SERVICE_HOST is not set"),
    ],
)
def test_flag_errors_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBE_DNS_SERVICE_HOST", raising=False)
    assert agent.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "node-cache -h" in err


def test_help_version_and_plugins_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent.main(["-h"]) == 0
    assert "-localip string" in capsys.readouterr().err
    assert agent.main(["-version"]) == 0
    assert capsys.readouterr().out.strip() == version_text()
    assert version_text().startswith("nodelocaldns-")
    assert agent.main(["-plugins"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == plugins_text()
    assert "  dns.forward" in out and "  dns.cache" in out and "kubernetes" not in out


def test_watch_interval_from_the_environment() -> None:
    assert watch_interval({}) == 10.0
    assert watch_interval({"NODELOCALDNS_WATCH_INTERVAL": "0.5"}) == 0.5
    assert watch_interval({"NODELOCALDNS_WATCH_INTERVAL": "2s"}) == 2.0
    for bad in ("0", "-1", "soon", "7200"):
        with pytest.raises(ConfigError, match="NODELOCALDNS_WATCH_INTERVAL"):
            watch_interval({"NODELOCALDNS_WATCH_INTERVAL": bad})


# ---------------------------------------------------------------- Corefile inputs


def test_template_from_directory_snapshot() -> None:
    state = DirectoryState.of("/etc/coredns", [("Corefile.base", b".:53 {\n}\n")])
    assert template_from_state(state, "/etc/coredns/Corefile.base") == ".:53 {\n}\n"
    with pytest.raises(
        ConfigError, match=r"no such file \(the directory /etc/coredns holds: Corefile.base\)"
    ):
        template_from_state(state, "/etc/coredns/Other")
    with pytest.raises(ConfigError, match="the directory /etc/coredns does not exist"):
        template_from_state(DirectoryState.absent("/etc/coredns"), "/etc/coredns/Corefile.base")
    with pytest.raises(ConfigError, match="it is a directory; -basecorefile names the template file itself"):
        template_from_state(DirectoryState.of("/etc", [], ["coredns"]), "/etc/coredns")
    with pytest.raises(ConfigError, match="not UTF-8"):
        bad = DirectoryState.of("/d", [("Corefile.base", b"\xff\xfe")])
        template_from_state(bad, "/d/Corefile.base")


def test_build_checks_the_rendered_corefile_with_the_server_parser() -> None:
    params = parse_args(["-localip", "127.0.0.1", "-conf", "/tmp/unused"], {}, path_exists=lambda _: False)
    env = {"KUBE_DNS_SERVICE_HOST": "198.18.0.10"}
    good = Inputs(
        "__PILLAR__DNS__DOMAIN__:53 {\n    bind __PILLAR__LOCAL__DNS__\n    forward . 198.18.0.20\n}\n"
    )
    result = build_corefile(good, params, env)
    assert result.text.startswith("cluster.local:53 {\n    bind 127.0.0.1\n")
    stubbed = Inputs(
        good.template, KubeDNSConfig(stub_domains=(StubDomain("corp.example", ("198.18.3.53",)),))
    )
    assert "corp.example:53 {" in build_corefile(stubbed, params, env).text
    # CoreDNS's kubernetes plugin renders fine as text but this server has no such plugin.
    unknown = Inputs(".:53 {\n    kubernetes cluster.local\n}\n")
    with pytest.raises(
        ConfigError, match=r"not valid: /etc/coredns/Corefile.base:2 \(directive 'kubernetes'\)"
    ):
        build_corefile(unknown, params, env)
    # $KUBE_DNS_UPSTREAM... missing: render refuses instead of writing "<nil>".
    with pytest.raises(ConfigError, match="KUBE_DNS_SERVICE_HOST is not set"):
        build_corefile(Inputs(".:53 {\n    forward . __PILLAR__CLUSTER__DNS__\n}\n"), params, {})


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "Corefile"
    target.write_text("old")
    write_atomic(str(target), "new text\n")
    assert target.read_text() == "new text\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Corefile"]  # no temporary left
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "missing-dir" / "Corefile"), "x")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    (readonly / "Corefile").write_text("keep")
    readonly.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root ignores directory permissions
            with pytest.raises(PermissionError):
                write_atomic(str(readonly / "Corefile"), "x")
            assert (readonly / "Corefile").read_text() == "keep"
    finally:
        readonly.chmod(0o700)


# ---------------------------------------------------------------- the agent as a process


TEMPLATE = """\
__PILLAR__DNS__DOMAIN__:{port} {{
    errors
    cache 30
    bind __PILLAR__LOCAL__DNS__
    forward . __PILLAR__CLUSTER__DNS__:{upstream}
    health __PILLAR__LOCAL__DNS__:{health}{lameduck}
    ready __PILLAR__LOCAL__DNS__:{ready}
    prometheus {prom_endpoint}
}}
"""
CLUSTER_NAME = "kubernetes.default.svc.cluster.local."


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    tmp: Path
    port: int
    ports: dict[str, int]
    template: ConfigMapDir
    kube_dns: ConfigMapDir

    @property
    def conf(self) -> Path:
        return self.tmp / "Corefile"

    @property
    def pidfile(self) -> Path:
        return self.tmp / "pid"

    def log(self) -> str:
        return (self.tmp / "agent.log").read_text(errors="replace")

    def query(self, name: str, tcp: bool = False) -> dns.message.Message:
        q = dns.message.make_query(name, "A")
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=2)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=2)

    def http(self, what: str, path: str) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.ports[what]}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def setup_errors(self, kind: str) -> float:
        text = self.http("metrics", "/metrics")[1]
        line = next(x for x in text.splitlines() if f'errortype="{kind}"' in x)
        return float(line.rsplit(" ", 1)[1])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def answers(msg: dns.message.Message) -> list[str]:
    return [rr.to_text() for rrset in msg.answer for rr in rrset]


@contextlib.contextmanager
def agent_process(
    tmp: Path,
    upstream: UpstreamServer,
    *extra: str,
    kube_dns: dict[str, str] | None = None,
    template: str | None = None,
    lameduck: str = "",
    env: dict[str, str] | None = None,
    wait: bool = True,
    kubespray: bool = False,
    prefix: tuple[str, ...] = (),
    conf: Path | None = None,
    prometheus_placeholder: bool = False,
) -> Iterator[Running]:
    """``kubespray``: its layout, a finished Corefile in the ConfigMap mount as ``-conf`` and no
    template (``-basecorefile`` names a file that is not there). ``conf``: ``-conf`` elsewhere,
    holding the finished Corefile before the agent starts."""
    port = free_port()
    ports = {name: free_port("tcp") for name in ("health", "ready", "prom", "metrics")}
    text = template or TEMPLATE.format(
        port=port,
        upstream=upstream.port,
        health=ports["health"],
        ready=ports["ready"],
        prom_endpoint="__PROMETHEUS__ENDPOINT__" if prometheus_placeholder else f"127.0.0.1:{ports['prom']}",
        lameduck=f" {{\n        lameduck {lameduck}\n    }}" if lameduck else "",
    )
    finished = text
    for token, value in (
        ("DNS__DOMAIN", "cluster.local"),
        ("LOCAL__DNS", "127.0.0.1"),
        ("CLUSTER__DNS", "127.0.0.1"),
    ):
        finished = finished.replace(f"__PILLAR__{token}__", value)
    if kubespray:
        tmpl = ConfigMapDir(tmp / "coredns", {"Corefile": finished})
        conf = tmp / "coredns" / "Corefile"
    else:
        tmpl = ConfigMapDir(tmp / "coredns", {"Corefile.base": text})
        if conf is None:
            conf = tmp / "Corefile"
        else:
            conf.write_text(finished)
    kdns = ConfigMapDir(tmp / "kube-dns", kube_dns or {})
    argv = [
        *prefix, sys.executable, "-m", "nodelocaldns", "node-cache",
        "-localip", "127.0.0.1",
        "-conf", str(conf),
        "-basecorefile", str(tmp / "coredns" / "Corefile.base"),
        "-kubednscm", str(tmp / "kube-dns"),
        "-upstreamsvc", "kube-dns-upstream",
        "-pidfile", str(tmp / "pid"),
        "-setupinterface=false", "-setupiptables=false",
        "-dns.port", str(port),
        "-metrics-listen-address", f"127.0.0.1:{ports['metrics']}",
        "-prometheus-listen-address", f"127.0.0.1:{ports['prom']}",
        *extra,
    ]  # fmt: skip
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NODELOCALDNS_")}
    full_env.update(KUBE_DNS_UPSTREAM_SERVICE_HOST="127.0.0.1", NODELOCALDNS_WATCH_INTERVAL="0.1")
    full_env.update(env or {})
    with open(tmp / "agent.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=full_env)
    running = Running(proc, tmp, port, ports, tmpl, kdns)
    try:
        if wait:

            def up() -> bool:
                assert proc.poll() is None, f"agent exited {proc.returncode}:\n{running.log()}"
                return running.pidfile.exists()

            wait_until(up, 20, "the pidfile")
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def cluster_dns(make_unbound: Callable[..., UpstreamServer]) -> UpstreamServer:
    return make_unbound(CLUSTER_ZONES)


@pytest.fixture
def stub_dns(make_unbound: Callable[..., UpstreamServer]) -> UpstreamServer:
    return make_unbound({"corp.example.": ["db.corp.example. 60 IN A 198.18.7.7"]})


def test_live_changes_keep_the_last_good_corefile(
    tmp_path: Path, cluster_dns: UpstreamServer, stub_dns: UpstreamServer
) -> None:
    with agent_process(tmp_path, cluster_dns) as run:
        # Up means listening: the pidfile is written after every listener is up.
        assert answers(run.query(CLUSTER_NAME)) == ["198.18.0.1"]
        assert run.http("ready", "/ready")[0] == 200
        assert int(run.pidfile.read_text()) == run.proc.pid
        assert run.query("db.corp.example.").rcode() == dns.rcode.REFUSED  # no such zone yet
        assert run.setup_errors("configmap") == 0

        stub = {"stubDomains": json.dumps({"corp.example": [stub_dns.address]})}
        run.kube_dns.write(stub)
        wait_until(lambda: answers(run.query("db.corp.example.")) == ["198.18.7.7"], 5, "the stub domain")
        assert f"corp.example:{run.port} {{" in run.conf.read_text()
        good = run.conf.read_text()

        # A broken ConfigMap: counted, logged, the running config and -conf stay.
        run.kube_dns.write({"stubDomains": "{not json"})
        wait_until(lambda: run.setup_errors("configmap") == 1, 5, "the configmap error")
        assert "Failed to sync kube-dns config directory" in run.log()
        # A template the server would refuse: the same.
        template = run.template.path / "Corefile.base"
        broken = template.read_text().replace("    errors\n", "    errors\n    kubernetes cluster.local\n")
        run.template.write({"Corefile.base": broken})
        wait_until(lambda: run.setup_errors("configmap") == 2, 5, "the template error")
        assert "Corefile template change not applied, keeping the last good Corefile" in run.log()
        assert run.conf.read_text() == good
        assert answers(run.query("db.corp.example.", tcp=True)) == ["198.18.7.7"]
        assert answers(run.query(CLUSTER_NAME)) == ["198.18.0.1"]

        # Fixing both applies the fixed template with the last good ConfigMap... then the new one.
        run.template.write({"Corefile.base": broken.replace("    kubernetes cluster.local\n", "    log\n")})
        wait_until(lambda: "    log\n" in run.conf.read_text(), 5, "the fixed template")
        assert f"corp.example:{run.port} {{" in run.conf.read_text()
        run.kube_dns.write({"stubDomains": "{}"})
        wait_until(lambda: "corp.example" not in run.conf.read_text(), 5, "the stub domain to go")
        assert run.query("db.corp.example.").rcode() == dns.rcode.REFUSED
        assert run.setup_errors("configmap") == 2

        assert run.stop() == 0
    assert not run.pidfile.exists()
    log = run.log()
    assert log.count("[INFO] Reloading complete") == 3
    assert "[INFO] SIGTERM: Shutting down servers then terminating" in log


def test_reload_with_signal_and_a_failed_reload_restores_the_file(
    tmp_path: Path, cluster_dns: UpstreamServer, stub_dns: UpstreamServer
) -> None:
    with agent_process(tmp_path, cluster_dns, "-reloadwithsignal") as run:
        run.kube_dns.write({"stubDomains": json.dumps({"corp.example": [stub_dns.address]})})
        wait_until(lambda: run.query("db.corp.example.").rcode() == dns.rcode.NOERROR, 5, "the stub domain")
        assert "[INFO] SIGUSR1: Reloading" in run.log()
        good = run.conf.read_text()

        # A block on a port someone else holds exclusively: valid text, but the bind fails.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
            held.bind(("127.0.0.1", 0))
            taken = held.getsockname()[1]
            extra = f"busy.example:{taken} {{\n    bind 127.0.0.1\n    forward . {stub_dns.address}\n}}\n"
            template = (run.template.path / "Corefile.base").read_text()
            run.template.write({"Corefile.base": template + extra})
            wait_until(lambda: run.setup_errors("configmap") == 1, 5, "the failed reload")
        assert "The new Corefile could not be applied; keeping the last good Corefile" in run.log()
        assert run.conf.read_text() == good
        assert answers(run.query("db.corp.example.")) == ["198.18.7.7"]
        assert run.stop() == 0


def test_sigterm_reports_not_ready_and_answers_through_lameduck_and_a_second_signal_forces_exit(
    tmp_path: Path, cluster_dns: UpstreamServer
) -> None:
    with agent_process(tmp_path, cluster_dns, lameduck="3s") as run:
        assert run.http("ready", "/ready")[0] == 200
        run.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: run.http("ready", "/ready")[0] == 503, 2, "not ready")
        assert answers(run.query(CLUSTER_NAME)) == ["198.18.0.1"]  # still answering in lameduck
        assert run.http("health", "/health")[0] == 200
        assert run.proc.poll() is None
        started = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(5) == 1
        assert time.monotonic() - started < 2  # did not sit out the lameduck
    assert "Second SIGINT: exiting now" in run.log()


def test_prometheus_endpoint_placeholder_gets_the_flags_address(
    tmp_path: Path, cluster_dns: UpstreamServer
) -> None:
    with agent_process(tmp_path, cluster_dns, prometheus_placeholder=True) as run:
        assert answers(run.query(CLUSTER_NAME)) == ["198.18.0.1"]
        status, body = run.http("prom", "/metrics")
        assert status == 200 and "coredns_dns_requests_total" in body
    assert f"prometheus 127.0.0.1:{run.ports['prom']}\n" in (tmp_path / "Corefile").read_text()


def test_clean_sigterm_after_lameduck_exits_0(tmp_path: Path, cluster_dns: UpstreamServer) -> None:
    with agent_process(tmp_path, cluster_dns, lameduck="1s") as run:
        started = time.monotonic()
        assert run.stop() == 0
        assert 1.0 <= time.monotonic() - started < 8
    assert "Going into lameduck mode for 1s" in run.log()


def test_a_broken_configmap_at_startup_serves_the_template(
    tmp_path: Path, cluster_dns: UpstreamServer
) -> None:
    with agent_process(tmp_path, cluster_dns, kube_dns={"upstreamNameservers": '["not-an-ip"]'}) as run:
        assert answers(run.query(CLUSTER_NAME)) == ["198.18.0.1"]
        assert run.setup_errors("configmap") == 1
        assert "Failed to sync kube-dns config directory" in run.log()
        assert run.stop() == 0


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown plugin", "the Corefile rendered from the template is not valid: "),
        ("no template", "No Corefile to serve: the template "),
        ("no upstream service", "$KUBE_DNS_UPSTREAM_SERVICE_HOST is not set"),
        ("port taken", "Failed to start the DNS server on 127.0.0.1:"),
    ],
)
def test_startup_without_a_good_corefile_exits_1(
    tmp_path: Path, cluster_dns: UpstreamServer, case: str, message: str
) -> None:
    env: dict[str, str] = {}
    template = None
    extra: tuple[str, ...] = ()
    with contextlib.ExitStack() as stack:
        if case == "unknown plugin":
            template = ".:53 {\n    kubernetes cluster.local\n}\n"
        elif case == "no template":
            extra = ("-basecorefile", str(tmp_path / "nowhere" / "Corefile.base"))
        elif case == "no upstream service":
            env = {"KUBE_DNS_UPSTREAM_SERVICE_HOST": ""}
        else:
            held = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            held.bind(("127.0.0.1", 0))
            held.listen()
            port = held.getsockname()[1]
            template = f".:{port} {{\n    bind 127.0.0.1\n    forward . {cluster_dns.address}\n}}\n"
        with agent_process(tmp_path, cluster_dns, *extra, template=template, env=env, wait=False) as run:
            assert run.proc.wait(20) == 1
            log = run.log()
            assert message in log, log
            assert not run.pidfile.exists()
            assert "Traceback" not in log
            if case == "port taken":
                assert (
                    f"tcp 127.0.0.1:{port} is held by another process (find it with `ss -ltnp 'sport = :{port}'`)"
                    in log
                )


def test_kubespray_layout_serves_conf_as_it_is(tmp_path: Path, cluster_dns: UpstreamServer) -> None:
    """No template, -conf a finished Corefile in the ConfigMap mount: node-cache counts a configmap
    error and CoreDNS serves -conf unchanged. So does the agent, until a template shows up."""
    with agent_process(tmp_path, cluster_dns, kubespray=True) as run:
        conf = run.template.path / "Corefile"
        served = conf.read_text()
        assert answers(run.query(CLUSTER_NAME)) == ["198.18.0.1"]
        assert run.http("ready", "/ready")[0] == 200
        assert run.setup_errors("configmap") == 1
        base = run.template.path / "Corefile.base"
        log = run.log()
        assert (
            f"[ERROR] Failed to read node-cache coreFile {base} - no such file"
            f" (the directory {run.template.path} holds: Corefile)" in log
        )
        assert f"[WARNING] Serving {conf} as it is: the template {base} cannot be read" in log
        assert conf.read_text() == served

        # kubelet updates the ConfigMap, still without a template: counted again, as node-cache does.
        run.template.write({"Corefile": served + "\n"})
        wait_until(lambda: run.setup_errors("configmap") == 2, 5, "the second configmap error")
        assert answers(run.query(CLUSTER_NAME, tcp=True)) == ["198.18.0.1"]

        # A template appears: it is rendered, written to -conf and applied.
        template = served.replace("    errors\n", "    errors\n    log\n")
        # (Corefile as it is now: a scan between the ..data swap and the new key's symlink sees no change.)
        run.template.write({"Corefile": served + "\n", "Corefile.base": template})
        wait_until(lambda: "    log\n" in conf.read_text(), 5, "the rendered template")
        wait_until(lambda: "[INFO] Reloading complete" in run.log(), 5, "the live reload")
        assert answers(run.query(CLUSTER_NAME)) == ["198.18.0.1"]
        assert run.setup_errors("configmap") == 2
        assert run.stop() == 0


@pytest.fixture
def nobody_tmp() -> Iterator[tuple[Path, tuple[str, ...]]]:
    """A directory the agent can use when it runs as an unprivileged user, and the command prefix
    that makes it one. Root reads files whatever their mode, so as root the agent runs as nobody."""
    tmp = Path(tempfile.mkdtemp(prefix="nld-agent-"))
    tmp.chmod(0o777)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv to drop root")
        prefix = (setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    try:
        yield tmp, prefix
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_an_unreadable_template_or_a_directory_is_a_clear_error(
    nobody_tmp: tuple[Path, tuple[str, ...]], cluster_dns: UpstreamServer
) -> None:
    tmp, prefix = nobody_tmp
    unreadable = ConfigMapDir(tmp / "tpl", {"Corefile.base": ".:53 {\n}\n"})
    base = unreadable.path / "Corefile.base"
    os.chmod(base.resolve(), 0o000)
    with agent_process(tmp / "a", cluster_dns, "-basecorefile", str(base), prefix=prefix, wait=False) as run:
        assert run.proc.wait(20) == 1
        log = run.log()
        assert f"[ERROR] Failed to read node-cache coreFile {base} - Permission denied: " in log, log
        assert "(the agent runs as uid " in log and "check the file's mode" in log
        assert f"[ERROR] No Corefile to serve: the template {base} cannot be read" in log
        assert not any(line.startswith("[Errno") for line in log.splitlines())

    with agent_process(
        tmp / "b", cluster_dns, "-basecorefile", str(tmp / "tpl"), prefix=prefix, wait=False
    ) as run:
        assert run.proc.wait(20) == 1
        log = run.log()
        assert (
            f"[ERROR] Failed to read node-cache coreFile {tmp / 'tpl'} - it is a directory; -basecorefile"
            f" names the template file itself, e.g. {tmp / 'tpl'}/Corefile.base" in log
        ), log
        assert "no such file" not in log


def test_an_unwritable_conf_is_served_as_it_is(
    nobody_tmp: tuple[Path, tuple[str, ...]], cluster_dns: UpstreamServer
) -> None:
    """node-cache logs `Failed to write config file` and CoreDNS loads -conf as it is."""
    tmp, prefix = nobody_tmp
    readonly = tmp / "ro"
    readonly.mkdir(mode=0o755)
    conf = readonly / "Corefile"
    workdir = tmp / "run"
    workdir.mkdir()
    workdir.chmod(0o777)  # the pidfile
    with agent_process(workdir, cluster_dns, prefix=prefix, conf=conf, wait=False) as run:
        wait_until(lambda: run.pidfile.exists() or run.proc.poll() is not None, 20, "start-up")
        log = run.log()
        assert run.proc.poll() is None, log
        assert f"[ERROR] Failed to write config file {conf} - err Permission denied: " in log, log
        assert f"[WARNING] Serving {conf} as it is: {conf} cannot be written" in log
        assert answers(run.query(CLUSTER_NAME)) == ["198.18.0.1"]
        assert run.setup_errors("configmap") == 1
        assert run.stop() == 0


def test_an_unexpected_error_tears_down_and_exits_1(
    tmp_path: Path,
    cluster_dns: UpstreamServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The safety net: a bug after start-up must not leave a half-running agent behind."""
    import asyncio

    from nodelocaldns.node.lifecycle import AgentOptions, NodeAgent

    port = free_port()
    (tmp_path / "coredns").mkdir()
    (tmp_path / "coredns" / "Corefile.base").write_text(
        f".:{port} {{\n    bind 127.0.0.1\n    forward . {cluster_dns.address}\n}}\n"
    )
    argv = [
        "-localip", "127.0.0.1", "-conf", str(tmp_path / "Corefile"), "-pidfile", str(tmp_path / "pid"),
        "-basecorefile", str(tmp_path / "coredns" / "Corefile.base"), "-kubednscm", str(tmp_path / "none"),
        "-setupinterface=false", "-setupiptables=false", "-metrics-listen-address", f"127.0.0.1:{free_port('tcp')}",
    ]  # fmt: skip
    params = parse_args(argv, {})

    def boom(self: NodeAgent) -> None:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(NodeAgent, "_start_watchers", boom)
    node_agent = NodeAgent(params, {}, AgentOptions(watch_interval=0.1))
    with caplog.at_level(logging.INFO, logger="nodelocaldns.node"):
        assert asyncio.run(node_agent.run()) == 1
    assert "Unexpected error, tearing down" in caplog.text and "injected bug" in caplog.text
    assert not (tmp_path / "pid").exists()  # written before the bug, removed by the teardown
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the listener is gone
