"""`render --discover` against a stand-in kubectl: a script on PATH that answers from a table.

No cluster runs here, so kubectl is the one external tool replaced; everything on our side
(argument building, JSON handling, the mode decision, errors) is the real code.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodelocaldns.tools import discover, render

FAKE_KUBECTL = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == ["--context"]:
    args = args[2:]
with open(os.environ["FAKE_KUBECTL_TABLE"]) as f:
    table = json.load(f)
answer = table.get(" ".join(args))
if isinstance(answer, dict):
    sys.stderr.write(answer["stderr"])
    sys.exit(answer["exit"])
if answer is not None:
    sys.stdout.write(answer)
elif "--ignore-not-found" not in args:
    sys.stderr.write("Error from server (NotFound): " + " ".join(args))
    sys.exit(1)
"""

SVC = "get service kube-dns -n kube-system -o jsonpath={.spec.clusterIP}"


def cm_query(name: str) -> str:
    return f"get configmap {name} -n kube-system -o json --ignore-not-found"


def configmap(name: str, data: dict[str, str]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})


def kube_proxy(mode_line: str, key: str = "config.conf", name: str = "kube-proxy") -> str:
    conf = (
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
        "detectLocalMode: ClusterCIDR\n"
        "ipvs:\n  scheduler: rr\n  mode: nested-not-the-proxy-mode\n"
        f"kind: KubeProxyConfiguration\n{mode_line}\n"
    )
    return configmap(name, {key: conf, "kubeconfig.conf": "apiVersion: v1\n"})


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install the stand-in; returns a function that sets its answers and one that reads its log."""
    script = tmp_path / "bin" / "kubectl"
    script.parent.mkdir()
    script.write_text(FAKE_KUBECTL)
    script.chmod(0o755)
    table, log = tmp_path / "table.json", tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_KUBECTL_TABLE", str(table))
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(log))

    class Fake:
        def answers(self, entries: dict[str, Any]) -> None:
            table.write_text(json.dumps(entries))

        def calls(self) -> list[list[str]]:
            return [json.loads(line) for line in log.read_text().splitlines()]

    return Fake()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = render.main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def docs(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


@pytest.mark.parametrize(
    ("answers", "mode"),
    [
        ({cm_query("kube-proxy"): kube_proxy('mode: "ipvs"')}, "ipvs"),
        ({cm_query("kube-proxy"): kube_proxy('mode: ""')}, "iptables"),
        ({cm_query("kube-proxy"): kube_proxy("mode: iptables  # set by kubeadm")}, "iptables"),
        ({cm_query("kube-proxy"): kube_proxy("mode: nftables")}, "iptables"),
        # EKS ships kube-proxy-config with the key `config`.
        ({cm_query("kube-proxy-config"): kube_proxy("mode: ipvs", "config", "kube-proxy-config")}, "ipvs"),
        (
            {
                cm_query("cilium-config"): configmap("cilium-config", {"kube-proxy-replacement": "true"}),
                cm_query("kube-proxy"): kube_proxy("mode: iptables"),
            },
            "cilium",
        ),
        (
            {
                cm_query("cilium-config"): configmap("cilium-config", {"kube-proxy-replacement": "false"}),
                cm_query("kube-proxy"): kube_proxy("mode: ipvs"),
            },
            "ipvs",
        ),
    ],
)
def test_discover_fills_what_the_cluster_says(fake_kubectl: Any, answers: dict[str, str], mode: str) -> None:
    fake_kubectl.answers({SVC: "10.100.0.10", **answers})
    status, out, err = run("--discover")
    assert status == 0, err
    assert "kube-dns ClusterIP 10.100.0.10" in err and f"using mode {mode}" in err
    status, explicit, _ = run("--mode", mode, "--dns-server", "10.100.0.10")
    assert docs(out) == docs(explicit)
    assert fake_kubectl.calls()[0] == SVC.split()


def test_explicit_values_win_and_skip_lookups(fake_kubectl: Any) -> None:
    fake_kubectl.answers({SVC: "10.100.0.10"})
    status, out, err = run("--discover", "--mode", "ipvs", "--context", "prod-eu")
    assert status == 0, err
    # Only the Service was asked for, with the context in front.
    assert fake_kubectl.calls() == [["--context", "prod-eu", *SVC.split()]]
    status, out2, _ = run("--discover", "--mode", "iptables", "--dns-server", "10.0.0.99")
    assert "10.0.0.99" in out2 and "10.100.0.10" not in out2


def test_discover_for_standalone_needs_only_the_service(fake_kubectl: Any) -> None:
    fake_kubectl.answers({SVC: "10.100.0.10"})
    status, out, err = run("--discover", "--standalone", "dns2", "--service-ip", "10.100.0.20")
    assert status == 0, err
    assert "forward . 10.100.0.10 {" in docs(out)[0]["data"]["Corefile"]
    assert len(fake_kubectl.calls()) == 1


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({}, "Error from server (NotFound)"),
        ({SVC: {"stderr": "Unable to connect to the server: dial tcp", "exit": 1}}, "Unable to connect"),
        ({SVC: "None"}, "has no ClusterIP"),
        ({SVC: "10.100.0.10"}, "neither a kube-proxy ConfigMap"),
        ({SVC: "10.100.0.10", cm_query("kube-proxy"): kube_proxy("mode: kernelspace")}, "not supported"),
        ({SVC: "10.100.0.10", cm_query("kube-proxy"): "not json"}, "not JSON"),
    ],
)
def test_discover_failures_exit_1_and_say_why(
    fake_kubectl: Any, answers: dict[str, Any], message: str
) -> None:
    fake_kubectl.answers(answers)
    status, out, err = run("--discover")
    assert (status, out) == (1, "")
    assert message in err


def test_missing_kubectl_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    status, _, err = run("--discover", "--kubectl", str(tmp_path / "no-such-kubectl"))
    assert status == 1 and "not found" in err


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ('mode: "ipvs"\n', "ipvs"),
        ("mode: 'nftables'\n", "nftables"),
        ("mode:\n", ""),
        ("kind: KubeProxyConfiguration\nipvs:\n  mode: ipvs\n", None),
        ("detectLocalMode: ClusterCIDR\n", None),
    ],
)
def test_proxy_mode_is_the_top_level_key(text: str, mode: str | None) -> None:
    assert discover.proxy_mode_from_config(text) == mode


REAL_KUBECTL = shutil.which("kubectl", path="/usr/local/bin:/usr/bin:/bin")


@pytest.mark.skipif(REAL_KUBECTL is None, reason="kubectl not installed (Debian: kubernetes-client)")
@pytest.mark.parametrize("standalone", [False, True])
def test_no_cluster_gives_kubectls_message_once_and_the_flags_to_use(
    tmp_path: Path, standalone: bool
) -> None:
    """The real kubectl, pointed at a closed loopback port: client-go logs its retries (klog lines)
    before kubectl's own message; only that message and the way on without a cluster are printed."""
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    extra = ["--standalone", "dns-x", "--service-ip", "10.0.0.20"] if standalone else []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", str(config))
        status, out, err = run("--discover", "--kubectl", str(REAL_KUBECTL), *extra)
    assert (status, out) == (1, "")
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"nodelocaldns render: error: {REAL_KUBECTL} get service kube-dns")
    assert "127.0.0.1:1" in lines[0] and "memcache.go" not in err
    hint = "hint: without a cluster, pass what --discover would find instead: --dns-server IP"
    assert lines[1] == (hint if standalone else f"{hint} and --mode iptables|ipvs|cilium")


def test_help_shows_the_percent_sign_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert render.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "[DURATION [PCT%]]" in text and "%%" not in text
