"""Every manifest, Corefile and `nodelocaldns render` command in docs/ is checked by machine.

* ```yaml blocks: Kubernetes objects validate strictly (kubernetes-validate, oldest and newest
  schema), CiliumLocalRedirectPolicy against its CRD's required fields; the few node config files
  (KubeletConfiguration) against the keys the docs may use.
* ```corefile blocks: the agent's renderer fills any placeholders, then the Corefile parser and
  every plugin's setup must accept the result.
* ```sh blocks: `nodelocaldns render …` parses with render's own argument parser and, unless it
  needs a cluster (--discover), renders; every `kubectl …` command is accepted by the real kubectl
  (against a closed loopback port), with its files, piped manifests and names of our objects checked.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from nodelocaldns.corefile import parse_corefile
from nodelocaldns.node import flags as node_flags
from nodelocaldns.node import render as node_render
from nodelocaldns.server.config import plan
from nodelocaldns.tools import checks, doctor, render, top
from support.upstreams import closed_port

REPO = Path(__file__).resolve().parents[2]
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "deploy" / "README.md"]
K8S_VERSIONS = ("1.25.0", "1.37.0")
ENV = {"KUBE_DNS_SERVICE_HOST": "10.96.0.10", "KUBE_DNS_UPSTREAM_SERVICE_HOST": "10.96.0.11"}
# Node configuration files (not API objects) the docs show, and the keys they may use.
CONFIG_FILES = {
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"): {"clusterDNS", "clusterDomain", "resolvConf"},
}
_FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(lang: str) -> list[Block]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in _FENCE.finditer(text):
            if m.group(2) == lang:
                indent = len(m.group(1))
                body = "".join(line[indent:] + "\n" for line in m.group(3).splitlines())
                found.append(Block(path, text.count("\n", 0, m.start()) + 1, lang, body))
    return found


def test_docs_exist_and_have_examples() -> None:
    names = {p.name for p in DOCS}
    assert {"install.md", "upgrade.md", "troubleshooting.md", "configuration.md"} <= names
    assert len(blocks("yaml")) >= 5 and len(blocks("corefile")) >= 3 and len(blocks("sh")) >= 5


def test_fence_extraction_sees_indented_blocks() -> None:
    """Blocks nested in list items must not slip past the checks."""
    text = "1. step\n\n   ```yaml\n   kind: X\n   ```\n"
    (m,) = _FENCE.finditer(text)
    assert m.group(2) == "yaml" and m.group(3).strip() == "kind: X"


def _check_config_file(doc: dict[str, Any], where: str) -> None:
    allowed = CONFIG_FILES[(doc["apiVersion"], doc["kind"])]
    extra = set(doc) - {"apiVersion", "kind"} - allowed
    assert not extra, f"{where}: keys {sorted(extra)} are not checked here; extend CONFIG_FILES"
    for ip in doc.get("clusterDNS", []):
        ipaddress.ip_address(ip)


@pytest.mark.parametrize("block", blocks("yaml"), ids=str)
def test_yaml_examples_are_valid(block: Block) -> None:
    docs = [d for d in yaml.safe_load_all(block.text) if d is not None]
    assert docs, f"{block}: empty"
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CONFIG_FILES:
            _check_config_file(doc, str(block))
        elif doc.get("kind") == "CiliumLocalRedirectPolicy":
            # Only the CRD's own requirements: the backend pods live in another example.
            problems = [p for p in checks.check_local_redirect_policy(doc, []) if "selects no pod" not in p]
            assert problems == [], f"{block}: {problems}"
        else:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("block", blocks("corefile"), ids=str)
def test_corefile_examples_parse_and_set_up(block: Block) -> None:
    text = block.text
    if "__PILLAR__" in text:
        params = node_flags.parse_args(
            ["-localip", "169.254.20.10,10.96.0.10", "-conf", "/etc/Corefile"],
            env=ENV,
            path_exists=lambda _: False,
        )
        text = node_render.render_corefile(text, params, env=ENV, file_exists=lambda _: True).text
        assert "__PILLAR__" not in text, f"{block}: unknown placeholder"
    p = plan(parse_corefile(text, str(block.path)))
    assert p.blocks, f"{block}: no server blocks"


def _commands(block: Block) -> list[list[str]]:
    """Each command line of a sh block as argv, continuation lines joined, pipes split."""
    joined = block.text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        argv: list[str] = []
        for token in list(lexer) + ["|"]:
            if token in ("|", "||", "&&", ";", ">", ">>", "<"):
                if argv:
                    out.append(argv)
                argv = []
                if token in (">", ">>", "<"):
                    break
            else:
                argv.append(token)
    return out


def sh_commands(program: str) -> list[tuple[str, list[str]]]:
    return [
        (f"{b}", argv)
        for b in blocks("sh")
        for argv in _commands(b)
        if argv[: len(program.split())] == program.split()
    ]


@pytest.mark.parametrize(
    ("where", "argv"), sh_commands("nodelocaldns render"), ids=lambda v: v if isinstance(v, str) else ""
)
def test_render_commands_in_docs_work(where: str, argv: list[str]) -> None:
    args = argv[2:]
    parsed = render.build_parser().parse_args(args)
    if parsed.discover:
        return  # needs a cluster; tests/tools/test_render_discover.py covers the path with a stand-in kubectl
    out, err = io.StringIO(), io.StringIO()
    assert render.main(args, out=out, err=err) == 0, f"{where}: {err.getvalue()}"
    assert list(yaml.safe_load_all(out.getvalue()))


# -- kubectl commands ------------------------------------------------------------------------------
# Every kubectl command in the docs is run by the real kubectl against a kubeconfig whose API server is
# a closed loopback port: kubectl parses the command, its flags, its kustomization or its piped
# manifests first, so reaching "connection refused" means it accepted all of that. Names of our own
# objects (the DaemonSet, its container, its labels, its namespace) are checked against what
# `nodelocaldns render` produces; a command inside a pod (`exec ... -- nodelocaldns doctor`) against
# our own parser. Objects that are not ours are listed in FOREIGN, so a new kind of command fails here
# until someone decides how to check it.

OURS = "node-local-dns"
# Objects the docs act on that this project does not ship, and why the docs name them.
FOREIGN = {
    "aws-node": "the EKS VPC CNI DaemonSet (security groups for pods)",
    "dnsutils": "the DNS test pod from the Kubernetes DNS debugging guide",
    "deployment": "the reader's own workloads (rollout restart after the VPC CNI change)",
}
CRD_KINDS = {"CiliumLocalRedirectPolicy", "ServiceMonitor"}
_PLACEHOLDER = re.compile(r"<[^<>|\n]*>")


def _pipelines(block: Block) -> list[tuple[list[list[str]], str | None]]:
    """Each pipeline of a sh block: its commands as argv, and the file its output is written to."""
    text = _PLACEHOLDER.sub("NAME", block.text.replace("\\\n", " "))
    out: list[tuple[list[list[str]], str | None]] = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        pipe: list[list[str]] = []
        argv: list[str] = []
        target: str | None = None
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token in (">", ">>"):
                target = tokens[i + 1]
                i += 2
                continue
            if token in ("|", "||", "&&", ";"):
                if argv:
                    pipe.append(argv)
                argv = []
                if token != "|" and pipe:
                    out.append((pipe, target))
                    pipe, target = [], None
            else:
                argv.append(token)
            i += 1
        if argv:
            pipe.append(argv)
        if pipe:
            out.append((pipe, target))
    return out


def kubectl_commands() -> list[tuple[str, list[str], list[str] | None]]:
    """(where, kubectl argv, the command piped into it or None) for every kubectl command in the docs."""
    found = []
    for b in blocks("sh"):
        for pipe, _target in _pipelines(b):
            for i, argv in enumerate(pipe):
                if argv[0] == "kubectl":
                    found.append((str(b), argv, pipe[i - 1] if i else None))
    return found


def _render_offline(argv: list[str]) -> str:
    """What ``nodelocaldns render ARGS`` prints, with the cluster look-up (--discover) left out."""
    args, skip = [], False
    for a in argv[2:]:
        if skip:
            skip = False
        elif a in ("--context", "--kubectl"):
            skip = True
        elif a != "--discover":
            args.append(a)
    out, err = io.StringIO(), io.StringIO()
    assert render.main(args, out=out, err=err) == 0, err.getvalue()
    return out.getvalue()


def _written_files() -> dict[str, str]:
    """Files the docs' own commands write (``nodelocaldns render ... > FILE``), rendered offline."""
    files: dict[str, str] = {}
    for b in blocks("sh"):
        for pipe, target in _pipelines(b):
            if target and pipe[-1][:2] == ["nodelocaldns", "render"]:
                files.setdefault(target, _render_offline(pipe[-1]))
    return files


_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: closed, cluster: {server: "https://127.0.0.1:%d"}}]
users: [{name: u, user: {token: not-a-secret}}]
contexts: [{name: default, context: {cluster: closed, user: u}}, {name: prod-eu, context: {cluster: closed, user: u}}]
current-context: default
"""


def _kubectl_accepts(argv: list[str], stdin: str, cwd: Path, port: int) -> tuple[bool, str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "KUBECONFIG": str(cwd / "kubeconfig")}
    p = subprocess.run(argv, input=stdin, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    refused = f"127.0.0.1:{port}" in p.stderr and "refused" in p.stderr
    return p.returncode != 0 and refused, p.stderr[-2000:]


def _our_objects() -> dict[str, Any]:
    """The DaemonSet `nodelocaldns render` ships (the docs' commands name it, its containers, labels)."""
    docs: list[dict[str, Any]] = [
        d for d in yaml.safe_load_all(_render_offline(["nodelocaldns", "render"])) if d
    ]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    return ds


def _flag(argv: list[str], *names: str) -> str | None:
    for a, b in zip(argv, argv[1:], strict=False):
        if a in names:
            return b
    return None


def _check_names(argv: list[str], ds: dict[str, Any], where: str) -> bool:
    """Check every name of ours in ``argv``; True if the command is about our DaemonSet at all."""
    ns, labels = ds["metadata"]["namespace"], ds["spec"]["template"]["metadata"]["labels"]
    containers = {c["name"] for c in ds["spec"]["template"]["spec"]["containers"]}
    # POD is the docs' placeholder for one of our pods (they list them with -l k8s-app=node-local-dns).
    refs = [a for a in argv if a.split("/")[-1] in (OURS, "POD") or a == f"k8s-app={OURS}"]
    if not refs:
        return False
    assert _flag(argv, "-n", "--namespace") == ns, f"{where}: {OURS} lives in namespace {ns}"
    for a in refs:
        if "/" in a:
            assert a.split("/")[0] in ("ds", "daemonset", "daemonsets"), f"{where}: {a} is not a DaemonSet"
    selector = _flag(argv, "-l", "--selector")
    if selector is not None:
        k, _, v = selector.partition("=")
        assert labels.get(k) == v, f"{where}: {selector} selects no pod of the DaemonSet {labels}"
    c = _flag(argv, "-c", "--container")
    assert c is None or c in containers, f"{where}: no container {c!r} in {sorted(containers)}"
    if "image" in argv[:6] and "set" in argv:
        for a in argv[argv.index("image") + 2 :]:
            assert a.split("=", 1)[0] in containers, f"{where}: set image names container {a!r}"
    return True


def _check_in_pod_command(argv: list[str], where: str) -> None:
    """``kubectl exec ... -- nodelocaldns SUB ARGS``: our parser must accept ARGS."""
    if "--" not in argv:
        return
    inner = argv[argv.index("--") + 1 :]
    if inner[:1] != ["nodelocaldns"]:
        return
    tools = {"doctor": doctor, "top": top, "render": render}
    assert inner[1] in tools, f"{where}: no tool {inner[1]!r} to run in the pod"
    try:
        tools[inner[1]].build_parser().parse_args(inner[2:])
    except SystemExit as e:
        raise AssertionError(f"{where}: {' '.join(inner)} does not parse") from e


@pytest.fixture(scope="module")
def kubectl_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A working directory with the docs' files, ``deploy/`` and a kubeconfig for a closed port."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed to check the docs' kubectl commands (scripts/ensure-packages)")
    d = tmp_path_factory.mktemp("kubectl")
    (d / "deploy").symlink_to(REPO / "deploy")
    for name, text in _written_files().items():
        (d / name).write_text(text)
    dead = closed_port()
    (d / "kubeconfig").write_text(_KUBECONFIG % dead.port)
    yield d, dead.port


@pytest.mark.parametrize(
    ("where", "argv", "fed_by"), kubectl_commands(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_kubectl_commands_in_docs_are_checked(
    kubectl_dir: tuple[Path, int], where: str, argv: list[str], fed_by: list[str] | None
) -> None:
    cwd, port = kubectl_dir
    stdin = ""
    if "-" in argv and _flag(argv, "-f", "--filename") == "-":
        assert fed_by is not None and fed_by[:2] == ["nodelocaldns", "render"], (
            f"{where}: kubectl reads manifests from a pipe that is not `nodelocaldns render`"
        )
        stdin = _render_offline(fed_by)
        objs = [d for d in yaml.safe_load_all(stdin) if d]
        for doc in objs:
            if doc["kind"] not in CRD_KINDS:  # kubernetes-validate has no schema; lint covers these
                kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        assert checks.lint(objs) == [], f"{where}: the piped manifests do not fit together"
    k = _flag(argv, "-k", "--kustomize")
    if k is not None:
        assert (REPO / k / "kustomization.yaml").is_file(), f"{where}: {k} is not a kustomization"
    f = _flag(argv, "-f", "--filename")
    if f not in (None, "-"):
        assert (cwd / f).is_file(), f"{where}: {f} is not written by any command in the docs"
    _check_in_pod_command(argv, where)
    ours = _check_names(argv, _our_objects(), where)
    if not ours and k is None and f is None:
        named = [a for a in argv if a.split("/")[0] in FOREIGN]
        assert named, f"{where}: {' '.join(argv)} is not checked here; add a check or a FOREIGN entry"
    ok, stderr = _kubectl_accepts(argv, stdin, cwd, port)
    assert ok, f"{where}: kubectl rejects {' '.join(argv)}:\n{stderr}"


def test_kubectl_check_can_fail(kubectl_dir: tuple[Path, int]) -> None:
    """A misspelt flag, a wrong container and a wrong namespace are caught."""
    cwd, port = kubectl_dir
    assert (
        _kubectl_accepts(["kubectl", "-n", "kube-system", "logs", "-l", "a=b", "--tial", "5"], "", cwd, port)[
            0
        ]
        is False
    )
    assert _kubectl_accepts(
        ["kubectl", "-n", "kube-system", "logs", "-l", "a=b", "--tail", "5"], "", cwd, port
    )[0]
    ds = _our_objects()
    with pytest.raises(AssertionError, match="no container"):
        _check_names(["kubectl", "-n", "kube-system", "logs", f"ds/{OURS}", "-c", "coredns"], ds, "x")
    with pytest.raises(AssertionError, match="namespace"):
        _check_names(["kubectl", "-n", "default", "rollout", "status", f"daemonset/{OURS}"], ds, "x")
    with pytest.raises(AssertionError, match="does not parse"):
        _check_in_pod_command(["kubectl", "exec", "POD", "--", "nodelocaldns", "doctor", "--bogus"], "x")
    b = Block(
        Path("x.md"), 1, "sh", "nodelocaldns render --mode ipvs > out.yaml && kubectl apply -f out.yaml\n"
    )
    assert _pipelines(b) == [
        ([["nodelocaldns", "render", "--mode", "ipvs"]], "out.yaml"),
        ([["kubectl", "apply", "-f", "out.yaml"]], None),
    ]


def test_relative_links_resolve() -> None:
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).is_file(), f"{path.name}: broken link {target}"


def test_the_extractors_can_fail() -> None:
    """The sh splitter finds commands after pipes and stops at redirections."""
    b = Block(
        Path("x.md"), 1, "sh", "nodelocaldns render --mode ipvs | kubectl apply -f - # note\nfoo > out.yaml\n"
    )
    assert _commands(b) == [
        ["nodelocaldns", "render", "--mode", "ipvs"],
        ["kubectl", "apply", "-f", "-"],
        ["foo"],
    ]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"bogus": 1}}, "1.37.0", strict=True
        )


README = REPO / "README.md"


def test_docs_stay_inside_the_repository() -> None:
    """Docs state facts themselves: no machine paths, no notes outside the repository (``../shared``)."""
    others = [REPO / "src" / "nodelocaldns" / "native" / "README.md", *sorted((REPO / "bench").rglob("*.md"))]
    for path in [*DOCS, README, *others]:
        text = path.read_text()
        for needle in ("/work/", "seed article", "§", "../shared", "shared/reference"):
            assert needle not in text, f"{path.name}: cites {needle!r}"


def test_render_docs_do_not_claim_the_same_text_as_kustomize() -> None:
    # render and kustomize give the same objects (tests/deploy/test_deploy_kustomize.py), not the same bytes.
    for path in DOCS:
        assert not re.search(r"exactly\s+what\s+`kubectl kustomize", path.read_text()), path.name


def test_readme_image_steps_match_the_build() -> None:
    text = README.read_text()
    build = (REPO / "image" / "build.sh").read_text()
    out = re.search(r"^OUT=\$\{OUT:-\$REPO/([^}]+)\}$", build, re.M)
    assert out, "image/build.sh sets OUT"
    archive = out.group(1)
    assert re.search(r"^image:", (REPO / "Makefile").read_text(), re.M) and "make image" in text
    assert "IMAGE_TAG" in text and "${IMAGE_TAG:-}" in build
    named = re.findall(r"oci-archive:(\S+)", text) + re.findall(r"load -i (\S+)", text)
    assert named and set(named) == {archive}, named
    # The README's kustomize snippet names the image the manifests use, and its render command works.
    (snippet,) = [m.group(3) for m in _FENCE.finditer(text) if m.group(2) == "yaml"]
    (entry,) = yaml.safe_load(snippet)["images"]
    assert f"{entry['name']}:" in render.build_parser().get_default("image")
    for argv in (shlex.split(line) for line in re.findall(r"`(nodelocaldns render --image [^`]+)`", text)):
        assert render.main(argv[2:], out=io.StringIO(), err=io.StringIO()) == 0, argv
